"""meterline analytics benchmark on a generated 10M-event store (issue 3, "Speed").

    .venv/bin/python bench/metering.py [--events N] [--only sqlite|postgresql] [--queries 200]
                                       [--max-seconds S] [--seed N] [--keep] [--reuse]
                                       [--no-report]

1. Generate, deterministically from --seed, one account (made with `meterline migrate` and
   `meterline keys create --new-account`), 1,000 customers, 5 meters (sum, sum, count, last,
   sum; each with dimension_payload_keys ["model"]) and N meter events (default 10,000,000) over
   the 30 days before today 00:00 UTC, in arrival (timestamp) order. One customer, the whale,
   sends 30% of the events; the other 999 follow a Zipf law (weight 1/rank). A `model`
   dimension takes 4 values. Customers and meters are written with meterline's own SQLAlchemy
   tables; events go straight into `meter_events` with the columns and encodings meterline
   writes (SQLite: executemany in transactions of 1M rows; PostgreSQL: COPY), with the
   secondary indexes dropped during the load and rebuilt after it, in bulk; then
   `meterline rollups rebuild` builds the usage rollups from them (timed).
2. Start `meterline serve --workers 2` on that database and time, through HTTP (httpx, one
   keep-alive connection, sequential requests), the seed-shape analytics query
   GET /v1/billing/analytics/meter_usage for one meter, grouped by model: 30 days of daily
   buckets in America/New_York for a typical (median-sized) customer and for the whale, and
   hourly buckets in Asia/Kolkata for the whale. Each series gets one warm-up query, then
   --queries timed ones, or fewer when --max-seconds runs out (at least 10).
3. Run the same aggregation with DuckDB in-process over the same raw events (a DuckDB table
   built from the generator's output, in the same arrival order), and check that every
   meterline answer has the same buckets and exact values as DuckDB's.
4. Read the peak RSS (VmHWM) of the server's worker processes after the queries.
5. Print the results and write them into docs/PERFORMANCE.md, between the
   `<!-- bench:metering -->` markers after `<!-- bench:other -->`.

Generated files live in bench/out/metering/ (not committed); the SQLite file, the PostgreSQL
database `meterline_metering` and the DuckDB file are removed at the end unless --keep.
--reuse takes kept data of the same --events and --seed instead of generating it again.
The exit status is 1 when a phase failed or an answer disagreed with DuckDB; a missed target
is reported, not failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import random
import shlex
import sqlite3
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402
import httpx  # noqa: E402
from rich.progress import (  # noqa: E402
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from bench.run import (  # noqa: E402
    PhaseError,
    Server,
    descendants,
    free_port,
    loadavg,
    meterline_cli,
    recreate_postgres_database,
    run_logged,
)

OUT = ROOT / "bench" / "out" / "metering"
REPORT = ROOT / "docs" / "PERFORMANCE.md"
OTHER_MARKER = "<!-- bench:other -->"
BEGIN_MARKER = "<!-- bench:metering -->"
END_MARKER = "<!-- /bench:metering -->"

PG_DATABASE = "meterline_metering"
PG_URL = os.environ.get(
    "BENCH_METERING_POSTGRES_URL", f"postgresql://postgres@127.0.0.1:5432/{PG_DATABASE}"
)

DAY = 86_400
SPAN_DAYS = 30
CUSTOMERS = 1000
WHALE_SHARE = 0.30
ZIPF_S = 1.0
CHUNK = 100_000
SQLITE_TXN = 1_000_000
MODELS = ["model-large", "model-medium", "model-small", "model-embed"]
MODEL_WEIGHTS = [0.15, 0.35, 0.40, 0.10]
# (display name, event_name, formula, value text from a uniform r in [0, 1))
METERS: list[tuple[str, str, str, Any]] = [
    ("GPU seconds", "gpu_seconds", "sum", lambda r: _milli(1 + int(r * r * 60_000))),
    ("LLM tokens", "llm_tokens", "sum", lambda r: str(1 + int(r * r * 8_000))),
    ("API requests", "api_requests", "count", lambda r: "1"),
    ("Active seats", "active_seats", "last", lambda r: str(1 + int(r * 50))),
    ("Storage GB-hours", "storage_gb_hours", "sum", lambda r: _centi(1 + int(r * 10_000))),
]
QUERY_METER = 0  # gpu_seconds: a sum of 3-decimal values, so exactness is checked too

# Targets of issue 3 (p50, ms) and the series measured.
SERIES = [
    # (key, label, who, window, time zone, target p50 ms)
    (
        "typical-day",
        "typical customer, day, America/New_York",
        "typical",
        "day",
        "America/New_York",
        20.0,
    ),
    ("whale-day", "whale, day, America/New_York", "whale", "day", "America/New_York", 50.0),
    ("whale-hour", "whale, hour, Asia/Kolkata", "whale", "hour", "Asia/Kolkata", None),
]
RSS_TARGET_MB = 300.0
MIN_QUERIES = 10


def _milli(n: int) -> str:
    return f"{n // 1000}.{n % 1000:03d}"


def _centi(n: int) -> str:
    return f"{n // 100}.{n % 100:02d}"


# ------------------------------------------------------------------------ data set


@dataclass
class DataSet:
    """What the generator made: enough to query it and to describe it."""

    events: int
    seed: int
    start: int
    end: int
    account_id: str = ""
    api_key: str = ""
    customers: list[str] = field(default_factory=list)
    meters: list[str] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)  # events per customer (all meters)
    whale: int = 0  # customer index
    load: dict[str, float] = field(default_factory=dict)

    @property
    def typical(self) -> int:
        """The median-sized customer (by events), the whale excluded."""
        order = sorted(
            (c for c in range(len(self.counts)) if c != self.whale), key=self.counts.__getitem__
        )
        return order[len(order) // 2]


class Generator:
    """The events, in arrival order, chunk by chunk; the same seed gives the same events."""

    def __init__(self, events: int, seed: int, start: int, end: int) -> None:
        self.n = events
        self.seed = seed
        self.start = start
        self.span = end - start
        rng = random.Random(seed)
        ranks = list(range(1, CUSTOMERS))
        rng.shuffle(ranks)  # customer index -> Zipf rank (so ids and sizes do not line up)
        self.whale = rng.randrange(CUSTOMERS)
        weights = []
        zipf_total = sum(1 / r**ZIPF_S for r in range(1, CUSTOMERS))
        it = iter(ranks)
        for c in range(CUSTOMERS):
            if c == self.whale:
                weights.append(WHALE_SHARE)
            else:
                weights.append((1 - WHALE_SHARE) / next(it) ** ZIPF_S / zipf_total)
        self.cum_customers = _cumulative(weights)
        self.cum_models = _cumulative(MODEL_WEIGHTS)
        self.counts = [0] * CUSTOMERS

    def chunks(self):
        """Yields lists of (i, customer index, meter index, timestamp, value text, model index)."""
        rng = random.Random(self.seed * 1_000_003 + 7)
        rand = rng.random
        choices = rng.choices
        custs_all = range(CUSTOMERS)
        models_all = range(len(MODELS))
        value_fns = [m[3] for m in METERS]
        n, start, span = self.n, self.start, self.span
        counts = [0] * CUSTOMERS
        for i0 in range(0, n, CHUNK):
            k = min(CHUNK, n - i0)
            custs = choices(custs_all, cum_weights=self.cum_customers, k=k)
            models = choices(models_all, cum_weights=self.cum_models, k=k)
            out = []
            append = out.append
            for j in range(k):
                i = i0 + j
                c = custs[j]
                counts[c] += 1
                m = int(rand() * 5)
                # (i + u) * span / n with u in [0, 1): non-decreasing, inside [start, end)
                ts = start + (i * span + int(rand() * span)) // n
                append((i, c, m, ts, value_fns[m](rand()), models[j]))
            yield out
        self.counts = counts


def _cumulative(weights: list[float]) -> list[float]:
    out, acc = [], 0.0
    for w in weights:
        acc += w
        out.append(acc)
    return out


def seeded_token(rng: random.Random, n: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(rng.choice(alphabet) for _ in range(n))


def objects(ds: DataSet) -> tuple[list[dict], list[dict]]:
    """The customers' and meters' rows (meterline's columns), seeded, created before any event."""
    rng = random.Random(ds.seed + 1)
    created = ds.start - DAY
    customers = []
    for c in range(CUSTOMERS):
        cid = "cus_" + seeded_token(rng, 14)
        customers.append(
            dict(
                id=cid,
                account_id=ds.account_id,
                livemode=False,
                created=created,
                deleted=False,
                email=f"customer{c:04d}@example.com",
                name="Whale Inc." if c == ds.whale else f"Customer {c:04d}",
                description=None,
                phone=None,
                address=None,
                preferred_locales=[],
                invoice_prefix=seeded_token(rng, 8).upper(),
                metadata={},
                test_clock=None,
            )
        )
    meters = []
    for name, event_name, formula, _ in METERS:
        meters.append(
            dict(
                id="mtr_" + seeded_token(rng, 24),
                account_id=ds.account_id,
                livemode=False,
                created=created,
                updated=created,
                display_name=name,
                event_name=event_name,
                formula=formula,
                customer_key="stripe_customer_id",
                value_key="value",
                event_time_window=None,
                status="active",
                deactivated_at=None,
                dimension_payload_keys=["model"],
            )
        )
    return customers, meters


def event_id(i: int) -> str:
    # Unique per account, ascending in arrival order (so the unique index only appends).
    return f"bench_evt_{i:010d}"


def payload(customer: str, value: str, model: str) -> str:
    # As meterline stores it: orjson's compact text of the payload as received.
    return f'{{"stripe_customer_id":"{customer}","value":"{value}","model":"{model}"}}'


def progress() -> Progress:
    return Progress(
        TextColumn("  {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )


def run_generator(ds: DataSet, label: str, sink) -> float:
    """Feeds every chunk to `sink(chunk)` under a progress bar; returns the seconds taken."""
    gen = Generator(ds.events, ds.seed, ds.start, ds.end)
    t0 = time.perf_counter()
    with progress() as bar:
        task = bar.add_task(label, total=ds.events, rate="")
        done = 0
        for chunk in gen.chunks():
            sink(chunk)
            done += len(chunk)
            elapsed = time.perf_counter() - t0
            bar.update(task, completed=done, rate=f"{done / elapsed:,.0f} ev/s")
    ds.counts = gen.counts
    ds.whale = gen.whale
    return time.perf_counter() - t0


def run(cmd: list[str], log: Path) -> str:
    return run_logged(cmd, log, timeout=600)


def make_account(url: str, ds: DataSet, log: Path) -> None:
    """`meterline migrate`, `meterline keys create --new-account`, then the key's account."""
    cli = meterline_cli()
    run([cli, "migrate", "--database-url", url], log)
    out = run([cli, "keys", "create", "--new-account", "--database-url", url], log)
    ds.api_key = out.strip().splitlines()[-1].strip()
    import sqlalchemy as sa

    from meterline.store.accounts import key_digest
    from meterline.store.db import make_engine
    from meterline.store.tables import api_keys

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            ds.account_id = conn.execute(
                sa.select(api_keys.c.account_id).where(
                    api_keys.c.key_hash == key_digest(ds.api_key)
                )
            ).scalar_one()
    finally:
        engine.dispose()


def write_objects(url: str, ds: DataSet) -> None:
    """Customers and meters through meterline's own tables, so their encoding is meterline's."""
    from meterline.store.db import make_engine
    from meterline.store.tables import customers, meters

    cust_rows, meter_rows = objects(ds)
    ds.customers = [r["id"] for r in cust_rows]
    ds.meters = [r["id"] for r in meter_rows]
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(customers.insert(), cust_rows)
            conn.execute(meters.insert(), meter_rows)
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- loaders

INSERT_COLUMNS = (
    "id, account_id, livemode, created, meter, customer, event_name, timestamp, value, payload"
)


def load_sqlite(path: Path, ds: DataSet) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-1048576")  # 1 GiB
    conn.execute("PRAGMA threads=2")
    indexes = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type='index' AND tbl_name='meter_events'"
        " AND sql IS NOT NULL"
    ).fetchall()
    for name, _ in indexes:
        conn.execute(f'DROP INDEX "{name}"')
    sql = f"INSERT INTO meter_events ({INSERT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)"
    acct, custs, meters = ds.account_id, ds.customers, ds.meters
    names = [m[1] for m in METERS]
    pending = [0]
    conn.execute("BEGIN")

    def sink(chunk):
        conn.executemany(
            sql,
            [
                (
                    event_id(i),
                    acct,
                    0,
                    ts,
                    meters[m],
                    custs[c],
                    names[m],
                    ts,
                    v,
                    payload(custs[c], v, MODELS[md]),
                )
                for i, c, m, ts, v, md in chunk
            ],
        )
        pending[0] += len(chunk)
        if pending[0] >= SQLITE_TXN:
            conn.execute("COMMIT")
            conn.execute("BEGIN")
            pending[0] = 0

    seconds = run_generator(ds, "sqlite: generate + insert", sink)
    conn.execute("COMMIT")
    t0 = time.perf_counter()
    print(f"  rebuilding {len(indexes)} indexes: {', '.join(n for n, _ in indexes)}", flush=True)
    for _, ddl in indexes:
        conn.execute(ddl)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    index_seconds = time.perf_counter() - t0
    conn.close()
    ds.load = {"insert_s": seconds, "index_s": index_seconds, "analyze_s": 0.0}


def load_postgres(url: str, ds: DataSet) -> None:
    import psycopg

    conn = psycopg.connect(url, autocommit=True)
    indexes = conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'meter_events'"
        " AND indexname NOT IN (SELECT conname FROM pg_constraint"
        "   WHERE conrelid = 'meter_events'::regclass)"
    ).fetchall()
    constraints = conn.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = 'meter_events'::regclass AND contype = 'u'"
    ).fetchall()
    for name, _ in indexes:
        conn.execute(f'DROP INDEX "{name}"')
    for name, _ in constraints:
        conn.execute(f'ALTER TABLE meter_events DROP CONSTRAINT "{name}"')
    acct, custs, meters = ds.account_id, ds.customers, ds.meters
    names = [m[1] for m in METERS]
    cols = INSERT_COLUMNS.replace("timestamp", '"timestamp"')
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy(f"COPY meter_events ({cols}) FROM STDIN") as copy:
            # Text format, written in blocks: no value holds a tab, newline or backslash.
            def sink(chunk):
                copy.write(
                    "".join(
                        f"{event_id(i)}\t{acct}\tf\t{ts}\t{meters[m]}\t{custs[c]}\t{names[m]}\t{ts}"
                        f"\t{v}\t{payload(custs[c], v, MODELS[md])}\n"
                        for i, c, m, ts, v, md in chunk
                    ).encode()
                )

            seconds = run_generator(ds, "postgresql: generate + COPY", sink)
    t0 = time.perf_counter()
    print(
        f"  rebuilding {len(indexes) + len(constraints)} indexes: "
        + ", ".join([n for n, _ in constraints] + [n for n, _ in indexes]),
        flush=True,
    )
    conn.execute("SET maintenance_work_mem = '512MB'")
    for name, definition in constraints:
        conn.execute(f'ALTER TABLE meter_events ADD CONSTRAINT "{name}" {definition}')
    for _, ddl in indexes:
        conn.execute(ddl)
    index_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    # What autovacuum would soon do on its own after a bulk load: statistics and visibility.
    conn.execute("VACUUM ANALYZE meter_events")
    conn.execute("ANALYZE customers")
    conn.execute("ANALYZE meters")
    analyze_seconds = time.perf_counter() - t0
    conn.close()
    ds.load = {"insert_s": seconds, "index_s": index_seconds, "analyze_s": analyze_seconds}


