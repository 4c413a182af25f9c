"""meterline ingest benchmark (issue 3, "Speed"): `make bench` runs `.venv/bin/python bench/ingest.py`.

    .venv/bin/python bench/ingest.py [--seconds N] [--warmup N] [--repeat N]
                                     [--only sqlite|postgresql] [--threads N]
                                     [--v2-connections N] [--v1-connections N]
                                     [--keep] [--no-report]

For SQLite (a fresh file in bench/out/ingest/) and PostgreSQL (the database `meterline_ingest`,
dropped and recreated):

1. Setup: `meterline migrate`, `meterline keys create --new-account` (the key is its last line),
   `meterline serve --workers 2`; then through the HTTP API one meter (event_name `tokens`,
   formula sum, dimension_payload_keys ["model"]) and 1,000 customers (8 requests at a time).
   One stream request and one v1 event sent from Python, and counted in the database, check the
   request shapes before any load.
2. v2 stream: wrk with bench/ingest.lua (mode v2) POSTs /v2/billing/meter_event_stream, 100
   events per JSON request (a unique identifier each, a random customer of the 1,000, a random
   model of 4, a value from 1 to 1000, the current time), with the token of a meter event
   session made just before each wrk run.
3. v1: wrk with the same script (mode v1) POSTs /v1/billing/meter_events, one form-encoded event
   per request (a unique identifier, no timestamp), with the secret key.
   Each gets a warm-up run, then --repeat measured runs; the median run by events/s is reported.
   events/s = 2xx responses x events per request / wrk's measured duration. Around every run
   (warm-up included) the rows of `meter_events` are counted once the server is idle again and
   its drain has emptied the stream's landing log (`meter_event_inbox`): the
   stored events must be at least the accepted ones (2xx responses x events per request) and at
   most the sent ones (requests started, including those still in flight when wrk stopped,
   which the server completes after wrk has gone); and from before the warm-up to after the
   last run, the rows added must be at least all the accepted events (so that no event can
   hide between two runs' counts). `meter_event_error_reports` must stay empty,
   since the stream reports invalid events there instead of failing the request. The CPU time
   of the server's processes, of the PostgreSQL backends serving it, and of wrk is read around
   each run.
4. Raw floor, on the same database once the server has stopped: one plain driver connection
   (sqlite3 / psycopg, the settings meterline uses: WAL, synchronous=NORMAL and the writers'
   page cache size on SQLite, durable commits on PostgreSQL) inserts rows shaped like meterline's with executemany into a scratch
   table with the columns, types and indexes of `meter_events`, committing every 100 rows (one
   stream request's worth) and, in a second scratch table, every 10,000 rows; the same warm-up
   and measured runs. Timed: executemany and COMMIT (the row tuples are built outside the
   clock). Ratios: meterline events/s / raw rows/s.
5. Print the results and write them into docs/PERFORMANCE.md between the
   `<!-- bench:ingest -->` markers, after the metering block.

Targets (issue 3): the v2 stream reaches 50,000 events/s on SQLite with no failed request;
v1 reaches 2,000 events/s (checked on both databases). The exit status is 1 when a phase could
not run, a wrk run saw errors (non-2xx responses or socket errors) or a count check failed; a
missed target is reported, not failed. wrk output, server logs and results.json go to
bench/out/ingest/ (not committed); the SQLite file and the PostgreSQL database are removed at
the end unless --keep.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import json
import os
import random
import resource
import secrets
import shlex
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.run import (  # noqa: E402
    PG_ADMIN_URLS,
    PhaseError,
    Server,
    call,
    descendants,
    ensure_wrk,
    free_port,
    loadavg,
    log_tail,
    machine_info,
    meterline_cli,
    parse_wrk,
    recreate_postgres_database,
    run_logged,
)

OUT = ROOT / "bench" / "out" / "ingest"
REPORT = ROOT / "docs" / "PERFORMANCE.md"
OTHER_MARKER = "<!-- bench:other -->"
METERING_END = "<!-- /bench:metering -->"
BEGIN_MARKER = "<!-- bench:ingest -->"
END_MARKER = "<!-- /bench:ingest -->"
LUA = "bench/ingest.lua"

PG_DATABASE = "meterline_ingest"
PG_URL = os.environ.get(
    "BENCH_INGEST_POSTGRES_URL", f"postgresql://postgres@127.0.0.1:5432/{PG_DATABASE}"
)

CUSTOMERS = 1000
SETUP_CONCURRENCY = 8
EVENT_NAME = "tokens"  # also in bench/ingest.lua
MODELS = ["gpt-4", "gpt-4o-mini", "claude-sonnet", "llama-70b"]  # as in bench/ingest.lua
STREAM_BATCH = 100
RAW_BATCHES = (100, 10_000)
OPS = ("v2 stream", "v1 events")
# Issue 3: events/s, with no failed request. (database, operation) -> target; v1 on both.
TARGETS = {
    ("sqlite", "v2 stream"): 50_000,
    ("sqlite", "v1 events"): 2_000,
    ("postgresql", "v1 events"): 2_000,
}
START_TIMEOUT = 60.0
# wrk's own default (2 s) would count a slow answer as a failed request; a client such as the
# Stripe SDK waits far longer. Slow answers show in p99 instead.
WRK_TIMEOUT = 10
SETTLE_QUIET = 0.6  # at least: the count must stay unchanged this long after wrk exits
SETTLE_TIMEOUT = 60.0
CLK_TCK = os.sysconf("SC_CLK_TCK")

# The columns the raw floor fills, in this order; a column of `meter_events` not listed here
# is left to its default and named in the report.
RAW_COLUMNS = (
    "id",
    "account_id",
    "livemode",
    "created",
    "meter",
    "customer",
    "event_name",
    "timestamp",
    "value",
    "payload",
    "cancelled_at",
)


# --------------------------------------------------------------------------- results


@dataclass
class HttpRun:
    """One wrk run against meterline, with what the database stored meanwhile."""

    label: str
    batch: int  # events per request
    requests: int  # completed (wrk)
    ok: int  # 2xx responses
    failed: int  # other responses
    sent: int  # requests started
    connect: int
    read: int
    write: int
    timeout: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    stored: int = 0  # rows added to meter_events during the run
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per process group
    samples: list[str] = field(default_factory=list)  # first failure per wrk thread

    @property
    def accepted(self) -> int:
        return self.ok * self.batch

    @property
    def events_per_s(self) -> float:
        return self.accepted / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def socket_errors(self) -> int:
        return self.connect + self.read + self.write + self.timeout

    @property
    def errors(self) -> int:
        return self.failed + self.socket_errors

    @property
    def count_ok(self) -> bool:
        return self.accepted <= self.stored <= self.sent * self.batch

    def error_text(self) -> str:
        if not self.errors:
            return "0"
        parts = [
            f"{name} {n}"
            for name, n in (
                ("non-2xx", self.failed),
                ("connect", self.connect),
                ("read", self.read),
                ("write", self.write),
                ("timeout", self.timeout),
            )
            if n
        ]
        return f"{self.errors} ({', '.join(parts)})"


@dataclass
class RawRun:
    label: str
    rows: int
    seconds: float  # in executemany and COMMIT
    wall_s: float
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds: driver, postgresql

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Op:
    """One operation on one database: meterline over HTTP, or the raw floor."""

    database: str
    name: str
    runs: list[Any] = field(default_factory=list)  # measured runs (HttpRun or RawRun)
    warmups: list[Any] = field(default_factory=list)
    failure: str | None = None
    # HTTP ops: rows of meter_events added from before the warm-up to after the last run (no
    # gap between runs can hide an event there), and the events accepted meanwhile.
    whole_stored: int | None = None
    whole_accepted: int | None = None

    def rate(self, run: Any) -> float:
        return run.events_per_s if isinstance(run, HttpRun) else run.rows_per_s

    @property
    def median(self) -> Any:
        """The median run by rate (the lower middle one for an even count)."""
        if not self.runs:
            return None
        ordered = sorted(self.runs, key=self.rate)
        return ordered[(len(ordered) - 1) // 2]

    @property
    def all_http(self) -> list[HttpRun]:
        return [r for r in self.warmups + self.runs if isinstance(r, HttpRun)]

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.all_http)

    @property
    def count_ok(self) -> bool:
        whole = self.whole_stored is None or self.whole_stored >= (self.whole_accepted or 0)
        return whole and all(r.count_ok for r in self.all_http)


@dataclass
class Phase:
    database: str
    ops: list[Op] = field(default_factory=list)
    failure: str | None = None
    notes: list[str] = field(default_factory=list)
    error_reports: int | None = None
    load_before: str = ""
    load_after: str = ""
    wall_s: float = 0.0


# --------------------------------------------------------------------------- helpers


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes (those gone are skipped)."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / CLK_TCK


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def post_json(url: str, token: str, payload: Any, timeout: float = 10.0) -> tuple[int, bytes]:
    req = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def rfc3339_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_cli(args: list[str], log: Path, timeout: float = 300) -> str:
    return run_logged([meterline_cli(), *args], log, timeout)


class Counter:
    """Counts rows of the phase's database on one read connection of its own."""

    def __init__(self, database: str, url: str) -> None:
        self.database = database
        if database == "sqlite":
            path = url.removeprefix("sqlite:///")
            self.conn: Any = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        else:
            import psycopg

            self.conn = psycopg.connect(url, autocommit=True)

    def count(self, table: str = "meter_events") -> int:
        return int(self.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

    def settled(self, quiet: float) -> int:
        """The count once the server has finished the requests still in flight when wrk stopped
        and has moved every accepted stream event out of its landing log: unchanged for `quiet`
        seconds, the landing log empty and, on PostgreSQL, no open transaction holding rows it
        inserted into meter_events (a batch of requests commits all at once, so the count alone
        may stand still for as long as a batch takes)."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        last = self.count()
        since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.2)
            now = self.count()
            if now != last:
                last, since = now, time.monotonic()
            elif (
                time.monotonic() - since >= quiet
                and not self.count("meter_event_inbox")
                and not self.busy()
            ):
                # A move that committed between the count above and the look at the landing
                # log would have left that count short: count again, and settle only if equal.
                again = self.count()
                if again == now:
                    return now
                last, since = again, time.monotonic()
        raise PhaseError(f"meter_events kept changing for {SETTLE_TIMEOUT:.0f}s after wrk stopped")

    def busy(self) -> bool:
        """PostgreSQL: an open transaction has inserted into meter_events (an INSERT holds
        ROW EXCLUSIVE on the table until its transaction ends; readers take a weaker lock)."""
        if self.database != "postgresql":
            return False
        row = self.conn.execute(
            "SELECT count(*) FROM pg_locks WHERE relation = 'meter_events'::regclass"
            " AND mode = 'RowExclusiveLock' AND granted AND pid <> pg_backend_pid()"
        ).fetchone()
        return row[0] > 0

    def backends(self) -> list[int]:
        """PostgreSQL: the backends of this database other than this connection's."""
        if self.database != "postgresql":
            return []
        rows = self.conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        ).fetchall()
        return [r[0] for r in rows]

    def close(self) -> None:
        self.conn.close()


