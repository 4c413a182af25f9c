"""Rollup storage: the statements of the rollup builder and of the queries that read rollups.

Two kinds of caller, kept apart:
- The builder (`services.rollups`) is a system job: it reads every account's new events by
  `seq` and writes each one's cells under that event's own account and livemode. Nothing else
  writes `meter_usage_rollups`, `rollup_state` or deletes from `meter_event_cancels`.
- Queries take a `Repo` and are scoped by its account and livemode, like every other read.

Always true: the watermark only moves forward, by compare-and-set (`advance`), so two builders
never fold the same events twice; on PostgreSQL every transaction that inserts meter events
holds the ingest lock (shared) from before its first insert to its commit, and `safe_upto` takes
it exclusively, so every event with seq <= the value it returns is committed (sequence values
are handed out before commit, and out of commit order, on PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from decimal import Decimal
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from meterline.store.db import TRANSACTION_MEMOS, Database
from meterline.store.repo import Repo
from meterline.store.tables import (
    meter_event_cancels,
    meter_events,
    meter_usage_rollups,
    meters,
    rollup_state,
)

STATE = "rollups"
# PostgreSQL advisory lock key of event ingestion ("mlingest" as 8 bytes).
INGEST_LOCK = int.from_bytes(b"mlingest", "big", signed=True)
_MANY_SPANS = 24  # more spans than this are read as one range and filtered in Python

Cell = tuple[
    str, bool, str, str, int, int, str
]  # account, livemode, customer, meter, res, bucket, dims
CellValue = tuple[Decimal, int, int, int, Decimal]  # sum, count, last_ts, last_seq, last_value


def _dec(v: Any) -> Decimal:
    return v if isinstance(v, Decimal) else Decimal(v)


def _json(v: Any) -> Any:
    return orjson.loads(v) if isinstance(v, (str, bytes)) else v


def _cursor(conn: Connection) -> Any:
    return conn.connection.driver_connection.cursor()  # type: ignore[union-attr]


def _ph(conn: Connection) -> str:
    return "?" if conn.dialect.name == "sqlite" else "%s"


# --- ingest side -------------------------------------------------------------------------------


INGEST_HELD = "meterline_ingest_lock_txn"  # conn.info: the transaction that holds the lock
TRANSACTION_MEMOS.add(INGEST_HELD)


def hold_ingest_lock(conn: Connection) -> None:
    """PostgreSQL: take the ingest lock (shared) until the transaction ends. Call it before the
    transaction's first meter event insert (an insert in a savepoint that is rolled back takes
    the lock with it, which is fine: its event goes too). Taken once per transaction: the
    requests of a write batch share it (`store.db.ItemSavepoints` forgets it when a savepoint
    rolls back, since the rollback may have released it)."""
    if conn.dialect.name != "postgresql":
        return
    txn = conn.get_transaction()
    if txn is not None and conn.info.get(INGEST_HELD) is txn:
        return
    conn.exec_driver_sql("SELECT pg_advisory_xact_lock_shared(%(k)s)", {"k": INGEST_LOCK})
    conn.info[INGEST_HELD] = txn


def safe_upto(db: Database) -> int:
    """The greatest event seq below which every event is committed (see the module docstring)."""
    if db.dialect == "postgresql":
        with db.write() as conn:
            conn.exec_driver_sql("SET LOCAL lock_timeout = '200ms'")
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%(k)s)", {"k": INGEST_LOCK})
            return int(
                conn.execute(
                    sa.select(sa.func.coalesce(sa.func.max(meter_events.c.seq), 0))
                ).scalar_one()
            )
    # SQLite: one writer at a time assigns seq inside its lock, so what is visible is a prefix.
    with db.read() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.coalesce(sa.func.max(meter_events.c.seq), 0))
            ).scalar_one()
        )


# --- builder side ------------------------------------------------------------------------------


def watermark(conn: Connection, *, lock: str | None = None) -> int:
    """The watermark; on PostgreSQL `lock="share"` keeps builders from moving it until the
    transaction ends, and `lock="update"` also excludes other builders. (One statement on the
    driver's cursor: every usage answer and invoice reads it.)"""
    sql = f"SELECT watermark FROM rollup_state WHERE name = {_ph(conn)}"
    if lock and conn.dialect.name == "postgresql":
        sql += " FOR SHARE" if lock == "share" else " FOR UPDATE"
    cur = _cursor(conn)
    try:
        cur.execute(sql, (STATE,))
        row = cur.fetchone()
    finally:
        cur.close()
    return int(row[0] or 0) if row is not None else 0


def advance(conn: Connection, old: int, new: int, now: int) -> bool:
    """Move the watermark from `old` to `new`; False when another builder moved it first. (Its
    row is made by the migrations, so this only ever updates.)"""
    t = rollup_state
    return bool(
        conn.execute(
            t.update()
            .where(t.c.name == STATE, t.c.watermark == old)
            .values(watermark=new, updated=now)
        ).rowcount
    )


def set_watermark(conn: Connection, value: int, now: int) -> None:
    t = rollup_state
    conn.execute(t.update().where(t.c.name == STATE).values(watermark=value, updated=now))


def meter_settings(conn: Connection) -> dict[tuple[str, bool, str], tuple[tuple[str, ...], bool]]:
    """Every meter's (sorted dimension keys, has an event_time_window), by (account, livemode, id)."""
    t = meters.c
    out = {}
    for account, live, mid, keys, window in conn.execute(
        sa.select(t.account_id, t.livemode, t.id, t.dimension_payload_keys, t.event_time_window)
    ):
        out[(account, bool(live), mid)] = (tuple(sorted(_json(keys) or [])), bool(window))
    return out


def new_events(conn: Connection, after: int, upto: int, limit: int) -> list[tuple]:
    """Counting events with after < seq <= upto, in seq order, at most `limit`:
    (account, livemode, customer, meter, timestamp, value, seq, payload)."""
    ph = _ph(conn)
    sql = (
        'SELECT account_id, livemode, customer, meter, "timestamp", value, seq, payload '
        f"FROM meter_events WHERE seq > {ph} AND seq <= {ph} AND cancelled_at IS NULL "
        f"ORDER BY seq LIMIT {ph}"
    )
    cur = _cursor(conn)
    try:
        cur.execute(sql, (after, upto, limit))
        return [
            (a, bool(lm), c, m, ts, _dec(v), seq, _json(p)) for a, lm, c, m, ts, v, seq, p in cur
        ]
    finally:
        cur.close()


def iter_all_events(conn: Connection, upto: int, batch: int = 20_000) -> Iterator[tuple]:
    """Every counting event with seq <= upto, by account, livemode, customer, meter and time
    (the order of the usage index), streamed."""
    ph = _ph(conn)
    # A sort of the whole table, not a walk of the usage index: the index order would fetch the
    # rows one random page at a time, which on a store larger than memory is many times slower.
    p = "+" if conn.dialect.name == "sqlite" else ""
    sql = (
        'SELECT account_id, livemode, customer, meter, "timestamp", value, seq, payload '
        f"FROM meter_events WHERE seq <= {ph} AND cancelled_at IS NULL "
        f'ORDER BY {p}account_id, {p}livemode, {p}customer, {p}meter, {p}"timestamp"'
    )
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL work_mem = '256MB'")
        conn.exec_driver_sql("SET LOCAL enable_indexscan = off")
        conn.exec_driver_sql("SET LOCAL enable_bitmapscan = off")
    raw = conn.connection.driver_connection  # type: ignore[union-attr]
    cur = (
        raw.cursor("meterline_rollups_rebuild")
        if conn.dialect.name == "postgresql"
        else raw.cursor()
    )
    try:
        if conn.dialect.name == "postgresql":
            cur.itersize = batch
        cur.execute(sql, (upto,))
        while True:
            rows = cur.fetchmany(batch)
            if not rows:
                return
            for a, lm, c, m, ts, v, seq, p in rows:
                yield (a, bool(lm), c, m, ts, _dec(v), seq, _json(p))
    finally:
        cur.close()


def count_events(conn: Connection, upto: int) -> int:
    t = meter_events.c
    return int(
        conn.execute(
            sa.select(sa.func.count())
            .select_from(meter_events)
            .where(t.seq <= upto, t.cancelled_at.is_(None))
        ).scalar_one()
    )


_SQLITE_GET_CELL = (
    "SELECT sum, count, last_ts, last_seq, last_value FROM meter_usage_rollups WHERE "
    "account_id = ? AND livemode = ? AND customer = ? AND meter = ? AND resolution = ? "
    "AND bucket = ? AND dims = ?"
)


def load_cells(conn: Connection, cells: Iterable[Cell]) -> dict[Cell, CellValue]:
    """The stored values of these cells (those that exist). SQLite: one primary key lookup per
    cell on the driver's cursor (no round trips to pay; the builder runs this holding the write
    lock, and the statement machinery cost more than the lookups)."""
    if conn.dialect.name == "sqlite":
        found: dict[Cell, CellValue] = {}
        cur = _cursor(conn)
        try:
            for cell in cells:
                cur.execute(_SQLITE_GET_CELL, cell)
                row = cur.fetchone()
                if row is not None:
                    s, n, lts, lseq, lv = row
                    found[cell] = (_dec(s), n, lts, lseq, _dec(lv))
        finally:
            cur.close()
        return found
    by_res: dict[int, dict[tuple[str, bool, str, str], list[int]]] = {}
    for account, live, customer, meter, res, bucket, _dims in cells:
        by_res.setdefault(res, {}).setdefault((account, live, customer, meter), []).append(bucket)
    t = meter_usage_rollups.c
    out: dict[Cell, CellValue] = {}
    for res, groups in by_res.items():
        keys = list(groups)
        for i in range(0, len(keys), 200):
            part = keys[i : i + 200]
            buckets = [b for k in part for b in groups[k]]
            q = sa.select(
                t.account_id,
                t.livemode,
                t.customer,
                t.meter,
                t.bucket,
                t.dims,
                t.sum,
                t.count,
                t.last_ts,
                t.last_seq,
                t.last_value,
            ).where(
                t.resolution == res,
                t.bucket >= min(buckets),
                t.bucket <= max(buckets),
                sa.tuple_(t.account_id, t.livemode, t.customer, t.meter).in_(part),
            )
            for a, lm, c, m, b, d, s, n, lts, lseq, lv in conn.execute(q):
                out[(a, bool(lm), c, m, res, b, d)] = (_dec(s), n, lts, lseq, _dec(lv))
    return out


def _row(cell: Cell, v: CellValue) -> dict[str, Any]:
    account, live, customer, meter, res, bucket, dims = cell
    s, n, lts, lseq, lv = v
    return dict(
        account_id=account,
        livemode=live,
        customer=customer,
        meter=meter,
        resolution=res,
        bucket=bucket,
        dims=dims,
        sum=s,
        count=n,
        last_ts=lts,
        last_seq=lseq,
        last_value=lv,
    )


_KEY = ["account_id", "livemode", "customer", "meter", "resolution", "bucket", "dims"]
_VALUES = ["sum", "count", "last_ts", "last_seq", "last_value"]


_SQLITE_UPSERT = (
    f"INSERT INTO meter_usage_rollups ({', '.join(_KEY + _VALUES)}) "
    f"VALUES ({', '.join('?' * len(_KEY + _VALUES))}) "
    f"ON CONFLICT ({', '.join(_KEY)}) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _VALUES)
)


def _upsert_sqlite(conn: Connection, values: dict[Cell, CellValue]) -> None:
    """On the driver's cursor: decimals as their exact text, as `DecimalText` binds them."""
    cur = _cursor(conn)
    try:
        cur.executemany(
            _SQLITE_UPSERT,
            [
                (*cell, str(s), n, lts, lseq, str(lv))
                for cell, (s, n, lts, lseq, lv) in values.items()
            ],
        )
    finally:
        cur.close()


_PG_COLS = ", ".join(c.name for c in meter_usage_rollups.columns)
# One statement for any number of cells: the rows travel as one JSON array that the server reads
# into the table's row type (decimals as strings, so they stay exact). A fold touches thousands
# of cells; as single-row statements they cost the server more than the events they fold.
_PG_UPSERT = (
    f"INSERT INTO meter_usage_rollups ({_PG_COLS}) SELECT {_PG_COLS} FROM "
    "json_populate_recordset(NULL::meter_usage_rollups, %s::json) "
    "ON CONFLICT ON CONSTRAINT pk_meter_usage_rollups DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in _VALUES)
)


def _upsert_postgresql(conn: Connection, rows: list[dict[str, Any]]) -> None:
    cur = _cursor(conn)
    try:
        cur.execute(_PG_UPSERT, (orjson.dumps(rows, default=str).decode(),), prepare=True)
    finally:
        cur.close()


def store_cells(conn: Connection, values: dict[Cell, CellValue], batch: int = 5_000) -> None:
    """Write these cells' values, replacing what was stored."""
    if conn.dialect.name == "sqlite":
        _upsert_sqlite(conn, values)
        return
    rows = [_row(c, v) for c, v in values.items()]
    for i in range(0, len(rows), batch):
        _upsert_postgresql(conn, rows[i : i + batch])


def insert_cells(conn: Connection, values: Sequence[tuple[Cell, CellValue]]) -> None:
    """Insert new cells (the table holds none of them)."""
    if values:
        conn.execute(meter_usage_rollups.insert(), [_row(c, v) for c, v in values])


def replace_cell_span(
    conn: Connection,
    account: str,
    live: bool,
    customer: str,
    meter: str,
    res: int,
    bucket: int,
    values: dict[Cell, CellValue],
) -> None:
    """Replace every dims row of one cell with `values` (recomputed from raw events)."""
    t = meter_usage_rollups.c
    conn.execute(
        meter_usage_rollups.delete().where(
            t.account_id == account,
            t.livemode == live,
            t.customer == customer,
            t.meter == meter,
            t.resolution == res,
            t.bucket == bucket,
        )
    )
    insert_cells(conn, list(values.items()))


def queued_cancels(conn: Connection, upto: int) -> list[tuple]:
    """(seq, account, livemode, customer, meter, timestamp) of queued cancellations of events
    with seq <= upto."""
    t = meter_event_cancels.c
    return [
        (s, a, bool(lm), c, m, ts)
        for s, a, lm, c, m, ts in conn.execute(
            sa.select(t.seq, t.account_id, t.livemode, t.customer, t.meter, t.timestamp).where(
                t.event_seq <= upto
            )
        )
    ]


def any_cancels(conn: Connection) -> bool:
    return conn.execute(sa.select(meter_event_cancels.c.seq).limit(1)).first() is not None


def cancels_left(conn: Connection, upto_seq: int) -> bool:
    """Whether a queued cancellation with seq <= upto_seq is still there."""
    t = meter_event_cancels.c
    return conn.execute(sa.select(t.seq).where(t.seq <= upto_seq).limit(1)).first() is not None


def max_cancel_seq(conn: Connection) -> int:
    return int(
        conn.execute(
            sa.select(sa.func.coalesce(sa.func.max(meter_event_cancels.c.seq), 0))
        ).scalar_one()
    )


def drop_cancels(
    conn: Connection, seqs: Sequence[int] = (), *, upto_seq: int | None = None
) -> None:
    t = meter_event_cancels
    if upto_seq is not None:
        conn.execute(t.delete().where(t.c.seq <= upto_seq))
    for i in range(0, len(seqs), 500):
        conn.execute(t.delete().where(t.c.seq.in_(list(seqs[i : i + 500]))))


def cell_events(
    conn: Connection,
    account: str,
    live: bool,
    customer: str,
    meter: str,
    start: int,
    end: int,
    upto: int,
) -> list[tuple]:
    """(timestamp, value, seq, payload) of the counting events of one customer and meter in
    [start, end) with seq <= upto; the value a Decimal and the payload a dict (the columns'
    types decode them)."""
    t = meter_events.c
    q = sa.select(t.timestamp, t.value, t.seq, t.payload).where(
        t.account_id == account,
        t.livemode == live,
        t.customer == customer,
        t.meter == meter,
        t.timestamp >= start,
        t.timestamp < end,
        t.seq <= upto,
        t.cancelled_at.is_(None),
    )
    return list(conn.execute(q))


def reset(conn: Connection) -> None:
    conn.execute(meter_usage_rollups.delete())


# --- query side (scoped by a Repo) --------------------------------------------------------------


def _span_filter(col: str, spans: Sequence[tuple[int, int]], ph: str) -> tuple[str, list[int]]:
    """SQL for `col` in one of the spans (or in their hull, when there are many)."""
    if len(spans) > _MANY_SPANS:
        return f"({col} >= {ph} AND {col} < {ph})", [spans[0][0], spans[-1][1]]
    parts, params = [], []
    for a, b in spans:
        parts.append(f"({col} >= {ph} AND {col} < {ph})")
        params += [a, b]
    return "(" + " OR ".join(parts) + ")", params


def rollup_rows(
    repo: Repo, customer: str, meter_ids: Sequence[str], res: int, spans: Sequence[tuple[int, int]]
) -> list[tuple]:
    """(meter, bucket, dims, sum, count, last_ts, last_seq, last_value) of the customer's cells of
    `res` in the spans' hull or spans (the caller filters by span)."""
    if not spans or not meter_ids:
        return []
    repo.flush()
    ph = _ph(repo.conn)
    where, params = _span_filter("bucket", spans, ph)
    marks = ", ".join([ph] * len(meter_ids))
    sql = (
        "SELECT meter, bucket, dims, sum, count, last_ts, last_seq, last_value "
        "FROM meter_usage_rollups "
        f"WHERE account_id = {ph} AND livemode = {ph} AND customer = {ph} AND meter IN ({marks}) "
        f"AND resolution = {ph} AND {where}"
    )
    cur = repo._cursor()
    try:
        cur.execute(
            sql, [repo.scope.account_id, repo.scope.livemode, customer, *meter_ids, res, *params]
        )
        return cur.fetchall()
    finally:
        cur.close()


def raw_events(
    repo: Repo,
    customer: str,
    meter_ids: Sequence[str],
    spans: Sequence[tuple[int, int]],
    *,
    upto: int | None = None,
    after: int | None = None,
) -> list[tuple]:
    """(meter, timestamp, value, seq, payload) of the customer's counting events of these meters
    in the spans' hull or spans, with seq <= upto and/or seq > after. With `after` (the tail that
    is not folded yet) the statement walks the primary key from `after`, not the usage index."""
    if not spans or not meter_ids:
        return []
    repo.flush()
    ph = _ph(repo.conn)
    sqlite = repo.dialect == "sqlite"
    # `+col` keeps SQLite off the usage index, so the tail is read by seq.
    p = "+" if sqlite and after is not None else ""
    where, params = _span_filter(f'{p}"timestamp"', spans, ph)
    marks = ", ".join([ph] * len(meter_ids))
    sql = (
        'SELECT meter, "timestamp", value, seq, payload FROM meter_events '
        f"WHERE {p}account_id = {ph} AND {p}livemode = {ph} AND {p}customer = {ph} "
        f"AND {p}meter IN ({marks}) AND {where} AND cancelled_at IS NULL"
    )
    args: list[Any] = [repo.scope.account_id, repo.scope.livemode, customer, *meter_ids, *params]
    if upto is not None:
        sql += f" AND seq <= {ph}"
        args.append(upto)
    if after is not None:
        sql += f" AND seq > {ph}"
        args.append(after)
    cur = repo._cursor()
    try:
        cur.execute(sql, args)
        return [(m, ts, _dec(v), seq, _json(pl)) for m, ts, v, seq, pl in cur]
    finally:
        cur.close()


def pending_cancels(repo: Repo, customer: str, upto: int) -> list[tuple[str, int]]:
    """(meter, timestamp) of queued cancellations of the customer's already folded events."""
    return [(m, ts) for _, m, ts in _queued_cancels(repo, upto, customer=customer)]


def pending_cancels_all(repo: Repo, upto: int, limit: int) -> list[tuple[str, str, int]]:
    """(customer, meter, timestamp) of queued cancellations in the scope, at most `limit`."""
    return _queued_cancels(repo, upto, limit=limit)


def _queued_cancels(
    repo: Repo, upto: int, *, customer: str | None = None, limit: int | None = None
) -> list[tuple[str, str, int]]:
    repo.flush()
    ph = _ph(repo.conn)
    sql = (
        'SELECT customer, meter, "timestamp" FROM meter_event_cancels WHERE account_id = '
        f"{ph} AND livemode = {ph} AND event_seq <= {ph}"
    )
    args: list[Any] = [repo.scope.account_id, repo.scope.livemode, upto]
    if customer is not None:
        sql += f" AND customer = {ph}"
        args.append(customer)
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    cur = _cursor(repo.conn)
    try:
        cur.execute(sql, args)
        return [(c, m, ts) for c, m, ts in cur.fetchall()]
    finally:
        cur.close()


def queue_cancel(repo: Repo, customer: str, meter: str, timestamp: int, event_seq: int) -> None:
    repo.flush()
    repo.wrote = True
    repo.conn.execute(
        meter_event_cancels.insert().values(
            account_id=repo.scope.account_id,
            livemode=repo.scope.livemode,
            customer=customer,
            meter=meter,
            timestamp=timestamp,
            event_seq=event_seq,
        )
    )


__all__ = [
    "INGEST_LOCK",
    "Cell",
    "CellValue",
    "advance",
    "any_cancels",
    "cell_events",
    "cancels_left",
    "count_events",
    "drop_cancels",
    "hold_ingest_lock",
    "insert_cells",
    "iter_all_events",
    "load_cells",
    "max_cancel_seq",
    "meter_settings",
    "new_events",
    "pending_cancels",
    "queue_cancel",
    "queued_cancels",
    "raw_events",
    "replace_cell_span",
    "reset",
    "rollup_rows",
    "safe_upto",
    "set_watermark",
    "store_cells",
    "watermark",
]