# ---------------------------------------------------------------------------- DuckDB


def duckdb_path(events: int, seed: int, start: int) -> Path:
    return OUT / f"events-{events}-{seed}-{start}.duckdb"


def build_duckdb(ds: DataSet) -> float:
    """A DuckDB table of the same events in the same order (customer, meter, timestamp, value,
    model), made from a CSV the generator writes; the CSV is removed after."""
    path = duckdb_path(ds.events, ds.seed, ds.start)
    csv_path = OUT / f"events-{ds.events}-{ds.seed}.csv"
    for p in (path, csv_path):
        p.unlink(missing_ok=True)
    fh = csv_path.open("w")

    def sink(chunk):
        fh.write("".join(f"{c},{m},{ts},{v},{md}\n" for _, c, m, ts, v, md in chunk))

    try:
        gen_seconds = run_generator(ds, "duckdb: generate CSV", sink)
    finally:
        fh.close()
    t0 = time.perf_counter()
    con = duckdb.connect(str(path))
    cust_list = "[" + ",".join(f"'{c}'" for c in ds.customers) + "]"
    meter_list = "[" + ",".join(f"'{m}'" for m in ds.meters) + "]"
    model_list = "[" + ",".join(f"'{m}'" for m in MODELS) + "]"
    con.execute(
        f"""CREATE TABLE meter_events AS
        SELECT {cust_list}[c + 1] AS customer, {meter_list}[m + 1] AS meter, ts AS "timestamp",
               v AS "value", {model_list}[md + 1] AS model
        FROM read_csv('{csv_path}', header = false,
             columns = {{'c': 'INTEGER', 'm': 'INTEGER', 'ts': 'BIGINT', 'v': 'DECIMAL(18,3)',
                         'md': 'INTEGER'}})"""
    )
    rows = con.execute("SELECT count(*) FROM meter_events").fetchone()[0]
    con.close()
    csv_path.unlink()
    if rows != ds.events:
        raise PhaseError(f"DuckDB holds {rows} events, expected {ds.events}")
    print(f"  DuckDB table built in {time.perf_counter() - t0:.1f} s", flush=True)
    return gen_seconds


