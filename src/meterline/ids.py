"""Object ids (a Stripe prefix and random base62 characters) and request ids. Imports nothing of ours."""

from __future__ import annotations

import random
import secrets
import string

_ALPHABET = string.ascii_letters + string.digits
_rng = random.SystemRandom()  # os.urandom underneath: unguessable ids


def random_token(n: int) -> str:
    return "".join(_rng.choices(_ALPHABET, k=n))


def new_id(prefix: str, n: int = 24) -> str:
    return f"{prefix}_{random_token(n)}"


def request_id() -> str:
    return "req_" + secrets.token_hex(8)
