"""Accounts and secret keys: creating them, and resolving a key to its account and mode."""

from __future__ import annotations

import secrets
import string

from meterline import clock
from meterline.store import accounts as store
from meterline.store.db import Database

_ALPHABET = string.ascii_letters + string.digits
KEY_PREFIXES = ("sk_test_", "sk_live_")


def generate_key(livemode: bool = False) -> str:
    return ("sk_live_" if livemode else "sk_test_") + "".join(
        secrets.choice(_ALPHABET) for _ in range(32)
    )


def check_key_format(key: str) -> None:
    if (
        not key.startswith(KEY_PREFIXES)
        or len(key) < 12
        or not key.isascii()
        or any(c.isspace() for c in key)
    ):
        raise ValueError(
            "An API key must start with sk_test_ (test mode) or sk_live_ (live mode), followed by at "
            "least 4 characters without spaces, e.g. sk_test_mysecret."
        )


def _new_account_id() -> str:
    return "acct_" + "".join(secrets.choice(_ALPHABET) for _ in range(16))


def ensure_default_account(db: Database) -> str:
    with db.write() as conn:
        acct = store.default_account(conn)
        if acct is None:
            acct = _new_account_id()
            store.create_account(conn, acct, clock.now(), is_default=True)
        return acct


def ensure_key(db: Database, key: str) -> tuple[str, bool]:
    """Make sure `key` exists for the default account; returns (account, created)."""
    check_key_format(key)
    acct = ensure_default_account(db)
    with db.write() as conn:
        found = store.find_key(conn, key)
        if found is not None:
            return found[0], False
        store.store_key(conn, acct, key, clock.now())
        return acct, True


def has_keys(db: Database, account_id: str) -> bool:
    with db.read() as conn:
        return store.count_keys(conn, account_id) > 0


def create_key(
    db: Database, *, new_account: bool = False, livemode: bool = False
) -> tuple[str, str]:
    """A new secret key for the default account, or for a new account; returns (account, key)."""
    key = generate_key(livemode)
    if new_account:
        with db.write() as conn:
            acct = _new_account_id()
            store.create_account(conn, acct, clock.now(), is_default=False)
            store.store_key(conn, acct, key, clock.now())
        return acct, key
    acct = ensure_default_account(db)
    with db.write() as conn:
        store.store_key(conn, acct, key, clock.now())
    return acct, key


def default_account(db: Database) -> str | None:
    with db.read() as conn:
        return store.default_account(conn)


def account_exists(db: Database, account_id: str) -> bool:
    with db.read() as conn:
        return store.account_exists(conn, account_id)


def resolve_key(db: Database, key: str) -> tuple[str, bool] | None:
    with db.read() as conn:
        return store.find_key(conn, key)