# Bucket per row with DuckDB's ICU time zone support, sum per (model, bucket), then the bucket's
# end and the clipping to the range on the grouped rows only.
DUCK_SQL = """
SELECT model,
       greatest(epoch(b)::BIGINT, $start) AS b0,
       least(epoch(b + $step)::BIGINT, $end) AS b1,
       v
FROM (
    SELECT model, date_trunc($window, to_timestamp("timestamp")) AS b, sum("value") AS v
    FROM meter_events
    WHERE customer = $customer AND meter = $meter AND "timestamp" >= $start AND "timestamp" < $end
    GROUP BY ALL
)
ORDER BY model, b0
"""


def duck_query(con, ds: DataSet, customer: str, window: str, tz: str | None) -> list[tuple]:
    """`tz` None: the connection's TimeZone is already the request's."""
    if tz is not None:
        con.execute(f"SET TimeZone = '{tz}'")
    return con.execute(
        DUCK_SQL,
        {
            "window": window,
            "step": dt.timedelta(days=1) if window == "day" else dt.timedelta(hours=1),
            "start": ds.start,
            "end": ds.end,
            "customer": customer,
            "meter": ds.meters[QUERY_METER],
        },
    ).fetchall()


# ----------------------------------------------------------------------- measuring


@dataclass
class Series:
    key: str
    label: str
    database: str
    customer: str
    events: int  # the customer's events of the queried meter in range
    n: int = 0
    p50: float = 0.0
    p99: float = 0.0
    duck_n: int = 0
    duck_p50: float = 0.0
    duck_p99: float = 0.0
    rows: int = 0
    check: str = ""
    target: float | None = None


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def http_rows(body: bytes) -> list[tuple]:
    data = json.loads(body, parse_float=Decimal, parse_int=Decimal)["data"]
    return sorted(
        (
            r["dimensions"]["model"],
            int(r["bucket_start_time"]),
            int(r["bucket_end_time"]),
            Decimal(r["bucket_value"]),
        )
        for r in data
    )


