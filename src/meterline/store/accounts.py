"""Accounts and their secret keys. Keys are stored as SHA-256 digests, never in clear:
a key is 190 bits of randomness, so a plain digest cannot be reversed by guessing."""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from meterline.store.tables import accounts, api_keys


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def default_account(conn: Connection) -> str | None:
    row = conn.execute(
        sa.select(accounts.c.id).where(accounts.c.is_default.is_(True)).limit(1)
    ).first()
    return row[0] if row else None


def account_exists(conn: Connection, account_id: str) -> bool:
    return (
        conn.execute(sa.select(accounts.c.id).where(accounts.c.id == account_id)).first()
        is not None
    )


def create_account(conn: Connection, account_id: str, now: int, *, is_default: bool) -> None:
    conn.execute(accounts.insert().values(id=account_id, created=now, is_default=is_default))


def find_key(conn: Connection, key: str) -> tuple[str, bool] | None:
    row = conn.execute(
        sa.select(api_keys.c.account_id, api_keys.c.livemode).where(
            api_keys.c.key_hash == key_digest(key)
        )
    ).first()
    return (row[0], bool(row[1])) if row else None


def store_key(conn: Connection, account_id: str, key: str, now: int) -> None:
    conn.execute(
        api_keys.insert().values(
            key_hash=key_digest(key),
            account_id=account_id,
            livemode=key.startswith("sk_live_"),
            key_hint=key[:8] + "..." + key[-4:],
            created=now,
        )
    )


def count_keys(conn: Connection, account_id: str) -> int:
    return conn.execute(
        sa.select(sa.func.count()).select_from(api_keys).where(api_keys.c.account_id == account_id)
    ).scalar_one()