def drop_postgres_database(name: str) -> None:
    import psycopg

    errors = []
    for admin in PG_ADMIN_URLS:
        try:
            with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return
        except psycopg.Error as exc:
            errors.append(f"{admin}: {exc}")
    print(f"  could not drop {name}: {'; '.join(errors)}", flush=True)


# --------------------------------------------------------------------------- setup


@dataclass
class Setup:
    base: str
    api_key: str
    meter_id: str
    customers: list[str]
    customers_file: Path


def create_objects(base: str, api_key: str, database: str) -> Setup:
    body = (
        "display_name=Tokens&event_name=" + EVENT_NAME + "&default_aggregation%5Bformula%5D=sum"
        "&dimension_payload_keys%5B0%5D=model"
    ).encode()
    status, resp = call("POST", f"{base}/v1/billing/meters", api_key, body)
    if status != 200:
        raise PhaseError(f"POST /v1/billing/meters answered {status}: {resp[:300]!r}")
    meter_id = json.loads(resp)["id"]

    def create_customer(i: int) -> str:
        data = f"name=Customer+{i:04d}&email=customer{i:04d}%40example.com".encode()
        status, resp = call("POST", f"{base}/v1/customers", api_key, data, timeout=30)
        if status != 200:
            raise PhaseError(f"POST /v1/customers answered {status}: {resp[:300]!r}")
        return json.loads(resp)["id"]

    t0 = time.perf_counter()
    with ThreadPoolExecutor(SETUP_CONCURRENCY) as pool:
        customers = list(pool.map(create_customer, range(CUSTOMERS)))
    print(
        f"  meter {meter_id} and {len(customers):,} customers created in"
        f" {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    path = OUT / f"customers-{database}.txt"
    path.write_text("\n".join(customers) + "\n")
    return Setup(base, api_key, meter_id, customers, path)


def create_session(setup: Setup) -> str:
    status, resp = post_json(f"{setup.base}/v2/billing/meter_event_session", setup.api_key, {})
    if status != 200:
        raise PhaseError(f"POST /v2/billing/meter_event_session answered {status}: {resp[:300]!r}")
    token = json.loads(resp).get("authentication_token")
    if not token:
        raise PhaseError(f"the meter event session has no authentication_token: {resp[:300]!r}")
    return token


def smoke_test(setup: Setup, counter: Counter) -> None:
    """One stream request and one v1 event, shaped like wrk's, each counted in the database."""
    rng = random.Random(1)
    before = counter.count()
    nonce = secrets.token_hex(6)
    events = [
        {
            "event_name": EVENT_NAME,
            "payload": {
                "stripe_customer_id": rng.choice(setup.customers),
                "value": str(rng.randint(1, 1000)),
                "model": rng.choice(MODELS),
            },
            "identifier": f"smoke-{nonce}-{i}",
            "timestamp": rfc3339_now(),
        }
        for i in range(STREAM_BATCH)
    ]
    token = create_session(setup)
    status, resp = post_json(
        f"{setup.base}/v2/billing/meter_event_stream", token, {"events": events}
    )
    if not 200 <= status < 300:
        raise PhaseError(f"a stream request answered {status}: {resp[:300]!r}")
    # Accepted durably at the 200 (in the landing log or moved already), then moved by the
    # server's drain about a second later.
    landed = counter.count() - before + counter.count("meter_event_inbox")
    if landed != STREAM_BATCH:
        raise PhaseError(
            f"a stream request of {STREAM_BATCH} valid events answered {status} but only"
            f" {landed} were in meter_events or its landing log"
        )
    deadline = time.monotonic() + 30
    while counter.count("meter_event_inbox") and time.monotonic() < deadline:
        time.sleep(0.1)
    stored = counter.count() - before
    if stored != STREAM_BATCH:
        reports = counter.count("meter_event_error_reports")
        raise PhaseError(
            f"a stream request of {STREAM_BATCH} valid events answered {status} but stored"
            f" {stored} (error reports: {reports})"
        )
    body = (
        f"event_name={EVENT_NAME}&payload%5Bstripe_customer_id%5D={setup.customers[0]}"
        f"&payload%5Bvalue%5D=7&payload%5Bmodel%5D={MODELS[0]}&identifier=smoke-{nonce}-v1"
    ).encode()
    status, resp = call("POST", f"{setup.base}/v1/billing/meter_events", setup.api_key, body)
    if status != 200:
        raise PhaseError(f"POST /v1/billing/meter_events answered {status}: {resp[:300]!r}")
    if counter.count() - before != STREAM_BATCH + 1:
        raise PhaseError("a v1 meter event answered 200 but was not stored")


# --------------------------------------------------------------------------- HTTP load


@dataclass
class Settings:
    wrk: str
    threads: int
    seconds: int
    warmup: int
    repeat: int
    connections: dict[str, int]

    def args(self, op: str, seconds: int) -> list[str]:
        return [
            f"-t{self.threads}",
            f"-c{self.connections[op]}",
            f"-d{seconds}s",
            f"--timeout={WRK_TIMEOUT}s",
            "--latency",
        ]


def wrk_once(
    settings: Settings,
    op: str,
    setup: Setup,
    server: Server,
    counter: Counter,
    seconds: int,
    label: str,
    show: bool,
) -> HttpRun:
    v2 = op == "v2 stream"
    if v2:
        url = f"{setup.base}/v2/billing/meter_event_stream"
        auth = create_session(setup)
        mode, batch = "v2", STREAM_BATCH
    else:
        url = f"{setup.base}/v1/billing/meter_events"
        auth = setup.api_key
        mode, batch = "v1", 1
    cmd = [
        settings.wrk,
        *settings.args(op, seconds),
        "-s",
        LUA,
        "-H",
        f"Authorization: Bearer {auth}",
        url,
        "--",
        mode,
        secrets.token_hex(6),
        str(setup.customers_file),
        str(batch),
    ]
    if show:
        shown = [
            c if not c.startswith("Authorization:") else "Authorization: Bearer …" for c in cmd
        ]
        print(f"  $ {shlex.join(shown)}", flush=True)
    before = counter.count()
    server_pids = [server.proc.pid, *descendants(server.proc.pid)] if server.proc else []
    pg_pids = counter.backends()
    cpu0 = (cpu_seconds(server_pids), cpu_seconds(pg_pids), children_cpu())
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 60)
    cpu1 = (cpu_seconds(server_pids), cpu_seconds(pg_pids), children_cpu())
    name = f"wrk-{label}.txt"
    (OUT / name).write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise PhaseError(f"wrk exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()}")
    try:
        parsed = parse_wrk(proc.stdout)
        lua = json.loads(proc.stdout.split("BENCH_RESULT ", 1)[1].splitlines()[0])
    except (ValueError, IndexError) as exc:
        raise PhaseError(f"cannot parse wrk output ({exc}); see bench/out/ingest/{name}") from exc
    server.check_alive()
    # The requests in flight when wrk stopped finish within about one request's latency.
    stored = counter.settled(max(SETTLE_QUIET, 2 * parsed.p99_ms / 1000)) - before
    run = HttpRun(
        label=label,
        batch=batch,
        requests=parsed.requests,
        ok=int(lua["ok"]),
        failed=max(int(lua["failed"]), parsed.non2xx),
        sent=int(lua["sent"]),
        connect=parsed.connect,
        read=parsed.read,
        write=parsed.write,
        timeout=parsed.timeout,
        duration_s=int(lua["duration_us"]) / 1e6,
        p50_ms=parsed.p50_ms,
        p99_ms=parsed.p99_ms,
        stored=stored,
        cpu={
            "meterline": cpu1[0] - cpu0[0],
            "postgresql": cpu1[1] - cpu0[1],
            "wrk": cpu1[2] - cpu0[2],
        },
        samples=[
            line.removeprefix("BENCH_SAMPLE ").strip()
            for line in proc.stdout.splitlines()
            if line.startswith("BENCH_SAMPLE ")
        ],
    )
    if run.requests == 0:
        raise PhaseError(f"wrk run {label} completed no requests")
    return run


