"""Stored idempotent responses: the per-dialect key lock, look-up and storage.

A response is stored in the same transaction as the change it reports, so a replay can never
describe a change that did not commit, and a change can never commit without its response.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy.engine import Connection

from meterline.store.repo import Scope
from meterline.store.tables import idempotency_keys as t


def _lock_sqlite(conn: Connection, scope: Scope, key: str) -> bool:
    return True  # the transaction already holds SQLite's single write lock


def _lock_postgresql(conn: Connection, scope: Scope, key: str) -> bool:
    digest = hashlib.sha256(f"{scope.account_id}|{scope.livemode}|{key}".encode()).digest()
    n = int.from_bytes(digest[:8], "big", signed=True)
    return bool(conn.exec_driver_sql("SELECT pg_try_advisory_xact_lock(%(n)s)", {"n": n}).scalar())


_LOCK = {"sqlite": _lock_sqlite, "postgresql": _lock_postgresql}


def lock(conn: Connection, scope: Scope, key: str) -> bool:
    """Hold the key for this transaction; False when another transaction holds it."""
    return _LOCK[conn.dialect.name](conn, scope, key)


_COLUMNS = "account_id, livemode, key, request_hash, created, status, response, request_id"
_SQL = {
    dialect: {
        "load": f"SELECT request_hash, created, status, response, request_id FROM idempotency_keys "
        f"WHERE account_id = {ph} AND livemode = {ph} AND key = {ph}",
        "forget": f"DELETE FROM idempotency_keys WHERE account_id = {ph} AND livemode = {ph} AND key = {ph}",
        "store": f"INSERT INTO idempotency_keys ({_COLUMNS}) VALUES ({', '.join([ph] * 8)})",
    }
    for dialect, ph in (("sqlite", "?"), ("postgresql", "%s"))
}


def _run(conn: Connection, name: str, params: tuple[Any, ...]) -> Any:
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cur.execute(_SQL[conn.dialect.name][name], params)
        return cur.fetchone() if name == "load" else None
    finally:
        cur.close()


def load(conn: Connection, scope: Scope, key: str) -> dict[str, Any] | None:
    row = _run(conn, "load", (scope.account_id, scope.livemode, key))
    if row is None:
        return None
    return dict(zip(("request_hash", "created", "status", "response", "request_id"), row))


def forget(conn: Connection, scope: Scope, key: str) -> None:
    _run(conn, "forget", (scope.account_id, scope.livemode, key))


def store(conn: Connection, scope: Scope, key: str, request_hash: str, request_id: str, now: int, status: int, response: bytes) -> None:
    _run(conn, "store", (scope.account_id, scope.livemode, key, request_hash, now, status, response, request_id))


def purge_expired(conn: Connection, before: int) -> int:
    return conn.execute(t.delete().where(t.c.created < before)).rowcount