def compare(got: list[tuple], want: list[tuple]) -> str:
    want = sorted((m, int(b0), int(b1), Decimal(v)) for m, b0, b1, v in want)
    if got == want:
        return f"same {len(got)} rows"
    missing = [r for r in want if r not in got]
    extra = [r for r in got if r not in want]
    return (
        f"MISMATCH: {len(got)} rows vs DuckDB's {len(want)}; first missing "
        f"{missing[:2]}, first extra {extra[:2]}"
    )


def measure_series(
    client: httpx.Client,
    duck,
    ds: DataSet,
    database: str,
    key: str,
    label: str,
    cust: int,
    window: str,
    tz: str,
    target: float | None,
    queries: int,
    max_seconds: float,
    meter_counts: dict[int, int],
) -> Series:
    customer = ds.customers[cust]
    s = Series(key, label, database, customer, meter_counts.get(cust, 0), target=target)
    params = [
        ("customer", customer),
        ("start_time", str(ds.start)),
        ("end_time", str(ds.end)),
        ("value_grouping_window", window),
        ("timezone", tz),
        ("meters[0][meter_id]", ds.meters[QUERY_METER]),
        ("meters[0][dimension_group_by_keys][0]", "model"),
    ]
    url = "/v1/billing/analytics/meter_usage"

    want = duck_query(duck, ds, customer, window, tz)
    t0 = time.perf_counter()
    warm = client.get(url, params=params)
    warm_ms = (time.perf_counter() - t0) * 1000
    if warm.status_code != 200:
        raise PhaseError(f"{label}: HTTP {warm.status_code}: {warm.text[:300]}")
    s.check = compare(http_rows(warm.content), want)
    s.rows = len(want)
    print(f"  {database} {label}: warm-up {warm_ms:,.1f} ms, {s.rows} rows, {s.check}", flush=True)

    samples: list[float] = []
    started = time.perf_counter()
    last = warm
    with progress() as bar:
        task = bar.add_task(f"{database} {label}", total=queries, rate="")
        while len(samples) < queries:
            if len(samples) >= MIN_QUERIES and time.perf_counter() - started > max_seconds:
                break
            t0 = time.perf_counter()
            last = client.get(url, params=params)
            samples.append((time.perf_counter() - t0) * 1000)
            if last.status_code != 200:
                raise PhaseError(f"{label}: HTTP {last.status_code}: {last.text[:300]}")
            bar.update(task, advance=1, rate=f"p50 {statistics.median(samples):,.1f} ms")
    check_last = compare(http_rows(last.content), want)
    if check_last != s.check:
        s.check += f"; last response: {check_last}"
    s.n, s.p50, s.p99 = len(samples), statistics.median(samples), pct(samples, 99)

    duck_samples = []
    duck.execute(f"SET TimeZone = '{tz}'")
    for _ in range(max(queries, s.n)):
        t0 = time.perf_counter()
        duck_query(duck, ds, customer, window, None)
        duck_samples.append((time.perf_counter() - t0) * 1000)
    s.duck_n = len(duck_samples)
    s.duck_p50, s.duck_p99 = statistics.median(duck_samples), pct(duck_samples, 99)
    print(
        f"    meterline p50 {s.p50:,.2f} ms  p99 {s.p99:,.2f} ms  (n={s.n});"
        f"  DuckDB p50 {s.duck_p50:,.2f} ms  p99 {s.duck_p99:,.2f} ms  (n={s.duck_n})",
        flush=True,
    )
    return s


