"""meterline billing benchmark (issue 4, "Speed"): `make bench` runs `.venv/bin/python bench/billing.py`.

    .venv/bin/python bench/billing.py [--only sqlite|postgresql] [--subscriptions N]
                                      [--events-per-customer N] [--queries N] [--seed N]
                                      [--keep] [--no-report]

For SQLite (a fresh file in bench/out/billing/) and PostgreSQL (the database
`meterline_billing`, dropped and recreated):

1. Setup. T0 is the first second (UTC) of the month that holds the day 40 days ago, T1 one month
   later (the end of the subscriptions' first period) and T2 one month after T1. `meterline
   migrate` and `meterline keys create --new-account` make the account; then, in this process,
   with meterline's clock fixed at T0 (`clock.FixedClock`) and through meterline's own services
   (`Repo` on `Database.write()`, 1,000 customers per transaction, each followed on PostgreSQL
   by an ANALYZE of the tables it grew: the bench server runs with autovacuum off, and without
   statistics a read by id may be planned on another index and scan the whole account): one
   meter (`sum`, no
   dimensions), one product, one monthly metered price on it, graduated: 1 ¢ per unit up to
   2,000 units, 0.5 ¢ up to 10,000, then 0.25 ¢ plus a 100 ¢ flat fee; and, per customer
   (--subscriptions, default 10,000): the customer, 3 credit grants in usd
     - promotional, priority 10, 1,000 ¢, price_type=metered, expiring at T0 + 45 days (alive at
       the run),
     - paid, priority 20, 1,500 ¢, scoped to the price, never expiring,
     - promotional, priority 30, 2,000 ¢, price_type=metered, expiring at T0 + 20 days (before
       the run: its finalization's settle writes a `credits_expired` of 2,000 ¢),
   and a subscription to the price (`services.subscriptions.create`, which also makes and
   finalizes its first, empty invoice). Then the meter events: --events-per-customer on average
   (default 100; each customer's share is drawn from a uniform weight in [0.02, 1.98], so some
   customers use little and some twice the average), values with 3 decimals from 0.001 to 200,
   timestamps spread over [T0, T1) in arrival order (`created` = `timestamp`), inserted straight
   into `meter_events` with the columns and encodings meterline writes (SQLite: executemany in
   one transaction; PostgreSQL: COPY), its secondary indexes (and PostgreSQL's unique key) set
   aside during the load and made again after it, then `VACUUM ANALYZE` on PostgreSQL (what
   autovacuum would soon do) and `meterline rollups rebuild`.
2. Invoice run (timed, issue target: under 60 s): `meterline invoices run --now T1+3601
   --no-progress` as a subprocess, wall clock around it. It renews every subscription at T1 (a
   draft with the month's metered usage, read from rollups) and finalizes every draft at
   T1 + 3600, applying credits in burn order and writing the ledger: 2 steps per subscription,
   in whatever transactions `services.due_work.bill_due` groups them. This script polls the
   invoice count once a second for its progress bar. Reported: invoices/s = subscriptions /
   wall seconds, and steps/s.
3. Checks of the run, in SQL through meterline's tables: every cycle invoice is finalized at
   T1 + 3600 for [T0, T1), open (or paid when nothing is due), subtotal - credited = amount_due,
   its one metered line carries the same amounts, credited = min(subtotal, 2,500) (the two live
   grants); the `credits_applied` entries add up to the invoices' credits; every expiring
   grant's remainder was debited; no grant's balance is below 0; every subscription moved to
   [T1, T2); and for 5 customers (seeded pick, plus the smallest and the largest user) the line's
   quantity is the exact sum of their events and its amount the graduated price of that sum,
   computed here independently.
4. Ledger reads (issue target: p50 under 10 ms). Two more customers, made in-process through
   the same services at T0, each get a ledger of exactly 1,000 credit balance transactions once
   `services.due_work.bill_due` at T1 + 3601 has renewed and finalized their subscriptions (10
   events of 100 units each: 1,000 ¢ per metered line and cycle), in two shapes:
     - 501 grants of 500 ¢ (99 promotional ones expiring at T0 + 10 days, 402 paid ones that
       never expire) and 200 subscriptions to the price: 501 `credits_granted`, 99
       `credits_expired`, 400 `credits_applied` (each invoice empties two grants); 1,000 ¢ left;
     - 10 grants of 100,000 ¢ and 55 subscriptions of 18 metered prices (1 ¢ per unit, same
       meter): 10 `credits_granted`, 990 `credits_applied` (one per line); 10,000 ¢ left.
   Then `meterline serve --workers 2 --jobs-interval 0`
   (the background jobs off: the wall clock has moved past some of the data set's expiries and
   their settling would write during the timing) and, through HTTP (httpx, one keep-alive
   connection, sequential requests, timed from sending the request to the whole body read), 20
   warm-up requests then --queries timed ones (default 200) of each of
     GET /v1/billing/credit_balance_summary?customer=..&filter[type]=applicability_scope
         &filter[applicability_scope][price_type]=metered
     GET /v1/billing/credit_balance_transactions?customer=..&limit=100   (and limit=10)
   The summary's ledger and available balances must equal the ledger's sum in SQL, and the
   lists the newest entries in SQL order.
5. Print the results and write them into docs/PERFORMANCE.md between the
   `<!-- bench:billing -->` markers, after the ingest block.

Logs and results.json go to bench/out/billing/ (not committed); the SQLite file and the
PostgreSQL database are removed at the end unless --keep. The exit status is 1 when a phase
failed or a check found a wrong answer; a missed target is reported, not failed.
"""

from __future__ import annotations

import argparse
import calendar
import datetime as dt
import json
import os
import random
import re
import shlex
import sqlite3
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.metering import (  # noqa: E402
    INSERT_COLUMNS,
    machine,
    make_account,
    pct,
    progress,
    worker_memory,
)
from bench.run import (  # noqa: E402
    PhaseError,
    Server,
    free_port,
    loadavg,
    meterline_cli,
    recreate_postgres_database,
    run_logged,
)

OUT = ROOT / "bench" / "out" / "billing"
REPORT = ROOT / "docs" / "PERFORMANCE.md"
OTHER_MARKER = "<!-- bench:other -->"
INGEST_END = "<!-- /bench:ingest -->"
BEGIN_MARKER = "<!-- bench:billing -->"
END_MARKER = "<!-- /bench:billing -->"

PG_DATABASE = "meterline_billing"
PG_URL = os.environ.get(
    "BENCH_BILLING_POSTGRES_URL", f"postgresql://postgres@127.0.0.1:5432/{PG_DATABASE}"
)
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

DAY = 86_400
FINALIZE_AFTER = 3600  # services.invoices.FINALIZE_AFTER, checked at startup
CUSTOMERS_PER_TXN = 1000
EVENT_CHUNK = 100_000
EVENT_NAME = "bench_api_calls"

# (up_to units or None, unit amount in cents, flat amount in cents): graduated.
TIERS = [(2000, Decimal(1), 0), (10_000, Decimal("0.5"), 0), (None, Decimal("0.25"), 100)]
# Per customer: (category, priority, cents, scope "metered" or "price", expires after T0 + days)
GRANTS = [
    ("promotional", 10, 1000, "metered", 45),
    ("paid", 20, 1500, "price", None),
    ("promotional", 30, 2000, "metered", 20),
]
LIVE_CREDIT = 1000 + 1500  # the grants still alive at T1 + 3600
EXPIRED_CREDIT = 2000

