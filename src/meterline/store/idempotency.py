"""Stored idempotent responses: insert-if-absent per dialect, look-up, completion."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, RowMapping

from meterline.store.repo import Scope
from meterline.store.tables import idempotency_keys as t


def _insert_ignore_sqlite(conn: Connection, values: dict[str, Any]) -> bool:
    return conn.execute(sqlite_insert(t).values(**values).on_conflict_do_nothing().returning(t.c.key)).first() is not None


def _insert_ignore_postgresql(conn: Connection, values: dict[str, Any]) -> bool:
    return conn.execute(pg_insert(t).values(**values).on_conflict_do_nothing().returning(t.c.key)).first() is not None


_INSERT_IGNORE = {"sqlite": _insert_ignore_sqlite, "postgresql": _insert_ignore_postgresql}


def _key(scope: Scope, key: str) -> list[Any]:
    return [t.c.account_id == scope.account_id, t.c.livemode == scope.livemode, t.c.key == key]


def claim(conn: Connection, scope: Scope, key: str, request_hash: str, request_id: str, now: int) -> bool:
    """Insert an in-progress marker; False when the key already has a row."""
    values = dict(
        account_id=scope.account_id, livemode=scope.livemode, key=key, request_hash=request_hash,
        created=now, status=None, response=None, request_id=request_id,
    )
    return _INSERT_IGNORE[conn.dialect.name](conn, values)


def load(conn: Connection, scope: Scope, key: str) -> RowMapping | None:
    return conn.execute(sa.select(t).where(*_key(scope, key))).mappings().first()


def restart(conn: Connection, scope: Scope, key: str, request_hash: str, request_id: str, now: int) -> None:
    """Take over an expired or abandoned key as a new in-progress marker."""
    conn.execute(
        t.update().where(*_key(scope, key)).values(
            request_hash=request_hash, created=now, status=None, response=None, request_id=request_id
        )
    )


def complete(conn: Connection, scope: Scope, key: str, status: int, response: bytes) -> None:
    conn.execute(t.update().where(*_key(scope, key)).values(status=status, response=response))


def release(conn: Connection, scope: Scope, key: str, request_id: str) -> None:
    """Forget an in-progress marker (the request failed validation: nothing is stored)."""
    conn.execute(t.delete().where(*_key(scope, key), t.c.request_id == request_id, t.c.status.is_(None)))


def purge_expired(conn: Connection, before: int) -> int:
    return conn.execute(t.delete().where(t.c.created < before)).rowcount