def memory(pid: int) -> dict[str, Any] | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    kb = lambda name: int(fields.get(name, "0 kB").split()[0])  # noqa: E731
    return {"pid": pid, "hwm_mb": kb("VmHWM") / 1024, "rss_mb": kb("VmRSS") / 1024, "cmd": cmdline}


def worker_memory(server: Server) -> list[dict[str, Any]]:
    """The server's worker processes (uvicorn spawns them through multiprocessing)."""
    assert server.proc is not None
    procs = [memory(p) for p in descendants(server.proc.pid)]
    workers = [m for m in procs if m and "spawn_main" in m["cmd"]]
    return workers or [m for m in procs if m]


def meter_counts_of(ds: DataSet, database: str, url: str) -> dict[int, int]:
    """Events of the queried meter per customer of interest (from the database itself)."""
    wanted = {ds.whale, ds.typical}
    out = {}
    meter = ds.meters[QUERY_METER]
    if database == "sqlite":
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        for c in wanted:
            out[c] = conn.execute(
                "SELECT count(*) FROM meter_events WHERE account_id=? AND livemode=0 AND customer=?"
                " AND meter=? AND timestamp>=? AND timestamp<?",
                (ds.account_id, ds.customers[c], meter, ds.start, ds.end),
            ).fetchone()[0]
        conn.close()
    else:
        import psycopg

        with psycopg.connect(url) as conn:
            for c in wanted:
                out[c] = conn.execute(
                    "SELECT count(*) FROM meter_events WHERE account_id=%s AND NOT livemode AND"
                    ' customer=%s AND meter=%s AND "timestamp">=%s AND "timestamp"<%s',
                    (ds.account_id, ds.customers[c], meter, ds.start, ds.end),
                ).fetchone()[0]
    return out


# --------------------------------------------------------------------------- phases


@dataclass
class Phase:
    database: str
    ds: DataSet | None = None
    series: list[Series] = field(default_factory=list)
    workers: list[dict[str, Any]] = field(default_factory=list)
    failure: str | None = None
    walls: dict[str, float] = field(default_factory=dict)
    db_size_mb: float = 0.0
    load_before: str = ""
    load_after: str = ""
    reused: bool = False


def manifest_path(database: str) -> Path:
    return OUT / f"manifest-{database}.json"


def database_url(database: str, events: int, seed: int) -> str:
    if database == "sqlite":
        return f"sqlite:///{OUT / f'meterline-{events}-{seed}.db'}"
    return PG_URL