RUN_TARGET_S = 60.0
RUN_TARGET_N = 10_000
READ_TARGET_MS = 10.0
WARMUP = 20


# ------------------------------------------------------------------------------- time


def month_start(t: int) -> int:
    d = dt.datetime.fromtimestamp(t, dt.UTC)
    return calendar.timegm((d.year, d.month, 1, 0, 0, 0))


def add_month(t: int) -> int:
    d = dt.datetime.fromtimestamp(t, dt.UTC)
    y, m = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return calendar.timegm((y, m, 1, 0, 0, 0))


def utc(t: int) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# ------------------------------------------------------------------------- data set


@dataclass
class DataSet:
    subscriptions: int
    per_customer: int
    seed: int
    t0: int
    t1: int
    t2: int
    account_id: str = ""
    api_key: str = ""
    meter: str = ""
    price: str = ""
    customers: list[str] = field(default_factory=list)
    events: int = 0
    ledger_customers: dict[str, str] = field(default_factory=dict)

    @property
    def run_at(self) -> int:
        return self.t1 + FINALIZE_AFTER + 1


def graduated_cents(quantity: Decimal) -> int:
    """The price of TIERS for a quantity, rounded half-up once (written here, independently of
    meterline's engine.pricing, to check its answers)."""
    if quantity <= 0:
        return 0
    total, lower = Decimal(0), Decimal(0)
    for up_to, unit, flat in TIERS:
        if quantity <= lower:
            break
        upper = quantity if up_to is None else min(quantity, Decimal(up_to))
        total += (upper - lower) * unit + flat
        if up_to is None:
            break
        lower = Decimal(up_to)
    return int(total.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def build_catalog(db, ds: DataSet) -> None:
    """The meter, the product and the graduated metered price, through meterline's services."""
    from meterline.engine.catalog import PRICE_NAMES, PriceSpec, Recurring, Tier
    from meterline.services import catalog, meters
    from meterline.store.repo import Repo, Scope

    with db.write() as conn:
        repo = Repo(conn, Scope(ds.account_id, False))
        meter = meters.create(
            repo,
            dict(
                display_name="API calls",
                event_name=EVENT_NAME,
                formula="sum",
                customer_key="stripe_customer_id",
                value_key="value",
                event_time_window=None,
                dimension_payload_keys=[],
            ),
        )
        product = catalog.create_product(repo, {"name": "API"}, {})
        tiers = tuple(
            Tier(
                up_to=up_to,
                unit_amount=int(unit) if unit == unit.to_integral_value() else None,
                unit_amount_decimal=None if unit == unit.to_integral_value() else unit,
                flat_amount=flat or None,
            )
            for up_to, unit, flat in TIERS
        )
        spec = PriceSpec(
            currency="usd",
            billing_scheme="tiered",
            tiers=tiers,
            tiers_mode="graduated",
            recurring=Recurring("month", 1, "metered", meter["id"]),
        )
        price = catalog.create_price(
            repo,
            spec,
            PRICE_NAMES,
            product_id=product["id"],
            product_data=None,
            fields={},
            metadata={},
        )
    ds.meter, ds.price = meter["id"], price["id"]


# The tables the setup fills, analyzed after each of its transactions on PostgreSQL.
SETUP_TABLES = (
    "customers",
    "credit_grants",
    "credit_balance_transactions",
    "subscriptions",
    "subscription_items",
    "invoices",
    "invoice_lines",
)


def analyze(url: str, tables: tuple[str, ...] = ()) -> None:
    """PostgreSQL: fresh planner statistics, as autovacuum would make them as tables grow (the
    bench's server runs with autovacuum off; without statistics, point reads by id can be planned
    on another index of the account and scan every row of it)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE " + ", ".join(tables) if tables else "ANALYZE")


def build_customers(db, ds: DataSet, url: str) -> None:
    """Customers, their 3 grants and their subscription, 1,000 customers per transaction."""
    from meterline.services import credits, subscriptions
    from meterline.services import customers as customers_service
    from meterline.store.repo import Repo, Scope

    scope = Scope(ds.account_id, False)
    n = ds.subscriptions
    t0 = time.perf_counter()
    with progress() as bar:
        task = bar.add_task("customers + 3 grants + subscription", total=n, rate="")
        for i0 in range(0, n, CUSTOMERS_PER_TXN):
            with db.write() as conn:
                repo = Repo(conn, scope)
                for i in range(i0, min(n, i0 + CUSTOMERS_PER_TXN)):
                    cust = customers_service.create(
                        repo,
                        {"name": f"Customer {i:05d}", "email": f"customer{i:05d}@example.com"},
                        {},
                    )
                    cid = cust["id"]
                    for category, priority, cents, scope_kind, days in GRANTS:
                        credits.create(
                            repo,
                            credits.GrantInput(
                                customer=cid,
                                currency="usd",
                                amount=cents,
                                category=category,
                                priority=priority,
                                effective_at=None,
                                expires_at=None if days is None else ds.t0 + days * DAY,
                                prices=[ds.price] if scope_kind == "price" else None,
                                name=f"{category} p{priority}",
                                metadata={},
                            ),
                        )
                    sub = subscriptions.create(
                        repo,
                        subscriptions.SubscriptionInput(
                            customer=cid,
                            items=[
                                subscriptions.ItemInput(price=ds.price, param="items[0][price]")
                            ],
                        ),
                    )
                    if sub["current_period_end"] != ds.t1:
                        raise PhaseError(
                            f"subscription {sub['id']} ends its first period at "
                            f"{sub['current_period_end']}, not T1 = {ds.t1}"
                        )
                    ds.customers.append(cid)
            if db.dialect == "postgresql":
                analyze(url, SETUP_TABLES)
            done = min(n, i0 + CUSTOMERS_PER_TXN)
            bar.update(task, completed=done, rate=f"{done / (time.perf_counter() - t0):,.0f}/s")


# --------------------------------------------------------------------------- events


def event_chunks(ds: DataSet):
    """Lists of (i, customer index, timestamp, value text), in arrival order over [T0, T1)."""
    rng = random.Random(ds.seed)
    nc = len(ds.customers)
    weights = [rng.uniform(0.02, 1.98) for _ in range(nc)]
    cum, acc = [], 0.0
    for w in weights:
        acc += w
        cum.append(acc)
    n = nc * ds.per_customer
    span = ds.t1 - ds.t0
    rand, randint = rng.random, rng.randint
    for i0 in range(0, n, EVENT_CHUNK):
        k = min(EVENT_CHUNK, n - i0)
        custs = rng.choices(range(nc), cum_weights=cum, k=k)
        out = []
        for j in range(k):
            i = i0 + j
            v = randint(1, 200_000)
            # (i + u) * span / n with u in [0, 1): non-decreasing, inside [T0, T1)
            out.append((i, custs[j], ds.t0 + (i * span + int(rand() * span)) // n, _milli(v)))
        yield out


def _milli(v: int) -> str:
    return f"{v // 1000}.{v % 1000:03d}"


def payload(customer: str, value: str) -> str:
    # As meterline stores it: orjson's compact text of the payload as received.
    return f'{{"stripe_customer_id":"{customer}","value":"{value}"}}'


def insert_events(database: str, url: str, ds: DataSet, rows_iter, total: int, label: str) -> None:
    """Rows (event id, customer id, timestamp, value text) straight into meter_events."""
    acct, meter = ds.account_id, ds.meter
    t0 = time.perf_counter()
    with progress() as bar:
        task = bar.add_task(label, total=total, rate="")
        done = 0
        if database == "sqlite":
            conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
            conn.execute("PRAGMA busy_timeout=30000")
            sql = f"INSERT INTO meter_events ({INSERT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)"
            conn.execute("BEGIN IMMEDIATE")
            for chunk in rows_iter:
                conn.executemany(
                    sql,
                    [
                        (eid, acct, 0, ts, meter, cust, EVENT_NAME, ts, v, payload(cust, v))
                        for eid, cust, ts, v in chunk
                    ],
                )
                done += len(chunk)
                bar.update(task, completed=done, rate=_rate(done, t0, "ev/s"))
            conn.execute("COMMIT")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.close()
        else:
            import psycopg

            cols = INSERT_COLUMNS.replace("timestamp", '"timestamp"')
            with psycopg.connect(url) as conn, conn.cursor() as cur:
                with cur.copy(f"COPY meter_events ({cols}) FROM STDIN") as copy:
                    # Text format: no value holds a tab, newline or backslash.
                    for chunk in rows_iter:
                        copy.write(
                            "".join(
                                f"{eid}\t{acct}\tf\t{ts}\t{meter}\t{cust}\t{EVENT_NAME}\t{ts}"
                                f"\t{v}\t{payload(cust, v)}\n"
                                for eid, cust, ts, v in chunk
                            ).encode()
                        )
                        done += len(chunk)
                        bar.update(task, completed=done, rate=_rate(done, t0, "ev/s"))
    if done != total:
        raise PhaseError(f"{label}: wrote {done} events, expected {total}")


def _rate(done: int, t0: float, unit: str) -> str:
    return f"{done / max(time.perf_counter() - t0, 1e-9):,.0f} {unit}"


def load_events(database: str, url: str, ds: DataSet) -> None:
    """The data set's events into the empty table, its secondary indexes (and, on PostgreSQL,
    its unique key) dropped for the load and made again after it, in bulk."""
    custs = ds.customers
    ds.events = len(custs) * ds.per_customer

    def rows():
        for chunk in event_chunks(ds):
            yield [(f"bill_evt_{i:010d}", custs[c], ts, v) for i, c, ts, v in chunk]

    restore = set_aside_event_indexes(database, url)
    insert_events(database, url, ds, rows(), ds.events, f"{database}: meter events")
    t0 = time.perf_counter()
    print(f"  making {len(restore)} indexes of meter_events again", flush=True)
    if database == "sqlite":
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        for ddl in restore:
            conn.execute(ddl)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
    else:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SET maintenance_work_mem = '256MB'")
            for ddl in restore:
                conn.execute(ddl)
    print(f"  indexes made in {time.perf_counter() - t0:,.1f} s", flush=True)


def set_aside_event_indexes(database: str, url: str) -> list[str]:
    """Drops the indexes of meter_events that a bulk load would update row by row; returns the
    statements that make them again."""
    if database == "sqlite":
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        found = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index'"
            " AND tbl_name = 'meter_events' AND sql IS NOT NULL"
        ).fetchall()
        for name, _ in found:
            conn.execute(f'DROP INDEX "{name}"')
        conn.close()
        return [ddl for _, ddl in found]
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        keys = conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = 'meter_events'::regclass AND contype = 'u'"
        ).fetchall()
        plain = conn.execute(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.tablename = 'meter_events'"
            " AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)"
        ).fetchall()
        for name, _ in keys:
            conn.execute(f'ALTER TABLE meter_events DROP CONSTRAINT "{name}"')
        for name, _ in plain:
            conn.execute(f'DROP INDEX "{name}"')
    return [f'ALTER TABLE meter_events ADD CONSTRAINT "{n}" {d}' for n, d in keys] + [
        d for _, d in plain
    ]


def vacuum_analyze(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


# -------------------------------------------------------------------------- phases


@dataclass
class Series:
    label: str
    n: int = 0
    p50: float = 0.0
    p99: float = 0.0
    mean: float = 0.0
    shape: str = ""


@dataclass
class Phase:
    database: str
    failure: str | None = None
    walls: dict[str, float] = field(default_factory=dict)
    run_wall: float = 0.0
    run_reported: float = 0.0  # the CLI's own figure (after its migrate check)
    steps: int = 0
    invoices: int = 0
    checks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)
    ledger: dict[str, Any] = field(default_factory=dict)
    workers: list[dict[str, Any]] = field(default_factory=list)
    db_size_mb: float = 0.0
    load_before: str = ""
    load_after: str = ""
    load_run: str = ""
    code: list[str] = field(default_factory=list)  # src_state() at the phase's start and end
    dataset: dict[str, Any] = field(default_factory=dict)


def src_state() -> str:
    """Which meterline code runs: the commit, plus a digest of uncommitted changes under src/
    (another engineer may be editing it), or the path of the package when it is not this
    checkout's src/ (PYTHONPATH pointing at a snapshot)."""
    import hashlib

    import meterline

    src = Path(meterline.__file__).resolve().parent.parent
    if src != ROOT / "src":
        return f"{src} (PYTHONPATH)"

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout

    commit = git("rev-parse", "--short", "HEAD").strip()
    diff = git("diff", "HEAD", "--", "src")
    return commit + (
        f" + uncommitted src/ {hashlib.sha1(diff.encode()).hexdigest()[:8]}" if diff else ""
    )