def describe_run(run: HttpRun, database: str) -> str:
    cores = f"{run.cpu['meterline'] / run.duration_s:.2f}"
    if database == "postgresql":
        cores += f" + PG {run.cpu['postgresql'] / run.duration_s:.2f}"
    cores += f" + wrk {run.cpu['wrk'] / run.duration_s:.2f}"
    return (
        f"{run.events_per_s:,.0f} events/s ({run.requests_per_s:,.0f} req/s)"
        f"  p50 {run.p50_ms:.2f} ms  p99 {run.p99_ms:.2f} ms  errors {run.error_text()}"
        f"  stored {run.stored:,} / accepted {run.accepted:,}  CPU cores {cores}"
    )


def measure_http(
    settings: Settings, database: str, op: str, setup: Setup, server: Server, counter: Counter
) -> Op:
    result = Op(database, op)
    print(f"- {database} {op}", flush=True)
    slug = f"{database}-{'v2' if op == 'v2 stream' else 'v1'}"
    start = counter.count()
    try:
        if settings.warmup > 0:
            warm = wrk_once(
                settings, op, setup, server, counter, settings.warmup, f"{slug}-warmup", False
            )
            result.warmups.append(warm)
            print(f"    warm-up: {describe_run(warm, database)}", flush=True)
        for i in range(1, settings.repeat + 1):
            run = wrk_once(
                settings, op, setup, server, counter, settings.seconds, f"{slug}-{i}", i == 1
            )
            result.runs.append(run)
            print(f"    run {i}: {describe_run(run, database)}", flush=True)
    except (PhaseError, subprocess.TimeoutExpired, OSError) as exc:
        result.failure = str(exc)
        print(f"  FAILED: {exc}", flush=True)
    if result.failure is None:
        result.whole_stored = counter.count() - start
        result.whole_accepted = sum(r.accepted for r in result.all_http)
        print(
            f"    over the whole operation: stored {result.whole_stored:,},"
            f" accepted {result.whole_accepted:,}",
            flush=True,
        )
    for r in result.all_http:
        for s in r.samples:
            print(f"  ! {r.label}: a failed request answered {s[:300]}", flush=True)
        if not r.count_ok:
            print(
                f"  ! {r.label}: stored {r.stored:,} events, accepted {r.accepted:,},"
                f" sent {r.sent * r.batch:,}",
                flush=True,
            )
    return result


