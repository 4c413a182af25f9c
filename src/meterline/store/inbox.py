"""The v2 stream's landing log (`meter_event_inbox`): the statements that move its events into
`meter_events` and that tell what is still pending.

A stream request appends its validated events here when it commits (an unindexed append, so the
200 costs no page of `meter_events`' indexes); `move` takes the oldest pending events, inserts
them into `meter_events` in one statement (insert-if-absent by identifier, in key order so that
neighbouring keys share index pages) and deletes them here, in the caller's transaction.

Always true: an event leaves the inbox only in the transaction that inserts it into
`meter_events` (or finds its identifier stored already), so no event is lost or stored twice;
one customer's events keep their arrival order in `meter_events.seq`; on PostgreSQL one
transaction moves at a time (an advisory lock), and a move holds the ingest lock (shared) as
every insert into `meter_events` does (see `store.rollups`).
May import: store.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from meterline.store.rollups import hold_ingest_lock
from meterline.store.tables import meter_event_inbox

CHUNK = 100_000  # events moved per statement at most
# PostgreSQL advisory lock key of the move ("mlinbox!" as 8 bytes).
MOVE_LOCK = int.from_bytes(b"mlinbox!", "big", signed=True)

_COLS = ", ".join(c.name for c in meter_event_inbox.columns if c.name != "seq")
_ORDER = "account_id, livemode, customer, seq"

_SQLITE_BOUND = (
    "SELECT max(seq), count(*) FROM (SELECT seq FROM meter_event_inbox ORDER BY seq LIMIT ?)"
)
_SQLITE_INSERT = (
    f"INSERT INTO meter_events ({_COLS}) SELECT {_COLS} FROM meter_event_inbox "
    f"WHERE seq <= ? ORDER BY {_ORDER} ON CONFLICT DO NOTHING"
)
_SQLITE_DELETE = "DELETE FROM meter_event_inbox WHERE seq <= ?"
# One statement, so one snapshot: what is deleted is exactly what is offered to the insert (in
# READ COMMITTED two statements could see different rows).
_PG_MOVE = (
    "WITH moved AS (DELETE FROM meter_event_inbox WHERE seq IN "
    "(SELECT seq FROM meter_event_inbox ORDER BY seq LIMIT %(n)s) "
    f"RETURNING seq, {_COLS}), "
    f"stored AS (INSERT INTO meter_events ({_COLS}) SELECT {_COLS} FROM moved "
    f"ORDER BY {_ORDER} ON CONFLICT DO NOTHING RETURNING 1) "
    "SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM stored)"
)


def _cursor(conn: Connection) -> Any:
    return conn.connection.driver_connection.cursor()  # type: ignore[union-attr]


def move(conn: Connection, limit: int = CHUNK, *, wait: bool = False) -> tuple[int, int]:
    """Move up to `limit` of the oldest pending events into `meter_events`, in the caller's
    write transaction. Returns (events taken out of the inbox, events stored; the difference
    had their identifier stored already). PostgreSQL: when another transaction is moving,
    returns (0, 0) at once, or with `wait` waits for it."""
    cur = _cursor(conn)
    try:
        if conn.dialect.name == "postgresql":
            if wait:
                cur.execute("SELECT pg_advisory_xact_lock(%(k)s)", {"k": MOVE_LOCK})
            else:
                cur.execute("SELECT pg_try_advisory_xact_lock(%(k)s)", {"k": MOVE_LOCK})
                if not cur.fetchone()[0]:
                    return 0, 0
            cur.execute("SELECT EXISTS (SELECT 1 FROM meter_event_inbox)")
            if not cur.fetchone()[0]:
                return 0, 0
            hold_ingest_lock(conn)
            cur.execute(_PG_MOVE, {"n": limit}, prepare=True)
            taken, stored = cur.fetchone()
            return int(taken), int(stored)
        cur.execute(_SQLITE_BOUND, (limit,))
        bound, taken = cur.fetchone()
        if not taken:
            return 0, 0
        cur.execute(_SQLITE_INSERT, (bound,))
        stored = cur.rowcount
        cur.execute(_SQLITE_DELETE, (bound,))
        return int(taken), int(stored)
    finally:
        cur.close()


def move_all(conn: Connection) -> int:
    """Move every pending event, in the caller's write transaction (waiting for a move running
    elsewhere): for work that must see every event received so far (a cancel, a billing run, a
    test clock advance). Returns the events taken out of the inbox."""
    total = 0
    while True:
        taken, _ = move(conn, wait=True)
        total += taken
        if taken < CHUNK:
            return total


def pending(conn: Connection) -> bool:
    """Whether any event waits in the inbox (any account)."""
    cur = _cursor(conn)
    try:
        cur.execute("SELECT 1 FROM meter_event_inbox LIMIT 1")
        return cur.fetchone() is not None
    finally:
        cur.close()


def oldest_pending(conn: Connection) -> int | None:
    """When the oldest event still in the inbox was received (any account: the inbox has no
    index to find one account's quickly, and it holds about a second of events)."""
    cur = _cursor(conn)
    try:
        cur.execute("SELECT created FROM meter_event_inbox ORDER BY seq LIMIT 1")
        row = cur.fetchone()
        return int(row[0]) if row is not None else None
    finally:
        cur.close()


__all__ = ["CHUNK", "MOVE_LOCK", "move", "move_all", "oldest_pending", "pending"]
