"""Rollup cells and the query planner that covers local-time buckets with them.

A rollup cell holds the `Partial` of a customer's events of one meter, with one set of declared
dimension values, over one aligned UTC span: a quarter hour (900 s) or an hour (3600 s). Every
zone in use today has an offset that is a multiple of 15 minutes, so every local hour, day, week
and month boundary (in the range of any stored event) falls on a quarter hour: quarter cells cover
the inside of any bucket, hour cells the inside of most buckets, and minute-aligned range edges
are read from raw events.

Always true here:
- `plan(bounds)` covers every bucket exactly once: each second of `[start, end)` lies in exactly
  one hour segment, quarter segment or raw range, and every cell of a segment lies wholly inside
  one bucket (so a cell's partial goes to one bucket, found by its start).
- A plan prefers the coarsest cells: hours where a bucket holds whole UTC hours, quarters for the
  rest of its whole quarter hours, raw events only for what is left (range edges that are not on
  a quarter hour, or buckets of a zone whose offset is not a multiple of 15 minutes).
May import: the standard library only.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

HOUR = 3600
QUARTER = 900
RESOLUTIONS = (HOUR, QUARTER)  # coarsest first

Span = tuple[int, int]


def cell_start(ts: int, resolution: int) -> int:
    return ts - ts % resolution


def _ceil(t: int, step: int) -> int:
    return -((-t) // step) * step


def merge_spans(spans: Sequence[Span]) -> list[Span]:
    """Sorted, with touching or overlapping spans joined."""
    out: list[Span] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


@dataclass(frozen=True)
class Plan:
    """Which spans to read at which resolution: `cells[res]` and `raw`, each sorted and merged."""

    cells: dict[int, list[Span]]
    raw: list[Span]


def plan(bounds: Sequence[Span], resolutions: Sequence[int] = RESOLUTIONS) -> Plan:
    """Cover the buckets `bounds` (sorted, adjacent UTC spans) with cells, coarsest first."""
    cells: dict[int, list[Span]] = {r: [] for r in resolutions}
    raw: list[Span] = []
    for bucket in bounds:
        rest = [bucket]
        for res in resolutions:
            left: list[Span] = []
            for a, b in rest:
                c0, c1 = _ceil(a, res), b - b % res
                if c0 < c1:
                    cells[res].append((c0, c1))
                    if a < c0:
                        left.append((a, c0))
                    if c1 < b:
                        left.append((c1, b))
                else:
                    left.append((a, b))
            rest = left
        raw.extend(rest)
    return Plan({r: merge_spans(s) for r, s in cells.items()}, merge_spans(raw))


def covers(spans: Sequence[Span], starts: Sequence[int], t: int) -> bool:
    """Whether `t` lies in one of `spans` (sorted, disjoint; `starts` their starts)."""
    i = bisect_right(starts, t) - 1
    return i >= 0 and t < spans[i][1]


__all__ = [
    "HOUR",
    "QUARTER",
    "RESOLUTIONS",
    "Plan",
    "Span",
    "cell_start",
    "covers",
    "merge_spans",
    "plan",
]
