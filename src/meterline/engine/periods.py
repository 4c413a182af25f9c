"""Subscription billing periods: the n-th period boundary after a `billing_cycle_anchor`.

Always true here:
- Boundaries are computed from the anchor, never from the previous boundary, in UTC: a monthly
  cycle anchored on Jan 31 10:00 gives Feb 28 (29 in a leap year) 10:00, then Mar 31 10:00
  (month ends clamp, and the next month returns to the anchor's day).
- `boundary(anchor, interval, count, 0) == anchor`, boundaries strictly increase with n, and
  `period_containing` returns the `[start, end)` holding `t` (for any `t >= anchor`).
May import: the standard library only.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta

INTERVALS = ("day", "week", "month", "year")


def _add_months(d: datetime, months: int) -> datetime:
    total = d.year * 12 + (d.month - 1) + months
    year, month = divmod(total, 12)
    month += 1
    day = min(d.day, calendar.monthrange(year, month)[1])
    return d.replace(year=year, month=month, day=day)


def boundary(anchor: int, interval: str, count: int, n: int) -> int:
    """Unix seconds of the start of period n (period 0 starts at the anchor)."""
    if interval not in INTERVALS:
        raise ValueError(f"unknown interval {interval!r}")
    steps = n * count
    if interval == "day":
        return anchor + steps * 86_400
    if interval == "week":
        return anchor + steps * 7 * 86_400
    d = datetime.fromtimestamp(anchor, UTC)
    months = steps if interval == "month" else steps * 12
    return int(_add_months(d, months).timestamp())


def period_containing(anchor: int, interval: str, count: int, t: int) -> tuple[int, int, int]:
    """(n, start, end) of the period holding t, for t >= anchor."""
    if t < anchor:
        raise ValueError("t is before the anchor")
    if interval in ("day", "week"):
        length = count * (86_400 if interval == "day" else 7 * 86_400)
        n = (t - anchor) // length
    else:
        a, b = datetime.fromtimestamp(anchor, UTC), datetime.fromtimestamp(t, UTC)
        months = (b.year - a.year) * 12 + (b.month - a.month)
        per = count if interval == "month" else count * 12
        n = max(0, months // per)
        while boundary(anchor, interval, count, n) > t:
            n -= 1
        while boundary(anchor, interval, count, n + 1) <= t:
            n += 1
    return n, boundary(anchor, interval, count, n), boundary(anchor, interval, count, n + 1)


def trial_end(start: int, days: int) -> int:
    return start + int(timedelta(days=days).total_seconds())


__all__ = ["INTERVALS", "boundary", "period_containing", "trial_end"]
