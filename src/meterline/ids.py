"""Object ids (a Stripe prefix and random base62 characters) and request ids. Imports nothing of ours."""

from __future__ import annotations

import os
import secrets
import string

_ALPHABET = (string.ascii_letters + string.digits).encode()
# Bytes 0..247 map evenly onto the 62 characters (4 times each); 248..255 are dropped, so every
# character is equally likely.
_TABLE = bytes(_ALPHABET[b % 62] if b < 248 else 0 for b in range(256))
_DROP = bytes(range(248, 256))


def random_token(n: int, alphabet_table: bytes = _TABLE) -> str:
    """n random characters of [A-Za-z0-9] from the OS's random source."""
    out = b""
    while len(out) < n:
        out += os.urandom(n + 8).translate(alphabet_table, _DROP)
    return out[:n].decode()


_UPPER_TABLE = bytes(
    (string.ascii_uppercase + string.digits).encode()[b % 36] if b < 252 else 0 for b in range(256)
)
_UPPER_DROP = bytes(range(252, 256))


def random_upper(n: int) -> str:
    """n random characters of [A-Z0-9]."""
    out = b""
    while len(out) < n:
        out += os.urandom(n + 8).translate(_UPPER_TABLE, _UPPER_DROP)
    return out[:n].decode()


def new_id(prefix: str, n: int = 24) -> str:
    return f"{prefix}_{random_token(n)}"


def request_id() -> str:
    return "req_" + secrets.token_hex(8)
