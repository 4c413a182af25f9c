"""Object ids (a Stripe prefix and random base62 characters) and request ids. Imports nothing of ours."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def random_token(n: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(n))


def new_id(prefix: str, n: int = 24) -> str:
    return f"{prefix}_{random_token(n)}"


def request_id() -> str:
    return "req_" + secrets.token_hex(8)