# --------------------------------------------------------------------------- raw floor


def scratch_table(name: str):
    """A table with the columns, types and indexes of meterline's `meter_events`, named `name`
    (its constraints and indexes renamed to match)."""
    import sqlalchemy as sa

    from meterline.store.tables import meter_events

    table = meter_events.to_metadata(sa.MetaData(), name=name)
    for obj in [*table.constraints, *table.indexes]:
        if obj.name and "meter_events" in str(obj.name):
            obj.name = str(obj.name).replace("meter_events", name)
    return table


def raw_phase(settings: Settings, database: str, url: str, setup: Setup, batch: int) -> Op:
    from meterline.store.db import WRITER_CACHE_KIB, make_engine

    op = Op(database, f"raw executemany, {batch:,} rows per transaction")
    print(f"- {database} {op.name}", flush=True)
    name = f"ingest_raw_{batch}"
    table = scratch_table(name)
    engine = make_engine(url)
    conn: Any = None
    try:
        table.drop(engine, checkfirst=True)
        table.create(engine)
        columns = [c.name for c in table.columns if c.name != "seq"]
        unfilled = [c for c in columns if c not in RAW_COLUMNS]
        missing = [c for c in RAW_COLUMNS if c not in columns]
        if missing:
            raise PhaseError(f"meter_events has no column {', '.join(missing)} any more")
        quote = engine.dialect.identifier_preparer.quote
        ph = "?" if database == "sqlite" else "%s"
        sql = (
            f"INSERT INTO {quote(name)} ({', '.join(quote(c) for c in RAW_COLUMNS)})"
            f" VALUES ({', '.join([ph] * len(RAW_COLUMNS))})"
        )
        if unfilled:
            print(f"  columns left to their defaults: {', '.join(unfilled)}", flush=True)

        # Pieces of meterline-shaped rows: the payload as the JSON text meterline stores (the
        # object as received), the value as the driver gets it from meterline.
        rng = random.Random(batch)
        pieces = []
        for _ in range(4096):
            customer = rng.choice(setup.customers)
            value = str(rng.randint(1, 1000))
            payload = json.dumps(
                {"stripe_customer_id": customer, "value": value, "model": rng.choice(MODELS)},
                separators=(",", ":"),
            )
            pieces.append((customer, value if database == "sqlite" else Decimal(value), payload))
        account = "acct_" + secrets.token_hex(8)
        nonce = secrets.token_hex(4)
        serial = [0]

        def rows() -> list[tuple]:
            now = int(time.time())
            out = []
            n0 = serial[0]
            for j in range(batch):
                customer, value, payload = pieces[(n0 + j) * 7 % 4096]
                out.append(
                    (
                        f"raw-{nonce}-{n0 + j}",
                        account,
                        False,
                        now,
                        setup.meter_id,
                        customer,
                        EVENT_NAME,
                        now,
                        value,
                        payload,
                        None,
                    )
                )
            serial[0] += batch
            return out

        if database == "sqlite":
            conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")  # as meterline's writers
            backend = []

            def insert(batch_rows: list[tuple]) -> None:
                conn.execute("BEGIN")
                conn.executemany(sql, batch_rows)
                conn.execute("COMMIT")
        else:
            import psycopg

            conn = psycopg.connect(url)
            backend = [conn.info.backend_pid]

            def insert(batch_rows: list[tuple]) -> None:
                with conn.cursor() as cur:
                    cur.executemany(sql, batch_rows)
                conn.commit()

        def one_run(seconds: float, label: str) -> RawRun:
            inserted, timed = 0, 0.0
            cpu0 = (self_cpu(), cpu_seconds(backend))
            start = time.perf_counter()
            while timed < seconds:
                batch_rows = rows()
                t0 = time.perf_counter()
                insert(batch_rows)
                timed += time.perf_counter() - t0
                inserted += len(batch_rows)
            wall = time.perf_counter() - start
            cpu = {"driver": self_cpu() - cpu0[0], "postgresql": cpu_seconds(backend) - cpu0[1]}
            return RawRun(label, inserted, timed, wall, cpu)

        slug = f"{database}-raw{batch}"
        if settings.warmup > 0:
            warm = one_run(settings.warmup, f"{slug}-warmup")
            op.warmups.append(warm)
            print(f"    warm-up: {warm.rows_per_s:,.0f} rows/s", flush=True)
        for i in range(1, settings.repeat + 1):
            run = one_run(settings.seconds, f"{slug}-{i}")
            op.runs.append(run)
            print(
                f"    run {i}: {run.rows_per_s:,.0f} rows/s ({run.rows:,} rows,"
                f" {run.seconds:.1f} s in the driver of {run.wall_s:.1f} s)",
                flush=True,
            )
    except PhaseError as exc:
        op.failure = str(exc)
        print(f"  FAILED: {exc}", flush=True)
    except Exception as exc:  # a driver error: report it, do not lose the other phases
        op.failure = f"{type(exc).__name__}: {exc}"
        print(f"  FAILED: {op.failure}", flush=True)
    finally:
        if conn is not None:
            conn.close()
        try:
            table.drop(engine, checkfirst=True)
        except Exception as exc:  # noqa: BLE001
            print(f"  could not drop {name}: {exc}", flush=True)
        engine.dispose()
    return op