def prepare(database: str, args, start: int, end: int, phase: Phase) -> DataSet:
    url = database_url(database, args.events, args.seed)
    mpath = manifest_path(database)
    if args.reuse and mpath.exists():
        saved = json.loads(mpath.read_text())
        ds = DataSet(**saved)
        if (ds.events, ds.seed, ds.start) == (args.events, args.seed, start):
            print(f"  reusing the kept {database} data set ({mpath.relative_to(ROOT)})", flush=True)
            phase.reused = True
            return ds
        print("  the kept data set differs (events, seed or day): generating anew", flush=True)
    mpath.unlink(missing_ok=True)
    ds = DataSet(args.events, args.seed, start, end)
    log = OUT / f"setup-{database}.log"
    log.write_text("")
    t0 = time.perf_counter()
    if database == "sqlite":
        path = Path(url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm", ".writelock"):
            Path(str(path) + suffix).unlink(missing_ok=True)
    else:
        recreate_postgres_database(PG_DATABASE)
    make_account(url, ds, log)
    # The whale index comes from the generator's seed; objects() needs it for the name only.
    ds.whale = Generator(ds.events, ds.seed, ds.start, ds.end).whale
    write_objects(url, ds)
    phase.walls["setup (migrate, account, customers, meters)"] = time.perf_counter() - t0
    if database == "sqlite":
        load_sqlite(Path(url.removeprefix("sqlite:///")), ds)
    else:
        load_postgres(url, ds)
    phase.walls["generate + insert events"] = ds.load["insert_s"]
    phase.walls["rebuild indexes"] = ds.load["index_s"]
    if ds.load.get("analyze_s"):
        phase.walls["VACUUM ANALYZE"] = ds.load["analyze_s"]
    # The loader writes raw events only: build their rollups as a user would after a bulk load.
    t0 = time.perf_counter()
    print("  meterline rollups rebuild", flush=True)
    run([meterline_cli(), "rollups", "rebuild", "--database-url", url, "--no-progress"], log)
    phase.walls["meterline rollups rebuild"] = time.perf_counter() - t0
    mpath.write_text(json.dumps(asdict(ds)))
    return ds


def database_size_mb(database: str, url: str) -> float:
    if database == "sqlite":
        path = url.removeprefix("sqlite:///")
        return (
            sum(os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s)) / 2**20
        )
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute("SELECT pg_database_size(current_database())").fetchone()[0] / 2**20


def phase_run(database: str, args, start: int, end: int, duck_state: dict) -> Phase:
    phase = Phase(database)
    phase.load_before = loadavg()
    server = None
    print(f"\n== {database}", flush=True)
    try:
        ds = prepare(database, args, start, end, phase)
        phase.ds = ds
        url = database_url(database, args.events, args.seed)
        phase.db_size_mb = database_size_mb(database, url)

        if duck_state.get("con") is None:
            path = duckdb_path(ds.events, ds.seed, ds.start)
            if not (args.reuse and path.exists()):
                t0 = time.perf_counter()
                phase.walls["DuckDB: generate CSV"] = build_duckdb(ds)
                phase.walls["DuckDB: build table"] = (
                    time.perf_counter() - t0 - phase.walls["DuckDB: generate CSV"]
                )
            duck_state["con"] = duckdb.connect(str(path), read_only=True)
            duck_state["path"] = path
        duck = duck_state["con"]

        counts = meter_counts_of(ds, database, url)
        port = free_port()
        log = OUT / f"serve-{database}.log"
        log.write_text("")
        server = Server(
            f"meterline serve ({database})",
            [
                meterline_cli(),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--database-url",
                url,
                "--workers",
                "2",
                "--log-level",
                "warning",
            ],
            log,
        )
        t0 = time.perf_counter()
        server.start()
        base = f"http://127.0.0.1:{port}"
        client = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {ds.api_key}"}, timeout=900
        )

        def ready():
            try:
                r = client.get(f"/v1/customers/{ds.customers[ds.typical]}", timeout=2)
            except httpx.TransportError as exc:
                return f"{type(exc).__name__}: {exc}"
            return None if r.status_code == 200 else f"GET customer answered {r.status_code}"

        server.wait_ready(ready, timeout=120)
        phase.walls["server start"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        who = {"typical": ds.typical, "whale": ds.whale}
        for key, label, w, window, tz, target in SERIES:
            phase.series.append(
                measure_series(
                    client,
                    duck,
                    ds,
                    database,
                    key,
                    label,
                    who[w],
                    window,
                    tz,
                    target,
                    args.queries,
                    args.max_seconds,
                    counts,
                )
            )
            server.check_alive()
        phase.walls["queries (meterline + DuckDB)"] = time.perf_counter() - t0
        phase.workers = worker_memory(server)
        client.close()
    except (PhaseError, httpx.HTTPError, OSError, sqlite3.Error, duckdb.Error) as exc:
        phase.failure = f"{type(exc).__name__}: {exc}"
        print(f"  FAILED: {phase.failure}", flush=True)
    except Exception as exc:  # psycopg and the rest: report, do not lose the other phase
        phase.failure = f"{type(exc).__name__}: {exc}"
        print(f"  FAILED: {phase.failure}", flush=True)
    finally:
        if server is not None:
            server.stop()
    phase.load_after = loadavg()
    return phase


def cleanup(database: str, args) -> None:
    if args.keep:
        return
    manifest_path(database).unlink(missing_ok=True)
    if database == "sqlite":
        path = database_url(database, args.events, args.seed).removeprefix("sqlite:///")
        for suffix in ("", "-wal", "-shm", ".writelock"):
            Path(path + suffix).unlink(missing_ok=True)
    else:
        try:
            import psycopg

            with psycopg.connect(
                "postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True
            ) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')
        except Exception as exc:  # noqa: BLE001
            print(f"  could not drop {PG_DATABASE}: {exc}", flush=True)


# --------------------------------------------------------------------------- report


def machine() -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    pg = ""
    try:
        import psycopg

        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres") as conn:
            pg = conn.execute("SHOW server_version").fetchone()[0]
    except Exception:  # noqa: BLE001
        pass
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": cpu,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "kernel": platform.release(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": pg,
        "duckdb": duckdb.__version__,
        "commit": commit + (" (src/ has uncommitted changes)" if dirty else ""),
    }


HEADER = [
    "database",
    "query",
    "meter events in range",
    "p50 ms",
    "p99 ms",
    "queries",
    "DuckDB p50 ms",
    "DuckDB p99 ms",
    "ratio (meterline p50 / DuckDB p50)",
    "target",
    "met?",
    "same answer as DuckDB?",
]


