"""List envelopes, cursor parameters (`limit`, `starting_after`, `ending_before`) and the
`created` range filter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meterline.wire.params import Params


@dataclass(frozen=True)
class Page:
    limit: int
    starting_after: str | None
    ending_before: str | None


def read_page(p: Params) -> Page:
    limit = p.int("limit", min=1, max=100)
    p.exclusive("starting_after", "ending_before")
    return Page(
        limit=limit if limit is not None else 10,
        starting_after=p.str("starting_after"),
        ending_before=p.str("ending_before"),
    )


def envelope(url: str, data: list[Any], has_more: bool) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


RANGE_OPS = ("gt", "gte", "lt", "lte")


def read_created(p: Params, key: str = "created") -> tuple[tuple[str, int], ...]:
    """Stripe's range filter on a timestamp: `created=T` (equal) or any of `created[gt]`,
    `[gte]`, `[lt]`, `[lte]` (Unix seconds); () when absent. Each (op, value): op is "eq" or
    one of RANGE_OPS."""
    raw = p.raw(key)
    if raw is None or raw == "":
        p.read.add(key)
        return ()
    if not isinstance(raw, dict):
        return (("eq", p.int(key, min=0)),)  # type: ignore[return-value]
    r = p.obj(key)
    assert r is not None
    out = tuple((op, v) for op in RANGE_OPS if (v := r.int(op, min=0)) is not None)
    return out