# --------------------------------------------------------------------------- phases


def database_url(database: str) -> str:
    return f"sqlite:///{OUT / 'ingest.db'}" if database == "sqlite" else PG_URL


def remove_sqlite(url: str) -> None:
    path = url.removeprefix("sqlite:///")
    for suffix in ("", "-wal", "-shm", ".writelock"):
        Path(path + suffix).unlink(missing_ok=True)


def phase_run(settings: Settings, database: str, info: dict) -> Phase:
    phase = Phase(database, load_before=loadavg())
    t_start = time.perf_counter()
    print(f"\n== {database}", flush=True)
    url = database_url(database)
    log = OUT / f"meterline-{database}.log"
    log.write_text("")
    server: Server | None = None
    counter: Counter | None = None
    setup: Setup | None = None
    try:
        if database == "sqlite":
            remove_sqlite(url)
        else:
            info["postgresql"] = recreate_postgres_database(PG_DATABASE)
        run_cli(["migrate", "--database-url", url], log)
        api_key = run_cli(["keys", "create", "--new-account", "--database-url", url], log)
        api_key = api_key.strip().splitlines()[-1].strip()
        if not api_key.startswith("sk_"):
            raise PhaseError(f"`meterline keys create` printed no key last: {api_key!r}")

        port = free_port()
        base = f"http://127.0.0.1:{port}"
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
            ],
            log,
        )

        def ready() -> str | None:
            status, _ = call("GET", f"{base}/v1/customers?limit=1", api_key, timeout=2)
            return None if status == 200 else f"GET /v1/customers answered {status}"

        server.start()
        server.wait_ready(ready, timeout=START_TIMEOUT)
        setup = create_objects(base, api_key, database)
        counter = Counter(database, url)
        smoke_test(setup, counter)

        for op in OPS:
            phase.ops.append(measure_http(settings, database, op, setup, server, counter))
            if not server.alive():
                break
        phase.error_reports = counter.count("meter_event_error_reports")
        if phase.error_reports:
            print(
                f"  ! {phase.error_reports} meter event error reports: the stream refused events",
                flush=True,
            )
    except (PhaseError, subprocess.TimeoutExpired, OSError) as exc:
        phase.failure = str(exc)
        print(f"  FAILED: {exc}", flush=True)
    except Exception as exc:  # psycopg and the rest: report, do not lose the other phase
        phase.failure = f"{type(exc).__name__}: {exc}"
        print(f"  FAILED: {phase.failure}", flush=True)
    finally:
        if counter is not None:
            counter.close()
        if server is not None:
            server.stop()
    for op in OPS:
        if not any(o.name == op for o in phase.ops):
            phase.ops.append(Op(database, op, failure="not run: " + (phase.failure or "see log")))
    if server is not None and phase.failure and "log tail" not in phase.failure:
        phase.notes.append(f"server log tail:\n{log_tail(log, 15)}")

    if setup is not None:
        for batch in RAW_BATCHES:
            phase.ops.append(raw_phase(settings, database, url, setup, batch))
    phase.load_after = loadavg()
    phase.wall_s = time.perf_counter() - t_start
    return phase