def table_rows(phases: list[Phase]) -> list[list[str]]:
    rows = []
    for ph in phases:
        if ph.failure:
            rows.append([ph.database, "FAILED (see below)"] + [""] * (len(HEADER) - 2))
            continue
        for s in ph.series:
            ratio = s.p50 / s.duck_p50 if s.duck_p50 else float("inf")
            agree = s.check.startswith("same")
            if s.target is not None:
                target = f"p50 < {s.target:.0f} ms and ≤ DuckDB"
                met = "yes" if s.p50 < s.target and ratio <= 1 and agree else "no"
            else:
                target = "≤ DuckDB"
                met = "yes" if ratio <= 1 and agree else "no"
            rows.append(
                [
                    ph.database,
                    s.label,
                    f"{s.events:,}",
                    f"{s.p50:,.2f}",
                    f"{s.p99:,.2f}",
                    str(s.n),
                    f"{s.duck_p50:,.2f}",
                    f"{s.duck_p99:,.2f}",
                    f"{ratio:,.1f}×",
                    target,
                    met,
                    "yes" if agree else s.check,
                ]
            )
        hwm = max((w["hwm_mb"] for w in ph.workers), default=0.0)
        rows.append(
            [
                ph.database,
                "peak RSS of a worker (VmHWM)",
                "",
                f"{hwm:,.0f} MB",
                "",
                "",
                "",
                "",
                "",
                f"< {RSS_TARGET_MB:.0f} MB",
                "yes" if 0 < hwm < RSS_TARGET_MB else "no",
                "",
            ]
        )
    return rows


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADER)]
    print("\n" + "  ".join(h.ljust(w) for h, w in zip(HEADER, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


def describe(ds: DataSet) -> list[str]:
    counts = sorted(ds.counts)
    others = sorted(c for i, c in enumerate(ds.counts) if i != ds.whale)
    day = lambda t: dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")  # noqa: E731
    return [
        f"{ds.events:,} meter events from {day(ds.start)} to {day(ds.end)} (30 days), in"
        f" arrival order (ascending timestamps, `created` = `timestamp`), seed {ds.seed};"
        f" 1 account, {CUSTOMERS:,} customers, 5 meters"
        " (`gpu_seconds` sum of 3-decimal values, `llm_tokens` sum, `api_requests` count,"
        " `active_seats` last, `storage_gb_hours` sum of 2-decimal values; each"
        ' `dimension_payload_keys ["model"]`), meter chosen uniformly per event,'
        f" `model` one of {', '.join(MODELS)}"
        f" ({', '.join(f'{w:.0%}' for w in MODEL_WEIGHTS)}).",
        f"Customers: the whale sends {ds.counts[ds.whale]:,} events"
        f" ({ds.counts[ds.whale] / ds.events:.1%}); the other 999 follow Zipf (weight 1/rank):"
        f" largest {others[-1]:,}, median {others[len(others) // 2]:,}, smallest {counts[0]:,}."
        f" The typical customer is the median one ({ds.counts[ds.typical]:,} events).",
    ]


def write_report(
    phases: list[Phase],
    info: dict,
    argv: list[str],
    started: dt.datetime,
    total_s: float,
    queries: int,
) -> None:
    invocation = ".venv/bin/python bench/metering.py" + (" " + shlex.join(argv) if argv else "")
    ds = next((p.ds for p in phases if p.ds), None)
    md = [
        BEGIN_MARKER,
        "## Meter usage analytics on a generated store",
        "",
        "<!-- Generated by bench/metering.py; replaced on each run. -->",
        "",
        f"- Date: {started.strftime('%Y-%m-%d %H:%M UTC')}; total wall time {total_s / 60:.1f} min.",
        f"- Machine: {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']},"
        f" {info['python']}, SQLite {info['sqlite']}"
        + (f", PostgreSQL {info['postgresql']}" if info["postgresql"] else "")
        + f", DuckDB {info['duckdb']}. Other engineers' test runs share the machine"
        " (load average per phase below): expect noise.",
        f"- meterline commit: {info['commit']}",
        f"- Command: `{invocation}`",
    ]
    if ds:
        md += ["- Data set: " + describe(ds)[0], "  " + describe(ds)[1]]
    md += [
        "- Load: the generator writes the account through `meterline migrate` and `meterline"
        " keys create --new-account`, customers and meters through meterline's SQLAlchemy"
        " tables, and events straight into `meter_events` (SQLite: executemany, 1M rows per"
        " transaction, synchronous=OFF during the load; PostgreSQL: COPY in text format) with"
        " the secondary indexes dropped and rebuilt after the load (PostgreSQL: then"
        " `VACUUM ANALYZE`). Event identifiers ascend in arrival order.",
        "- Queries: `meterline serve --workers 2`, one keep-alive httpx connection, sequential"
        " requests of the seed shape `GET /v1/billing/analytics/meter_usage?customer=…"
        "&start_time=…&end_time=…&value_grouping_window=day&timezone=America/New_York"
        "&meters[0][meter_id]=…&meters[0][dimension_group_by_keys][0]=model` over the 30 days,"
        " for the meter `gpu_seconds`; time from sending the request to the whole body read."
        f" One warm-up query per series, then up to {queries}"
        " timed ones, stopping early (at 10 or more) when a series has run for --max-seconds;"
        " the `queries` column says how many ran.",
        "- DuckDB: in-process, the same events (customer, meter, timestamp, value as"
        " DECIMAL(18,3), model) in a DuckDB table in the same arrival order, the same"
        " aggregation (`date_trunc` in the request's time zone through DuckDB's ICU, edges"
        " clipped to the range, `sum(value)` grouped by model and bucket), timed over execute"
        " and fetch. Every meterline answer (the warm-up's and the last timed one's) is compared"
        " row by row, exactly, with DuckDB's.",
        "- Targets (issue 3): a typical customer under 20 ms p50, the whale under 50 ms p50,"
        " neither slower than DuckDB, on SQLite and on PostgreSQL; a worker's peak RSS under"
        " 300 MB while serving the 10M store.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    md += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in table_rows(phases)]
    md += [""]
    for ph in phases:
        if ph.failure:
            md += [f"- {ph.database} FAILED: `{ph.failure}`"]
            continue
        assert ph.ds is not None
        load = ph.ds.load
        total = sum(load.values())
        walls = ", ".join(f"{k} {v:,.0f} s" for k, v in ph.walls.items())
        if ph.reused:
            walls += (
                " (the data set was kept from an earlier run: --reuse; load figures are that run's)"
            )
        if load.get("insert_s"):
            md += [
                f"- {ph.database} load: {ph.ds.events / load['insert_s']:,.0f} events/s generated"
                f" and inserted; {ph.ds.events / total:,.0f} events/s including the index rebuild"
                + (" and VACUUM ANALYZE" if load.get("analyze_s") else "")
                + f"; database {ph.db_size_mb:,.0f} MB."
            ]
        workers = "; ".join(
            f"pid {w['pid']}: peak {w['hwm_mb']:,.0f} MB, now {w['rss_mb']:,.0f} MB"
            for w in ph.workers
        )
        md += [
            f"- {ph.database} wall times: {walls}. Load average {ph.load_before} before,"
            f" {ph.load_after} after.",
            f"- {ph.database} workers after the queries: {workers}.",
        ]
    md += ["", "Logs: `bench/out/metering/` (not committed).", END_MARKER, ""]

    text = REPORT.read_text() if REPORT.exists() else f"# Performance\n\n{OTHER_MARKER}\n"
    if BEGIN_MARKER in text and END_MARKER in text:
        head, rest = text.split(BEGIN_MARKER, 1)
        tail = rest.split(END_MARKER, 1)[1].lstrip("\n")
        text = head + "\n".join(md) + tail
    else:
        if OTHER_MARKER not in text:
            text = text.rstrip("\n") + f"\n\n{OTHER_MARKER}\n"
        text = text.rstrip("\n") + "\n\n" + "\n".join(md)
    REPORT.write_text(text)
    print(f"\nwrote {REPORT}")


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000, help="events (default 10M)")
    parser.add_argument("--only", choices=["sqlite", "postgresql"], action="append")
    parser.add_argument("--queries", type=int, default=200, help="timed queries per series")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=120.0,
        help="stop a series' timed meterline queries after this long (at least 10 run)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the generated databases")
    parser.add_argument("--reuse", action="store_true", help="reuse kept data of the same size")
    parser.add_argument("--no-report", action="store_true", help="do not write PERFORMANCE.md")
    args = parser.parse_args(argv)
    if args.events < CUSTOMERS * 10:
        parser.error(f"--events must be at least {CUSTOMERS * 10}")

    started = dt.datetime.now(dt.UTC)
    t_start = time.perf_counter()
    OUT.mkdir(parents=True, exist_ok=True)
    end = int(started.replace(hour=0, minute=0, second=0, microsecond=0).timestamp())
    start = end - SPAN_DAYS * DAY
    info = machine()
    print(
        f"{info['nproc']} CPUs ({info['cpu']}), {info['python']}, SQLite {info['sqlite']},"
        f" PostgreSQL {info['postgresql'] or '?'}, DuckDB {info['duckdb']}; {args.events:,} events",
        flush=True,
    )
    duck_state: dict[str, Any] = {}
    phases = []
    try:
        for database in args.only or ["sqlite", "postgresql"]:
            phases.append(phase_run(database, args, start, end, duck_state))
            cleanup(database, args)
    except KeyboardInterrupt:
        print("\ninterrupted: no report written", file=sys.stderr)
        return 130
    finally:
        if duck_state.get("con") is not None:
            duck_state["con"].close()
            if not args.keep:
                duck_state["path"].unlink(missing_ok=True)
    total = time.perf_counter() - t_start

    rows = table_rows(phases)
    print_table(rows)
    for ph in phases:
        if ph.ds and ph.ds.load.get("insert_s"):
            ld = ph.ds.load
            print(
                f"{ph.database}: load {ph.ds.events / ld['insert_s']:,.0f} events/s (generate +"
                f" insert), {ph.ds.events / sum(ld.values()):,.0f} events/s with indexes;"
                f" walls: " + ", ".join(f"{k} {v:,.1f} s" for k, v in ph.walls.items())
            )
    (OUT / "results.json").write_text(
        json.dumps(
            {
                "started": started.isoformat(),
                "machine": info,
                "argv": argv,
                "phases": [
                    {**asdict(p), "ds": {k: v for k, v in asdict(p.ds).items() if k != "counts"}}
                    if p.ds
                    else asdict(p)
                    for p in phases
                ],
            },
            indent=2,
            default=str,
        )
    )
    if not args.no_report:
        write_report(phases, info, argv, started, total, args.queries)
    bad = any(p.failure for p in phases) or any(
        not s.check.startswith("same") for p in phases for s in p.series
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
