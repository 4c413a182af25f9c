"""List envelopes and cursor parameters (`limit`, `starting_after`, `ending_before`)."""

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