def cleanup(database: str, keep: bool) -> None:
    if keep:
        return
    if database == "sqlite":
        remove_sqlite(database_url(database))
    else:
        drop_postgres_database(PG_DATABASE)


# --------------------------------------------------------------------------- report


HEADER = [
    "database",
    "operation",
    "events/s",
    "spread events/s",
    "req/s",
    "p50 ms",
    "p99 ms",
    "failed requests",
    "stored = accepted?",
    "CPU cores: meterline / PostgreSQL / wrk",
    "ratio to raw, 100 rows/txn",
    "ratio to raw, 10,000 rows/txn",
    "target",
    "met?",
]


def count_text(op: Op) -> str:
    runs = op.all_http
    stored = sum(r.stored for r in runs) if op.whole_stored is None else op.whole_stored
    accepted = sum(r.accepted for r in runs)
    if not op.count_ok:
        return f"NO: stored {stored:,}, accepted {accepted:,}"
    extra = stored - accepted
    return "yes, exactly" if extra == 0 else f"yes, + {extra:,} in flight at wrk's stop"


def table_rows(phases: list[Phase]) -> list[list[str]]:
    out = []
    for ph in phases:
        raw = {op.name: op.median for op in ph.ops if op.name.startswith("raw") and op.median}
        raw_rates = [raw.get(f"raw executemany, {b:,} rows per transaction") for b in RAW_BATCHES]
        for op in ph.ops:
            med = op.median
            target = TARGETS.get((ph.database, op.name))
            target_s = f"≥ {target:,} events/s, no failure" if target else ""
            if op.failure or med is None:
                cells = ["FAILED (see below)"] + [""] * (len(HEADER) - 5)
                out.append([ph.database, op.name, *cells, target_s, "no" if target else ""])
                continue
            rates = [op.rate(r) for r in op.runs]
            spread = f"{min(rates):,.0f}–{max(rates):,.0f}" if len(rates) > 1 else "(1 run)"
            if isinstance(med, RawRun):
                ratios = [
                    "100%" if r is med else (f"{med.rows_per_s / r.rows_per_s:.1%}" if r else "")
                    for r in raw_rates
                ]
                cpu = f"driver {med.cpu['driver'] / med.wall_s:.2f} / " + (
                    f"{med.cpu['postgresql'] / med.wall_s:.2f}"
                    if ph.database == "postgresql"
                    else "–"
                )
                cpu += " / –"
                out.append(
                    [ph.database, op.name, f"{med.rows_per_s:,.0f} rows/s", spread]
                    + ["", "", "", "", "", cpu, *ratios, "", ""]
                )
                continue
            d = med.duration_s
            cpu = f"{med.cpu['meterline'] / d:.2f} / " + (
                f"{med.cpu['postgresql'] / d:.2f}" if ph.database == "postgresql" else "–"
            )
            cpu += f" / {med.cpu['wrk'] / d:.2f}"
            ratios = [f"{med.events_per_s / r.rows_per_s:.1%}" if r else "n/a" for r in raw_rates]
            errors = op.errors
            if target:
                met = "yes" if med.events_per_s >= target and errors == 0 else "no"
                if errors:
                    met += " (failures)"
            else:
                met = ""
            out.append(
                [
                    ph.database,
                    op.name,
                    f"{med.events_per_s:,.0f}",
                    spread,
                    f"{med.requests_per_s:,.0f}",
                    f"{med.p50_ms:.2f}",
                    f"{med.p99_ms:.2f}",
                    "0" if not errors else f"{errors:,}",
                    count_text(op),
                    cpu,
                    *ratios,
                    target_s,
                    met,
                ]
            )
    return out


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADER)]
    print("\n" + "  ".join(h.ljust(w) for h, w in zip(HEADER, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


def problems(phases: list[Phase]) -> list[str]:
    """Every failure, error and count mismatch, one text each."""
    out = []
    for ph in phases:
        if ph.failure:
            out.append(f"{ph.database}: setup or server failed: {ph.failure}")
        for op in ph.ops:
            if op.failure and not (ph.failure and op.failure.startswith("not run")):
                out.append(f"{ph.database} {op.name}: failed: {op.failure}")
            for r in op.all_http:
                if r.errors:
                    sample = f"; first failure: {r.samples[0][:300]}" if r.samples else ""
                    out.append(f"{r.label}: errors {r.error_text()}{sample}")
                if not r.count_ok:
                    out.append(
                        f"{r.label}: stored {r.stored:,} events, but accepted"
                        f" {r.accepted:,} and sent {r.sent * r.batch:,}"
                    )
        if ph.error_reports:
            out.append(
                f"{ph.database}: {ph.error_reports} meter event error reports (events the stream"
                " refused)"
            )
    return out


def write_report(
    phases: list[Phase], settings: Settings, info: dict, argv: list[str], started: dt.datetime
) -> None:
    from meterline.store.db import WRITER_CACHE_KIB

    invocation = ".venv/bin/python bench/ingest.py" + (" " + shlex.join(argv) if argv else "")
    pg = f", PostgreSQL {info['postgresql']}" if info.get("postgresql") else ""
    runs = f"{settings.repeat} measured run{'s' if settings.repeat > 1 else ''}"
    warm = f"a {settings.warmup} s warm-up run" if settings.warmup else "no warm-up"
    loads = "; ".join(
        f"{ph.database} {ph.load_before} before, {ph.load_after} after" for ph in phases
    )
    md = [
        BEGIN_MARKER,
        "## Meter event ingest",
        "",
        "<!-- Generated by bench/ingest.py; replaced on each run. -->",
        "",
        f"- Date: {started.strftime('%Y-%m-%d %H:%M UTC')}; total wall time"
        f" {sum(ph.wall_s for ph in phases) / 60:.1f} min.",
        f"- Machine: {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']},"
        f" {info['python']}, SQLite {sqlite3.sqlite_version}{pg}, {info['wrk']}. Client, server"
        " and database share the machine, and so do other engineers' test runs (load average:"
        f" {loads}): expect noise.",
        f"- meterline commit: {info['commit']}",
        f"- Command: `{invocation}`"
        + (
            " with "
            + ", ".join(f"`{k}={v}`" for k, v in sorted(info["env"].items()))
            + " in the environment (the server inherits it)"
            if info.get("env")
            else ""
        )
        + ".",
        "- Setup per database: a fresh SQLite file (WAL, synchronous=NORMAL) or the PostgreSQL"
        f" database `{PG_DATABASE}` dropped and recreated; `meterline migrate`, `meterline keys"
        " create --new-account`, `meterline serve --workers 2`; through the API one meter"
        f' (`{EVENT_NAME}`, sum, dimension_payload_keys ["model"]) and {CUSTOMERS:,} customers.',
        f"- Load: wrk `-t{settings.threads} -d{settings.seconds}s --timeout={WRK_TIMEOUT}s --latency"
        f" -s {LUA}` (a {WRK_TIMEOUT} s timeout rather than wrk's 2 s: a slow answer shows in"
        " p99, not as a failure), each"
        f" operation {warm} then {runs} of {settings.seconds} s; the table shows the median run"
        " by events/s (its req/s, p50, p99 and CPU), the spread is the lowest–highest of the"
        " measured runs, and failed requests are summed over all runs, warm-up included.",
        f"  - v2 stream: `-c{settings.connections['v2 stream']}`, POST"
        f" /v2/billing/meter_event_stream with {STREAM_BATCH} events per JSON request, each with"
        f" a unique identifier, a random customer of the {CUSTOMERS:,}, a random `model` of 4, a"
        " value from 1 to 1000 and the current time; the token of a meter event session made"
        " before each run.",
        f"  - v1 events: `-c{settings.connections['v1 events']}`, POST /v1/billing/meter_events,"
        " one form-encoded event per request (same payload shape, a unique identifier, no"
        " timestamp), the secret key.",
        "- events/s = 2xx responses × events per request ÷ wrk's duration. Stored = accepted:"
        " `meter_events` is counted around every run once the server is idle and its drain has"
        " emptied the stream's landing log (the stream's 200 means accepted into that log; the"
        " drain moves it into `meter_events` every 2 seconds); it must hold at"
        " least every accepted event and at most every sent one (requests still in flight when"
        " wrk stops are completed by the server after wrk has gone; they are the `+ n`), and"
        " from before the warm-up to after the last run the rows added must cover every"
        " accepted event (the table's `+ n` is counted that way). The"
        " stream leaves invalid events out and reports them in `meter_event_error_reports`,"
        " which must stay empty"
        + "".join(
            f"; {ph.database}: {ph.error_reports}" for ph in phases if ph.error_reports is not None
        )
        + ".",
        "- CPU cores: CPU seconds ÷ wall seconds of the median run, for the server's processes"
        " (the uvicorn parent and its 2 workers; for the raw floor, the benchmark's own Python"
        " process, `driver`), the PostgreSQL backends connected to the database, and wrk."
        f" {info['nproc']} cores are all there is.",
        "- Raw floor: after the server stopped, on the same database, one plain driver"
        " connection (sqlite3 with WAL, synchronous=NORMAL and meterline's writer page cache of"
        f" {WRITER_CACHE_KIB // 1024} MiB; psycopg with durable commits)"
        " inserts rows shaped like meterline's (payload JSON text, value as meterline binds it)"
        " with `executemany` into a scratch table made from meterline's `meter_events` table"
        " definition (same columns, types, unique key and indexes), committing every 100 rows"
        " (one stream request's worth; meterline's concurrent requests share transactions, so"
        " it may exceed this) or every 10,000 rows (the bulk rate); each batch size in its own"
        " table, growing over its warm-up and measured runs like meterline's. Timed: executemany"
        " and COMMIT only. Ratios: meterline events/s ÷ raw rows/s of the same database.",
        "- Targets (issue 3): the v2 stream at least 50,000 events/s on SQLite with no failed"
        " request; v1 at least 2,000 events/s (checked on both databases).",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    md += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in table_rows(phases)]
    found = problems(phases)
    if found:
        md += ["", "Failures and errors:", ""]
        md += ["- " + p.replace("\n", " ") for p in found]
    md += ["", "Raw wrk output and server logs: `bench/out/ingest/` (not committed).", END_MARKER]
    block = "\n".join(md) + "\n"

    text = REPORT.read_text() if REPORT.exists() else f"# Performance\n\n{OTHER_MARKER}\n"
    if BEGIN_MARKER in text and END_MARKER in text:
        head, rest = text.split(BEGIN_MARKER, 1)
        tail = rest.split(END_MARKER, 1)[1].lstrip("\n")
        text = head + block + ("\n" + tail if tail else "")
    elif METERING_END in text:
        head, tail = text.split(METERING_END, 1)
        tail = tail.lstrip("\n")
        text = head + METERING_END + "\n\n" + block + ("\n" + tail if tail else "")
    else:
        if OTHER_MARKER not in text:
            text = text.rstrip("\n") + f"\n\n{OTHER_MARKER}\n"
        text = text.rstrip("\n") + "\n\n" + block
    REPORT.write_text(text)
    print(f"\nwrote {REPORT}")


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds",
        type=int,
        default=int(os.environ.get("BENCH_SECONDS", "10")),
        help="measured duration per run (default: $BENCH_SECONDS or 10)",
    )
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds (0: none)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="measured runs; the median is reported (default 3)"
    )
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument(
        "--v2-connections", type=int, default=16, help="wrk connections for the stream (16)"
    )
    parser.add_argument(
        "--v1-connections", type=int, default=32, help="wrk connections for v1 events (32)"
    )
    parser.add_argument("--only", choices=["sqlite", "postgresql"], action="append")
    parser.add_argument(
        "--keep", action="store_true", help="keep the SQLite file and the PostgreSQL database"
    )
    parser.add_argument("--no-report", action="store_true", help="do not write PERFORMANCE.md")
    args = parser.parse_args(argv)
    if args.seconds < 1:
        parser.error("--seconds must be at least 1")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup cannot be negative")

    started = dt.datetime.now(dt.UTC)
    OUT.mkdir(parents=True, exist_ok=True)
    # Two runs at once would share the SQLite file and the PostgreSQL database.
    lock = (OUT / ".lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("another bench/ingest.py is running (bench/out/ingest/.lock)", file=sys.stderr)
        return 1
    wrk = ensure_wrk()
    settings = Settings(
        wrk,
        args.threads,
        args.seconds,
        args.warmup,
        args.repeat,
        {"v2 stream": args.v2_connections, "v1 events": args.v1_connections},
    )
    info = machine_info(wrk)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    if dirty:
        info["commit"] += " (src/ has uncommitted changes)"
    # Settings the server reads from the environment change what is measured: name them.
    # (Never keys or URLs, which may hold secrets.)
    info["env"] = {
        k: v
        for k, v in os.environ.items()
        if k.startswith("METERLINE_") and not any(w in k for w in ("KEY", "URL", "SECRET"))
    }
    print(
        f"{info['nproc']} CPUs ({info['cpu']}), {info['python']}, SQLite {sqlite3.sqlite_version},"
        f" {info['wrk']}; {settings.repeat} run(s) of {settings.seconds} s per operation",
        flush=True,
    )

    phases: list[Phase] = []
    try:
        for database in args.only or ["sqlite", "postgresql"]:
            try:
                phases.append(phase_run(settings, database, info))
            finally:
                cleanup(database, args.keep)
    except KeyboardInterrupt:
        print("\ninterrupted: no report written", file=sys.stderr)
        return 130

    print_table(table_rows(phases))
    found = problems(phases)
    for p in found:
        print(f"\n! {p}")
    for ph in phases:
        for note in ph.notes:
            print(f"\n{ph.database}: {note}")
    (OUT / "results.json").write_text(
        json.dumps(
            {
                "started": started.isoformat(),
                "machine": info,
                "argv": argv,
                "settings": {k: v for k, v in asdict(settings).items() if k != "wrk"},
                "phases": [asdict(ph) for ph in phases],
            },
            indent=2,
            default=str,
        )
    )
    if not args.no_report:
        write_report(phases, settings, info, argv, started)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