def database_url(database: str) -> str:
    if database == "sqlite":
        return f"sqlite:///{OUT / 'meterline-billing.db'}"
    return PG_URL


def database_size_mb(database: str, url: str) -> float:
    if database == "sqlite":
        path = url.removeprefix("sqlite:///")
        return (
            sum(os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s)) / 2**20
        )
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute("SELECT pg_database_size(current_database())").fetchone()[0] / 2**20


class InvoiceCounter:
    """Counts the billing run's steps from the database (drafts made + drafts finalized), for
    the progress bar: one cheap query a second on its own connection."""

    def __init__(self, database: str, url: str) -> None:
        self.database = database
        if database == "sqlite":
            self.conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
            self.conn.execute("PRAGMA busy_timeout=5000")
        else:
            import psycopg

            self.conn = psycopg.connect(url, autocommit=True)

    def steps(self) -> int:
        row = self.conn.execute(
            "SELECT count(*), coalesce(sum(CASE WHEN status <> 'draft' THEN 1 ELSE 0 END), 0)"
            " FROM invoices WHERE billing_reason = 'subscription_cycle'"
        ).fetchone()
        return int(row[0]) + int(row[1])

    def close(self) -> None:
        self.conn.close()


def timed_run(
    database: str, url: str, ds: DataSet, phase: Phase, log: Path, profile: bool = False
) -> None:
    cmd = [
        meterline_cli(),
        "invoices",
        "run",
        "--database-url",
        url,
        "--now",
        str(ds.run_at),
        "--no-progress",
    ]
    cmd_run = list(cmd)
    if profile:
        spy = Path(sys.executable).parent / "py-spy"
        if not spy.exists():
            raise PhaseError("--profile needs py-spy in the venv: .venv/bin/pip install py-spy")
        raw = OUT / f"profile-{database}.txt"
        cmd = [str(spy), "record", "--idle", "--format", "raw", "--rate", "200", "-o", str(raw)]
        cmd += ["--", *cmd_run]
    print(f"  $ {shlex.join(cmd)}", flush=True)
    with log.open("a") as fh:
        fh.write(f"$ {shlex.join(cmd)}\n")
    total = 2 * len(ds.customers)
    counter = InvoiceCounter(database, url)
    out_path = OUT / f"invoices-run-{database}.out"
    phase.load_run = loadavg()
    try:
        with out_path.open("w") as out, progress() as bar:
            task = bar.add_task(f"{database}: meterline invoices run", total=total, rate="")
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
            while True:
                try:
                    proc.wait(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    pass
                try:
                    done = counter.steps()
                except Exception:  # noqa: BLE001 - a busy poll is skipped, never fatal
                    continue
                bar.update(task, completed=done, rate=_rate(done, t0, "steps/s"))
            phase.run_wall = time.perf_counter() - t0
            bar.update(task, completed=counter.steps())
    finally:
        counter.close()
    text = out_path.read_text()
    with log.open("a") as fh:
        fh.write(text)
    if proc.returncode != 0:
        raise PhaseError(f"meterline invoices run exited {proc.returncode}: {text.strip()[-2000:]}")
    m = re.search(r"Ran ([\d,]+) billing steps .* in ([\d.]+) s", text)
    if not m:
        raise PhaseError(f"cannot read the run's summary line: {text.strip()[-500:]}")
    phase.steps = int(m.group(1).replace(",", ""))
    phase.run_reported = float(m.group(2))
    if "failed" in text:
        phase.problems.append("the billing run logged failed steps (see invoices-run log)")
    if phase.steps != total:
        phase.problems.append(f"the run ran {phase.steps:,} steps, expected {total:,}")
    print(
        f"  {phase.steps:,} steps in {phase.run_wall:,.1f} s wall ({phase.run_reported:.1f} s by"
        f" the command): {len(ds.customers) / phase.run_wall:,.0f} invoices/s,"
        f" {phase.steps / phase.run_wall:,.0f} steps/s",
        flush=True,
    )


# -------------------------------------------------------------------------- checks


def verify_run(url: str, ds: DataSet, phase: Phase) -> None:
    """The run's invoices, lines, ledger and subscriptions, in SQL through meterline's tables."""
    import sqlalchemy as sa

    from meterline.engine.credits import CREDIT_TYPES
    from meterline.store.db import make_engine
    from meterline.store.tables import credit_balance_transactions as txns
    from meterline.store.tables import credit_grants, invoice_lines, invoices, meter_events
    from meterline.store.tables import subscriptions as subs

    bad = phase.problems
    n = len(ds.customers)
    own = lambda t: [t.c.account_id == ds.account_id, t.c.livemode.is_(False)]  # noqa: E731
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            i = invoices.c
            rows = conn.execute(
                sa.select(
                    i.id,
                    i.customer,
                    i.status,
                    i.subtotal,
                    i.credited,
                    i.amount_due,
                    i.finalized_at,
                    i.period_start,
                    i.period_end,
                    i.number,
                ).where(*own(invoices), i.billing_reason == "subscription_cycle")
            ).all()
            inv = {r.id: r for r in rows}
            by_customer = {r.customer: r for r in rows}
            phase.invoices = len(rows)
            wrong = []
            for r in rows:
                ok = (
                    r.status in ("open", "paid")
                    and (r.status == "paid") == (r.amount_due == 0)
                    and r.subtotal - r.credited == r.amount_due
                    and r.credited == min(r.subtotal, LIVE_CREDIT)
                    and r.finalized_at == ds.t1 + FINALIZE_AFTER
                    and (r.period_start, r.period_end) == (ds.t0, ds.t1)
                    and r.number is not None
                )
                if not ok:
                    wrong.append(r)
            if len(rows) != n or len(by_customer) != n:
                bad.append(
                    f"{len(rows):,} cycle invoices for {len(by_customer):,} customers,"
                    f" expected {n:,}"
                )
            if wrong:
                bad.append(
                    f"{len(wrong):,} cycle invoices with wrong status or amounts, e.g. {wrong[0]}"
                )
            paid = sum(1 for r in rows if r.status == "paid")
            phase.checks.append(
                f"{len(rows):,} cycle invoices finalized at T1 + 3600 ({paid:,} paid, "
                f"{len(rows) - paid:,} open): subtotal - credited = amount_due and credited ="
                f" min(subtotal, {LIVE_CREDIT:,} ¢) on each"
            )

            ln = invoice_lines.c
            lines = conn.execute(
                sa.select(ln.invoice, ln.amount, ln.credited, ln.metered, ln.quantity).where(
                    *own(invoice_lines),
                    ln.invoice.in_(
                        sa.select(i.id).where(
                            *own(invoices), i.billing_reason == "subscription_cycle"
                        )
                    ),
                )
            ).all()
            per_inv: dict[str, list] = {}
            for r in lines:
                per_inv.setdefault(r.invoice, []).append(r)
            line_wrong = [
                iid
                for iid, r in inv.items()
                if len(per_inv.get(iid, [])) != 1
                or not per_inv[iid][0].metered
                or per_inv[iid][0].amount != r.subtotal
                or per_inv[iid][0].credited != r.credited
            ]
            if line_wrong:
                bad.append(
                    f"{len(line_wrong):,} cycle invoices whose line disagrees, e.g. {line_wrong[0]}"
                )

            t = txns.c
            entries = conn.execute(
                sa.select(t.credit_grant, t.type, t.amount, t.invoice).where(*own(txns))
            ).all()
            applied = sum(
                e.amount for e in entries if e.type == "credits_applied" and e.invoice in inv
            )
            credited = sum(r.credited for r in rows)
            if applied != credited:
                bad.append(
                    f"credits_applied entries sum to {applied:,} ¢,"
                    f" invoices' credits to {credited:,} ¢"
                )
            balances: dict[str, int] = {}
            for e in entries:
                balances[e.credit_grant] = balances.get(e.credit_grant, 0) + (
                    e.amount if e.type in CREDIT_TYPES else -e.amount
                )
            g = credit_grants.c
            grants = conn.execute(
                sa.select(g.id, g.amount, g.expires_at).where(*own(credit_grants))
            ).all()
            negative = [gid for gid, b in balances.items() if b < 0]
            if negative:
                bad.append(f"{len(negative):,} grants with a negative balance, e.g. {negative[0]}")
            expired_at_run = [
                gr
                for gr in grants
                if gr.expires_at is not None and gr.expires_at <= ds.t1 + FINALIZE_AFTER
            ]
            not_closed = [gr.id for gr in expired_at_run if balances.get(gr.id, 0) != 0]
            if not_closed:
                bad.append(
                    f"{len(not_closed):,} expired grants with a balance left, e.g. {not_closed[0]}"
                )
            expired_sum = sum(e.amount for e in entries if e.type == "credits_expired")
            if expired_sum != n * EXPIRED_CREDIT:
                bad.append(
                    f"credits_expired entries sum to {expired_sum:,} ¢,"
                    f" expected {n * EXPIRED_CREDIT:,}"
                )
            phase.checks.append(
                f"ledger: {len(entries):,} entries; credits_applied = the invoices' credits"
                f" ({applied / 100:,.2f} usd); every grant expired by the run debited to 0"
                f" ({expired_sum / 100:,.2f} usd); no balance below 0"
            )

            s = subs.c
            moved = conn.execute(
                sa.select(sa.func.count()).where(
                    *own(subs),
                    s.current_period_start == ds.t1,
                    s.current_period_end == ds.t2,
                    s.status == "active",
                    s.latest_invoice.in_(list(inv) or [""]),
                )
            ).scalar_one()
            if moved != n:
                bad.append(
                    f"{moved:,} subscriptions moved to [T1, T2) with the cycle invoice,"
                    f" expected {n:,}"
                )
            drafts = conn.execute(
                sa.select(sa.func.count()).where(*own(invoices), i.status == "draft")
            ).scalar_one()
            if drafts:
                bad.append(f"{drafts:,} drafts left after the run")

            # Spot checks: the line is the exact sum of the customer's events, priced here.
            rng = random.Random(ds.seed + 7)
            qty = {r.invoice: Decimal(r.quantity) for r in lines}
            by_qty = sorted(by_customer, key=lambda c: qty.get(by_customer[c].id, Decimal(0)))
            picks = list(
                dict.fromkeys([*rng.sample(sorted(by_customer), min(5, n)), by_qty[0], by_qty[-1]])
            )
            e = meter_events.c
            spot = []
            for cid in picks:
                values = conn.execute(
                    sa.select(e.value).where(
                        *own(meter_events),
                        e.customer == cid,
                        e.meter == ds.meter,
                        e.timestamp >= ds.t0,
                        e.timestamp < ds.t1,
                        e.cancelled_at.is_(None),
                    )
                ).scalars()
                total = sum((Decimal(v) for v in values), Decimal(0))
                r = by_customer[cid]
                want = graduated_cents(total)
                got_q = qty.get(r.id)
                if got_q != total or r.subtotal != want:
                    bad.append(
                        f"customer {cid}: events sum to {total}, priced {want} ¢; the invoice"
                        f" bills {got_q} for {r.subtotal} ¢"
                    )
                spot.append(f"{total} units → {want / 100:,.2f} usd")
            phase.checks.append(
                f"{len(picks)} customers' lines = the exact sum of their events, priced by the"
                f" tiers here ({'; '.join(spot)})"
            )
    finally:
        engine.dispose()


# -------------------------------------------------------------------------- ledger


@dataclass(frozen=True)
class Shape:
    """A ledger of exactly 1,000 entries, made through meterline's own paths."""

    key: str
    label: str
    expiring: int  # promotional grants, priority 5, expiring at T0 + 10 days (before the run)
    paid: int  # paid grants, priority 50, never expiring
    grant: int  # cents per grant
    subscriptions: int
    items: int  # metered prices per subscription (1: the data set's price; else 1 ¢ per unit)
    want: tuple[tuple[str, int], ...]  # entries by type
    balance: int  # cents left

    @property
    def steps(self) -> int:
        return 2 * self.subscriptions


LEDGER_EVENTS = 10  # of 100 units each: 1,000 units, 1,000 ¢ per metered line and cycle
SHAPES = [
    # Many grants, two entries each: 501 grants of 500 ¢; 200 one-line invoices of 1,000 ¢,
    # each emptying two grants; the 99 expiring ones expired unused.
    Shape(
        "many",
        "501 grants",
        99,
        402,
        500,
        200,
        1,
        (("credits_applied", 400), ("credits_expired", 99), ("credits_granted", 501)),
        2 * 500,
    ),
    # Few grants, a long history: 10 grants of 100,000 ¢; 55 invoices of 18 lines of 1,000 ¢,
    # each line paid by one grant (100 lines per grant).
    Shape(
        "few",
        "10 grants",
        0,
        10,
        100_000,
        55,
        18,
        (("credits_applied", 990), ("credits_granted", 10)),
        10_000,
    ),
]


def build_ledger_customers(url: str, ds: DataSet, database: str) -> None:
    """One customer per ledger shape, at T0 through meterline's services, then their cycles
    renewed and finalized by `services.due_work.bill_due` at T1 + 3601."""
    from meterline import clock
    from meterline.engine.catalog import PRICE_NAMES, PriceSpec, Recurring
    from meterline.services import catalog, credits, due_work, subscriptions
    from meterline.services import customers as customers_service
    from meterline.store.db import Database
    from meterline.store.repo import Repo, Scope

    clock.set_clock(clock.FixedClock(ds.t0))
    db = Database(url)
    scope = Scope(ds.account_id, False)
    t0 = time.perf_counter()
    rows = []
    try:
        for shape in SHAPES:
            with progress() as bar:
                task = bar.add_task(
                    f"ledger customer ({shape.label}): subscriptions, grants",
                    total=shape.subscriptions + shape.expiring + shape.paid,
                    rate="",
                )
                with db.write() as conn:
                    repo = Repo(conn, scope)
                    prices = [ds.price]
                    if shape.items > 1:
                        product = catalog.create_product(repo, {"name": "Metered extras"}, {})
                        spec = PriceSpec(
                            currency="usd",
                            unit_amount=1,
                            recurring=Recurring("month", 1, "metered", ds.meter),
                        )
                        prices = [
                            catalog.create_price(
                                repo,
                                spec,
                                PRICE_NAMES,
                                product_id=product["id"],
                                product_data=None,
                                fields={},
                                metadata={},
                            )["id"]
                            for _ in range(shape.items)
                        ]
                    cid = customers_service.create(
                        repo, {"name": f"Ledger {shape.label}", "email": "ledger@example.com"}, {}
                    )["id"]
                    for _ in range(shape.subscriptions):
                        subscriptions.create(
                            repo,
                            subscriptions.SubscriptionInput(
                                customer=cid,
                                items=[
                                    subscriptions.ItemInput(price=p, param=f"items[{i}][price]")
                                    for i, p in enumerate(prices)
                                ],
                            ),
                        )
                        bar.update(task, advance=1)
                    for k in range(shape.expiring + shape.paid):
                        expiring = k < shape.expiring
                        credits.create(
                            repo,
                            credits.GrantInput(
                                customer=cid,
                                currency="usd",
                                amount=shape.grant,
                                category="promotional" if expiring else "paid",
                                priority=5 if expiring else 50,
                                effective_at=None,
                                expires_at=ds.t0 + 10 * DAY if expiring else None,
                                prices=None,
                                name=f"grant {k}",
                                metadata={},
                            ),
                        )
                        bar.update(task, advance=1)
            ds.ledger_customers[shape.key] = cid
            step = (ds.t1 - ds.t0) // LEDGER_EVENTS
            rows += [
                (f"bill_ledger_{shape.key}_{k:03d}", cid, ds.t0 + k * step, "100.000")
                for k in range(LEDGER_EVENTS)
            ]
        db.dispose()
        insert_events(database, url, ds, iter([rows]), len(rows), "ledger customers: events")
        db = Database(url)
        want = sum(s.steps for s in SHAPES)
        with progress() as bar:
            task = bar.add_task("ledger customers: bill_due at T1 + 3601", total=want, rate="")
            steps = due_work.bill_due(db, ds.run_at, progress=lambda k: bar.update(task, advance=k))
        if steps != want:
            raise PhaseError(f"ledger customers: bill_due ran {steps} steps, expected {want}")
    finally:
        db.dispose()
        clock.set_clock(clock.Clock())
    print(f"  ledger customers built in {time.perf_counter() - t0:,.1f} s", flush=True)


def ledger_state(url: str, ds: DataSet, customer: str) -> tuple[dict[str, int], int, list[str]]:
    """(entries by type, ledger sum, ids newest first) of a customer's ledger, in SQL."""
    import sqlalchemy as sa

    from meterline.engine.credits import CREDIT_TYPES
    from meterline.store.db import make_engine
    from meterline.store.tables import credit_balance_transactions as txns

    t = txns.c
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.id, t.type, t.amount)
                .where(
                    t.account_id == ds.account_id,
                    t.livemode.is_(False),
                    t.customer == customer,
                )
                .order_by(t.created.desc(), t.seq.desc())
            ).all()
    finally:
        engine.dispose()
    by_type: dict[str, int] = {}
    total = 0
    for r in rows:
        by_type[r.type] = by_type.get(r.type, 0) + 1
        total += r.amount if r.type in CREDIT_TYPES else -r.amount
    return dict(sorted(by_type.items())), total, [r.id for r in rows]


