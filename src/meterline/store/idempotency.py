"""Stored idempotent responses: the per-dialect key lock, look-up and storage.

A response is stored in the same transaction as the change it reports, so a replay can never
describe a change that did not commit, and a change can never commit without its response.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from sqlalchemy.engine import Connection

from meterline.store.fast import POINT, compiled
from meterline.store.repo import Scope
from meterline.store.tables import idempotency_keys as t

_COLUMNS = "account_id, livemode, key, request_hash, created, status, response, request_id"
_FIELDS = ("request_hash", "created", "status", "response", "request_id")
_SQL = {
    dialect: {
        "load": f"SELECT request_hash, created, status, response, request_id FROM idempotency_keys "
        f"WHERE account_id = {ph} AND livemode = {ph} AND key = {ph}",
        "forget": f"DELETE FROM idempotency_keys WHERE account_id = {ph} AND livemode = {ph} AND key = {ph}",
        "store": f"INSERT INTO idempotency_keys ({_COLUMNS}) VALUES ({', '.join([ph] * 8)})",
    }
    for dialect, ph in (("sqlite", "?"), ("postgresql", "%s"))
}
# PostgreSQL: take the key's transaction lock and read its row in one round trip.
_LOCK_AND_LOAD_PG = (
    "SELECT pg_try_advisory_xact_lock(%s), r.request_hash, r.created, r.status, r.response, r.request_id "
    "FROM (SELECT 1) AS one LEFT JOIN idempotency_keys AS r "
    "ON r.account_id = %s AND r.livemode = %s AND r.key = %s"
)


def _lock_number(scope: Scope, key: str) -> int:
    digest = hashlib.sha256(f"{scope.account_id}|{scope.livemode}|{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _lock_and_load_sqlite(
    conn: Connection, scope: Scope, key: str
) -> tuple[bool, dict[str, Any] | None]:
    return True, load(conn, scope, key)  # the transaction already holds SQLite's single write lock


def _lock_and_load_postgresql(
    conn: Connection, scope: Scope, key: str
) -> tuple[bool, dict[str, Any] | None]:
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cur.execute(
            _LOCK_AND_LOAD_PG,
            (_lock_number(scope, key), scope.account_id, scope.livemode, key),
            prepare=False,  # see lock_and_load_many
        )
        row = cur.fetchone()
    finally:
        cur.close()
    locked = bool(row[0])
    if not locked or row[1] is None:
        return locked, None
    return True, dict(zip(_FIELDS, row[1:], strict=False))


_LOCK_AND_LOAD = {"sqlite": _lock_and_load_sqlite, "postgresql": _lock_and_load_postgresql}


def lock_and_load(conn: Connection, scope: Scope, key: str) -> tuple[bool, dict[str, Any] | None]:
    """Hold the key for this transaction and read its stored response. (False, None) when another
    transaction holds the key (PostgreSQL; on SQLite the write lock already excludes others)."""
    return _LOCK_AND_LOAD[conn.dialect.name](conn, scope, key)


# PostgreSQL: lock and read every key of a batch in one round trip. The keys travel as one JSON
# array (psycopg dumps arrays element by element in Python; orjson writes this in C).
_LOCK_AND_LOAD_MANY_PG = (
    "SELECT k.i, pg_try_advisory_xact_lock(k.n), r.request_hash, r.created, r.status, r.response, r.request_id "
    "FROM json_to_recordset(%s::json) AS k(i int, n bigint, account_id text, livemode boolean, key text) "
    "LEFT JOIN idempotency_keys AS r ON r.account_id = k.account_id AND r.livemode = k.livemode AND r.key = k.key "
    "ORDER BY k.i"
)


def lock_and_load_many(
    conn: Connection, items: list[tuple[Scope, str]]
) -> list[tuple[bool, dict[str, Any] | None]]:
    """`lock_and_load` for several keys at once (in the order given)."""
    if conn.dialect.name != "postgresql" or len(items) < 2:
        return [lock_and_load(conn, scope, key) for scope, key in items]
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        # Never a prepared statement: a generic plan made while the table was small (a hash join
        # over a sequential scan) would be kept as the table grows; planned each time, the join
        # uses the primary key. (Measured: creates fell from 3,000/s to 1,000/s as the table grew.)
        keys = orjson.dumps(
            [
                {
                    "i": i,
                    "n": _lock_number(s, k),
                    "account_id": s.account_id,
                    "livemode": s.livemode,
                    "key": k,
                }
                for i, (s, k) in enumerate(items)
            ]
        ).decode()
        cur.execute(_LOCK_AND_LOAD_MANY_PG, (keys,), prepare=False)
        rows = cur.fetchall()
    finally:
        cur.close()
    out: list[tuple[bool, dict[str, Any] | None]] = []
    for row in rows:
        locked = bool(row[1])
        out.append(
            (
                locked,
                dict(zip(_FIELDS, row[2:], strict=False))
                if locked and row[2] is not None
                else None,
            )
        )
    return out


def lock(conn: Connection, scope: Scope, key: str) -> bool:
    """Hold the key for this transaction; False when another transaction holds it."""
    if conn.dialect.name != "postgresql":
        return True
    return bool(
        conn.exec_driver_sql(
            "SELECT pg_try_advisory_xact_lock(%(n)s)", {"n": _lock_number(scope, key)}
        ).scalar()
    )


def _run(conn: Connection, name: str, params: tuple[Any, ...]) -> Any:
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cur.execute(_SQL[conn.dialect.name][name], params, **POINT[conn.dialect.name])
        return cur.fetchone() if name == "load" else None
    finally:
        cur.close()


def load(conn: Connection, scope: Scope, key: str) -> dict[str, Any] | None:
    row = _run(conn, "load", (scope.account_id, scope.livemode, key))
    if row is None:
        return None
    return dict(
        zip(("request_hash", "created", "status", "response", "request_id"), row, strict=False)
    )


def forget(conn: Connection, scope: Scope, key: str) -> None:
    _run(conn, "forget", (scope.account_id, scope.livemode, key))


def store(
    conn: Connection,
    scope: Scope,
    key: str,
    request_hash: str,
    request_id: str,
    now: int,
    status: int,
    response: bytes,
) -> None:
    _run(
        conn,
        "store",
        (scope.account_id, scope.livemode, key, request_hash, now, status, response, request_id),
    )


def store_many(conn: Connection, rows: list[tuple[Any, ...]]) -> None:
    """Store several responses at once: rows of (account_id, livemode, key, request_hash,
    created, status, response, request_id)."""
    if not rows:
        return
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        if conn.dialect.name != "postgresql":
            cur.executemany(_SQL["sqlite"]["store"], rows)
        elif len(rows) == 1:
            cur.execute(_SQL["postgresql"]["store"], rows[0], prepare=True)
        else:
            # One statement, one round trip (psycopg's executemany pipelines one per row).
            ct = compiled(t, conn.dialect)
            keys = _COLUMNS.split(", ")
            cur.execute(
                ct.insert_rows_sql,
                (ct.insert_rows_param([dict(zip(keys, row, strict=True)) for row in rows]),),
                prepare=True,
            )
    finally:
        cur.close()


def purge_expired(conn: Connection, before: int) -> int:
    return conn.execute(t.delete().where(t.c.created < before)).rowcount