def time_series(client: httpx.Client, label: str, url: str, params: list, n: int, check) -> Series:
    for _ in range(WARMUP):
        r = client.get(url, params=params)
        if r.status_code != 200:
            raise PhaseError(f"{label}: HTTP {r.status_code}: {r.text[:300]}")
    check(r)
    samples: list[float] = []
    with progress() as bar:
        task = bar.add_task(label, total=n, rate="")
        for _ in range(n):
            t0 = time.perf_counter()
            r = client.get(url, params=params)
            samples.append((time.perf_counter() - t0) * 1000)
            if r.status_code != 200:
                raise PhaseError(f"{label}: HTTP {r.status_code}: {r.text[:300]}")
            bar.update(task, advance=1, rate=f"p50 {statistics.median(samples):,.2f} ms")
    check(r)
    s = Series(
        label, len(samples), statistics.median(samples), pct(samples, 99), statistics.fmean(samples)
    )
    print(f"    {label}: p50 {s.p50:,.2f} ms  p99 {s.p99:,.2f} ms  (n={s.n})", flush=True)
    return s


def ledger_reads(url: str, ds: DataSet, phase: Phase, queries: int) -> None:
    states = {}
    for shape in SHAPES:
        by_type, total, newest = ledger_state(url, ds, ds.ledger_customers[shape.key])
        states[shape.key] = (by_type, total, newest)
        phase.ledger[shape.key] = {
            "entries": sum(by_type.values()),
            "by_type": by_type,
            "balance": total,
        }
        if by_type != dict(shape.want) or total != shape.balance:
            phase.problems.append(
                f"ledger customer ({shape.label}): entries {by_type} summing to {total} ¢,"
                f" expected {dict(shape.want)} summing to {shape.balance} ¢"
            )
    port = free_port()
    log = OUT / f"serve-{phase.database}.log"
    log.write_text("")
    server = Server(
        f"meterline serve ({phase.database})",
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
            "--jobs-interval",
            "0",
            "--log-level",
            "warning",
        ],
        log,
    )
    try:
        t0 = time.perf_counter()
        server.start()
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {ds.api_key}"},
            timeout=60,
        )
        first = ds.ledger_customers[SHAPES[0].key]

        def ready():
            try:
                r = client.get(f"/v1/customers/{first}", timeout=2)
            except httpx.TransportError as exc:
                return f"{type(exc).__name__}: {exc}"
            return None if r.status_code == 200 else f"GET customer answered {r.status_code}"

        server.wait_ready(ready, timeout=120)
        phase.walls["server start"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for shape in SHAPES:
            cust = ds.ledger_customers[shape.key]
            _, total, newest = states[shape.key]

            def check_summary(r: httpx.Response, total=total, shape=shape) -> None:
                b = r.json()["balances"]
                got = [
                    (
                        x["ledger_balance"]["monetary"]["value"],
                        x["available_balance"]["monetary"]["value"],
                    )
                    for x in b
                ]
                if got != [(total, total)]:
                    phase.problems.append(
                        f"balance summary ({shape.label}) says {b}, the ledger sums to {total} ¢"
                    )

            def check_list(limit: int, newest=newest, shape=shape):
                def check(r: httpx.Response) -> None:
                    body = r.json()
                    ids = [x["id"] for x in body["data"]]
                    if ids != newest[:limit] or body["has_more"] is not (len(newest) > limit):
                        phase.problems.append(
                            f"ledger list ({shape.label}) limit={limit}: {len(ids)} entries,"
                            f" has_more {body['has_more']}, not the newest entries in SQL order"
                        )

                return check

            summary_params = [
                ("customer", cust),
                ("filter[type]", "applicability_scope"),
                ("filter[applicability_scope][price_type]", "metered"),
            ]
            s = time_series(
                client,
                f"{phase.database} balance summary, {shape.label}",
                "/v1/billing/credit_balance_summary",
                summary_params,
                queries,
                check_summary,
            )
            s.shape = shape.key
            phase.series.append(s)
            server.check_alive()
            for limit in (100, 10):
                s = time_series(
                    client,
                    f"{phase.database} ledger list limit={limit}, {shape.label}",
                    "/v1/billing/credit_balance_transactions",
                    [("customer", cust), ("limit", str(limit))],
                    queries,
                    check_list(limit),
                )
                s.shape = shape.key
                phase.series.append(s)
                server.check_alive()
        phase.walls["ledger reads"] = time.perf_counter() - t0
        phase.workers = worker_memory(server)
        client.close()
    finally:
        server.stop()
    for shape in SHAPES:
        after = ledger_state(url, ds, ds.ledger_customers[shape.key])
        if after[:2] != states[shape.key][:2]:
            phase.problems.append(f"ledger ({shape.label}) changed during the reads: {after[:2]}")


# ---------------------------------------------------------------------------- phase


def phase_run(database: str, args, t0: int) -> Phase:
    from meterline import clock
    from meterline.services import invoices as invoices_service
    from meterline.store.db import Database

    if invoices_service.FINALIZE_AFTER != FINALIZE_AFTER:
        raise SystemExit(
            f"meterline's FINALIZE_AFTER is {invoices_service.FINALIZE_AFTER}, not 3600"
        )
    phase = Phase(database)
    phase.load_before = loadavg()
    phase.code.append(src_state())
    print(f"\n== {database}", flush=True)
    url = database_url(database)
    ds = DataSet(
        args.subscriptions,
        args.events_per_customer,
        args.seed,
        t0,
        add_month(t0),
        add_month(add_month(t0)),
    )
    log = OUT / f"setup-{database}.log"
    log.write_text("")
    try:
        w = time.perf_counter()
        if database == "sqlite":
            path = url.removeprefix("sqlite:///")
            for suffix in ("", "-wal", "-shm", ".writelock"):
                Path(path + suffix).unlink(missing_ok=True)
        else:
            recreate_postgres_database(PG_DATABASE)
        make_account(url, ds, log)
        clock.set_clock(clock.FixedClock(ds.t0))
        db = Database(url)
        try:
            build_catalog(db, ds)
            build_customers(db, ds, url)
        finally:
            db.dispose()
            clock.set_clock(clock.Clock())
        phase.walls["setup: account, catalog, customers, grants, subscriptions"] = (
            time.perf_counter() - w
        )
        w = time.perf_counter()
        load_events(database, url, ds)
        phase.walls["setup: meter events"] = time.perf_counter() - w
        if database == "postgresql":
            w = time.perf_counter()
            print("  VACUUM ANALYZE", flush=True)
            vacuum_analyze(url)
            phase.walls["setup: VACUUM ANALYZE"] = time.perf_counter() - w
        w = time.perf_counter()
        print("  meterline rollups rebuild", flush=True)
        run_logged(
            [meterline_cli(), "rollups", "rebuild", "--database-url", url, "--no-progress"], log
        )
        phase.walls["setup: meterline rollups rebuild"] = time.perf_counter() - w
        phase.dataset = {k: v for k, v in asdict(ds).items() if k != "customers"}

        timed_run(database, url, ds, phase, log, args.profile)
        phase.walls["invoice run"] = phase.run_wall
        w = time.perf_counter()
        verify_run(url, ds, phase)
        phase.walls["checks"] = time.perf_counter() - w
        for c in phase.checks:
            print(f"  checked: {c}", flush=True)

        w = time.perf_counter()
        build_ledger_customers(url, ds, database)
        phase.walls["setup: ledger customers"] = time.perf_counter() - w
        phase.dataset["ledger_customers"] = dict(ds.ledger_customers)
        if database == "postgresql":
            vacuum_analyze(url)
        phase.db_size_mb = database_size_mb(database, url)
        ledger_reads(url, ds, phase, args.queries)
    except Exception as exc:  # report, do not lose the other database's phase
        phase.failure = f"{type(exc).__name__}: {exc}"
        print(f"  FAILED: {phase.failure}", flush=True)
    phase.code.append(src_state())
    if phase.code[0] != phase.code[-1]:
        print(f"  NOTE: meterline's code changed during the phase: {' -> '.join(phase.code)}")
    for p in phase.problems:
        print(f"  WRONG: {p}", flush=True)
    phase.load_after = loadavg()
    return phase


def cleanup(database: str, args) -> None:
    if args.keep:
        return
    if database == "sqlite":
        path = database_url(database).removeprefix("sqlite:///")
        for suffix in ("", "-wal", "-shm", ".writelock"):
            Path(path + suffix).unlink(missing_ok=True)
        for lock in OUT.glob("meterline-billing.db.*.lock"):
            lock.unlink(missing_ok=True)
    else:
        try:
            import psycopg

            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')
        except Exception as exc:  # noqa: BLE001
            print(f"  could not drop {PG_DATABASE}: {exc}", flush=True)


# --------------------------------------------------------------------------- report

HEADER = ["database", "measure", "result", "target", "met?"]


def table_rows(phases: list[Phase]) -> list[list[str]]:
    rows = []
    for ph in phases:
        if ph.failure:
            rows.append([ph.database, "FAILED (see below)", "", "", ""])
            continue
        n = ph.dataset.get("subscriptions", 0)
        if ph.run_wall:
            at_size = n == RUN_TARGET_N
            rows.append(
                [
                    ph.database,
                    f"invoice run: {n:,} subscriptions, {ph.steps:,} steps",
                    f"{ph.run_wall:,.1f} s: {n / ph.run_wall:,.0f} invoices/s,"
                    f" {ph.steps / ph.run_wall:,.0f} steps/s",
                    f"< {RUN_TARGET_S:.0f} s for {RUN_TARGET_N:,}",
                    ("met" if ph.run_wall < RUN_TARGET_S else "NOT met")
                    if at_size
                    else "n/a (other size)",
                ]
            )
        for s in ph.series:
            rows.append(
                [
                    ph.database,
                    s.label.removeprefix(ph.database + " ")
                    + f" ({ph.ledger.get(s.shape, {}).get('entries', 0):,} transactions)",
                    f"p50 {s.p50:,.2f} ms, p99 {s.p99:,.2f} ms (n={s.n})",
                    f"p50 < {READ_TARGET_MS:.0f} ms",
                    "met" if s.p50 < READ_TARGET_MS else "NOT met",
                ]
            )
        rows.append(
            [
                ph.database,
                "answers checked",
                "all right" if not ph.problems else f"{len(ph.problems)} WRONG (see below)",
                "",
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


def write_report(
    phases: list[Phase], info: dict, argv: list[str], started: dt.datetime, total_s: float, args
) -> None:
    invocation = ".venv/bin/python bench/billing.py" + (" " + shlex.join(argv) if argv else "")
    ds = next((p.dataset for p in phases if p.dataset), None)
    md = [
        BEGIN_MARKER,
        "## Billing: the invoice run and the credit ledger",
        "",
        "<!-- Generated by bench/billing.py; replaced on each run. -->",
        "",
        f"- Date: {started.strftime('%Y-%m-%d %H:%M UTC')};"
        f" total wall time {total_s / 60:.1f} min.",
        f"- Machine: {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']},"
        f" {info['python']}, SQLite {info['sqlite']}"
        + (f", PostgreSQL {info['postgresql']}" if info["postgresql"] else "")
        + ". Other engineers' test runs share the machine (load average per phase below):"
        " expect noise.",
        f"- meterline commit: {info['commit']}"
        + "".join(
            f"; the {p.database} phase ran meterline from {p.code[0]}"
            for p in phases
            if p.code and "PYTHONPATH" in p.code[0]
        ),
        f"- Command: `{invocation}`",
    ]
    if ds:
        md += [
            f"- Data set: T0 = {utc(ds['t0'])}, T1 = {utc(ds['t1'])} (the first period's end),"
            f" the run at T1 + 3601 s. {ds['subscriptions']:,} customers, each with a monthly"
            " subscription to one metered price (graduated: 1 ¢ per unit to 2,000 units, 0.5 ¢"
            " to 10,000, then 0.25 ¢ plus 100 ¢ flat; one `sum` meter) and 3 usd credit grants"
            " (promotional priority 10, 1,000 ¢, expiring at T0 + 45 days; paid priority 20,"
            " 1,500 ¢, scoped to the price; promotional priority 30, 2,000 ¢, expiring at T0 +"
            f" 20 days, before the run); {ds['events']:,} meter events over [T0, T1)"
            f" ({ds['per_customer']} per customer on average, each customer's share drawn from a"
            " uniform weight in [0.02, 1.98]; values 0.001–200.000), seed"
            f" {ds['seed']}. Account, catalog, customers, grants and subscriptions are made"
            " through meterline's services in-process with the clock fixed at T0 (1,000"
            " customers per transaction, on PostgreSQL each followed by an ANALYZE of the tables"
            " it grew, as autovacuum would: the bench server runs with autovacuum off); events go"
            " straight into `meter_events` with its secondary indexes set aside and made again"
            " after the load (SQLite:"
            " executemany; PostgreSQL: COPY, then `VACUUM ANALYZE`), then `meterline rollups"
            " rebuild`.",
        ]
    md += [
        "- Invoice run (issue 4: under 60 s for 10,000 subscriptions on each database):"
        " `meterline invoices run --database-url … --now <T1 + 3601> --no-progress` as a"
        " subprocess, timed by the wall clock around it (process start and its migration check"
        " included). It renews each subscription (a draft billing the month's usage from the"
        " rollups) and finalizes each draft an hour later (credits in burn order, ledger"
        " entries, number, status): 2 steps per subscription, in the transactions"
        " `services.due_work.bill_due` groups them in."
        " invoices/s = subscriptions ÷ wall seconds. The benchmark polls the invoice count once"
        " a second for its progress bar.",
        "- Checks of the run: every cycle invoice finalized at T1 + 3600 for [T0, T1), open or"
        " (nothing due) paid, subtotal − credited = amount_due, credited = min(subtotal,"
        " 2,500 ¢) (the two grants alive), its one metered line with the same amounts;"
        " `credits_applied` entries = the invoices' credits; every grant expired by the run"
        " debited to 0; no grant below 0; every subscription moved on to [T1, T2); up to 7"
        " customers' lines equal to the exact sum of their events, priced independently.",
        "- Ledger reads (issue 4: p50 under 10 ms for a customer with 1,000 transactions): two"
        " more customers, in the same database as the run, each with a ledger of exactly 1,000"
        " credit balance transactions made by meterline's own paths at T0 (grants, subscriptions)"
        " and by `services.due_work.bill_due` at T1 + 3601 (renewals, finalizations with credits),"
        " in two shapes: **501 grants** (500 ¢ each, 99 of them promotional ones expiring at T0 +"
        " 10 days; 200 one-line invoices of 1,000 ¢, each emptying two grants: 501"
        " `credits_granted`, 99 `credits_expired`, 400 `credits_applied`; 1,000 ¢ left) and **10"
        " grants** (100,000 ¢ each; 55 invoices of 18 metered lines of 1,000 ¢, one line per"
        " grant application: 10 `credits_granted`, 990 `credits_applied`; 10,000 ¢ left)."
        " `meterline serve --workers 2 --jobs-interval 0` (jobs off so that nothing else writes"
        " during the timing), one keep-alive httpx connection, sequential requests timed from"
        f" send to the whole body read; {WARMUP} warm-up requests, then {args.queries} timed per"
        " series. `GET /v1/billing/credit_balance_summary?customer=…&filter[type]="
        "applicability_scope&filter[applicability_scope][price_type]=metered` must give the"
        " ledger's sum in SQL as ledger and available balance; `GET"
        " /v1/billing/credit_balance_transactions?customer=…&limit=100` (and 10) the newest"
        " entries in SQL order.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    md += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in table_rows(phases)]
    md += [""]
    for ph in phases:
        if ph.failure:
            md += [f"- {ph.database} FAILED: `{ph.failure}`"]
        walls = ", ".join(f"{k} {v:,.1f} s" for k, v in ph.walls.items())
        md += [
            f"- {ph.database} wall times: {walls}. Load average {ph.load_before} before,"
            f" {ph.load_run or '–'} at the run's start, {ph.load_after} after"
            + (f"; database {ph.db_size_mb:,.0f} MB." if ph.db_size_mb else ".")
        ]
        if ph.code:
            changed = ph.code[0] != ph.code[-1]
            md += [
                f"- {ph.database} meterline code: {ph.code[0]}"
                + (f", CHANGED during the phase to {ph.code[-1]}" if changed else "")
                + "."
            ]
        if ph.run_wall:
            md += [
                f"- {ph.database} run: {ph.run_wall:,.1f} s wall, {ph.run_reported:,.1f} s by the"
                " command's own clock (after its start-up)."
            ]
        for c in ph.checks:
            md += [f"- {ph.database} checked: {c}."]
        if ph.workers:
            md += [
                f"- {ph.database} server workers after the reads: "
                + "; ".join(
                    f"pid {w['pid']}: peak {w['hwm_mb']:,.0f} MB, now {w['rss_mb']:,.0f} MB"
                    for w in ph.workers
                )
                + "."
            ]
        for p in ph.problems:
            md += [f"- {ph.database} WRONG: {p}"]
    md += ["", "Logs: `bench/out/billing/` (not committed).", END_MARKER]
    block = "\n".join(md) + "\n"

    text = REPORT.read_text() if REPORT.exists() else f"# Performance\n\n{OTHER_MARKER}\n"
    if BEGIN_MARKER in text and END_MARKER in text:
        head, rest = text.split(BEGIN_MARKER, 1)
        tail = rest.split(END_MARKER, 1)[1].lstrip("\n")
        text = head + block + ("\n" + tail if tail else "")
    elif INGEST_END in text:
        head, tail = text.split(INGEST_END, 1)
        tail = tail.lstrip("\n")
        text = head + INGEST_END + "\n\n" + block + ("\n" + tail if tail else "")
    else:
        if OTHER_MARKER not in text:
            text = text.rstrip("\n") + f"\n\n{OTHER_MARKER}\n"
        text = text.rstrip("\n") + "\n\n" + block
    REPORT.write_text(text)
    print(f"\nwrote {REPORT}")


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["sqlite", "postgresql"], action="append")
    parser.add_argument(
        "--subscriptions", type=int, default=RUN_TARGET_N, help="customers with a subscription"
    )
    parser.add_argument(
        "--events-per-customer", type=int, default=100, help="meter events per customer (mean)"
    )
    parser.add_argument("--queries", type=int, default=200, help="timed requests per series")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    parser.add_argument("--no-report", action="store_true", help="do not write PERFORMANCE.md")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run the invoice run under py-spy --idle (collapsed stacks in"
        " bench/out/billing/profile-*.txt;"
        " slows it down: for finding where time goes, not for the figures)",
    )
    args = parser.parse_args(argv)
    if args.subscriptions < 10 or args.events_per_customer < 1 or args.queries < 1:
        parser.error("--subscriptions must be at least 10, the others at least 1")

    started = dt.datetime.now(dt.UTC)
    t_start = time.perf_counter()
    OUT.mkdir(parents=True, exist_ok=True)
    t0 = month_start(int(started.timestamp()) - 40 * DAY)
    info = machine()
    print(
        f"{info['nproc']} CPUs ({info['cpu']}), {info['python']}, SQLite {info['sqlite']},"
        f" PostgreSQL {info['postgresql'] or '?'}; {args.subscriptions:,} subscriptions,"
        f" T0 = {utc(t0)}",
        flush=True,
    )
    phases = []
    try:
        for database in args.only or ["sqlite", "postgresql"]:
            phases.append(phase_run(database, args, t0))
            cleanup(database, args)
    except KeyboardInterrupt:
        print("\ninterrupted: no report written", file=sys.stderr)
        return 130
    total = time.perf_counter() - t_start
    print_table(table_rows(phases))
    (OUT / "results.json").write_text(
        json.dumps(
            {
                "started": started.isoformat(),
                "machine": info,
                "argv": argv,
                "phases": [asdict(p) for p in phases],
            },
            indent=2,
            default=str,
        )
    )
    if not args.no_report:
        write_report(phases, info, argv, started, total, args)
    return 1 if any(p.failure or p.problems for p in phases) else 0


if __name__ == "__main__":
    sys.exit(main())
