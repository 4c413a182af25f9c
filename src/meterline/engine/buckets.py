"""Time buckets for usage analytics: the windows of a range, local to an IANA time zone.

Owns: `bucket_bounds` (the buckets covering `[start, end)` for a grouping window and a zone),
`bucket_index` (the bucket an instant falls in), and the checks of those parameters.

Always true here:
- Instants are `int` Unix seconds (UTC). A bucket is a half-open `(start, end)` pair. The buckets
  of a range are in time order, contiguous, non-overlapping, and cover exactly `[start, end)`;
  only the first and the last are clipped (to `start` and `end`).
- A bucket is the run of instants whose local wall time carries the same label: the local hour,
  the local date, the ISO week (Monday 00:00) or the month (the 1st, 00:00). A label's bucket
  starts at the first instant whose wall time reaches the label's start:
  - a start that a DST fold makes ambiguous takes the earlier instant, so the repeated wall
    times stay in one bucket (Berlin's 02:00 hour on the last Sunday of October lasts two hours,
    and that day 25);
  - a start that a DST gap skips takes the first instant after the gap (America/Santiago's
    first day of DST starts at 01:00; Australia/Lord_Howe's 02:00 hour starts at 02:30 on the
    day its clocks move 30 minutes forward);
  - a label that a gap skips whole has no bucket (Berlin has no 02:00 hour on the last Sunday of
    March: that day has 23 hour buckets).
- With 30- and 45-minute offsets (Asia/Kolkata, Asia/Kathmandu), hour buckets start at local :00,
  which is not a UTC hour boundary; this is why `start` and `end` must be minute-aligned.
- At most `MAX_BUCKETS` buckets; a range that would need more is refused, and a far wider one is
  refused before any boundary is computed. 50,000 buckets take about 5 ms (hours) to 40 ms
  (months): each month or week start is converted on its own, while hour and day starts between
  two conversions 50 hours apart follow by arithmetic when the offset is the same at both ends
  (see `_SAFE_SPAN`).
"""

from __future__ import annotations

from bisect import bisect_right
from datetime import date, datetime, time, timedelta
from operator import itemgetter
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from meterline.engine.errors import RuleViolation

WINDOWS = ("hour", "day", "week", "month")
MAX_BUCKETS = 50_000
# The instants a range may use: 1970-01-01 up to 9999-01-01 (UTC), where datetime can follow.
MIN_TIMESTAMP = 0
MAX_TIMESTAMP = 253_370_764_800

_HOUR = 3600
_DAY = 86_400
_STEP = {"hour": _HOUR, "day": _DAY, "week": 7 * _DAY}  # a month has no fixed length
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()  # a Thursday
# No zone changes its UTC offset twice within this span: the closest two changes in the tz
# database are about four days apart (Africa/Freetown, 1939). So when the offset is the same at
# both ends of a span this short, it is the same throughout, and the hour and day boundaries in
# between follow by plain arithmetic (see `_cuts`).
_SAFE_SPAN = 50 * _HOUR
# The cap is first checked on a count of labels, before any boundary is computed. Labels that a
# gap skips whole make buckets fewer than labels, never by this many in one range.
_CAP_SLACK = 1000

_first_start = itemgetter(0)
_HOURS = [timedelta(hours=h) for h in range(24)]
_AT_FOLD = [time(h, fold=1) for h in range(24)]
_fromordinal = datetime.fromordinal
_combine = datetime.combine


def bucket_bounds(
    start: int,
    end: int,
    window: str | None,
    tz: str,
    *,
    start_param: str = "start_time",
    end_param: str = "end_time",
    window_param: str = "value_grouping_window",
    timezone_param: str = "timezone",
) -> list[tuple[int, int]]:
    """The buckets covering `[start, end)` for `window` in zone `tz` (see the module docstring).

    `window` None gives the single bucket `[(start, end)]`. The `*_param` names are the request
    parameters a broken rule names (e.g. `starts_at`/`ends_at` in the newer API shape).
    """
    check_range(start, end, start_param=start_param, end_param=end_param)
    zone = zone_of(tz, timezone_param)
    if window is None:
        return [(start, end)]
    if window not in WINDOWS:
        raise RuleViolation(
            window_param,
            f"Invalid {window_param}: {window!r}. It must be one of {', '.join(WINDOWS)}.",
        )
    first = _floor_label(window, start + _offset_at(zone, start))
    last = _floor_label(window, end - 1 + _offset_at(zone, end - 1))
    if _label_count(window, first, last) > MAX_BUCKETS + _CAP_SLACK:
        raise _too_many(window_param)
    cuts = _cuts(zone, start, end, window, first)
    if len(cuts) > MAX_BUCKETS:
        raise _too_many(window_param)
    return list(zip(cuts, cuts[1:] + [end], strict=True))


def bucket_index(bounds: list[tuple[int, int]], ts: int) -> int | None:
    """The index of the bucket of `bounds` (as `bucket_bounds` gives them) holding `ts`, or None
    when `ts` lies outside them. O(log n)."""
    i = bisect_right(bounds, ts, key=_first_start) - 1
    if i < 0 or ts >= bounds[i][1]:
        return None
    return i


def check_range(
    start: int, end: int, *, start_param: str = "start_time", end_param: str = "end_time"
) -> None:
    """`start` and `end` are minute-aligned Unix seconds in range, and `end` is after `start`."""
    _check_instant(start, start_param)
    _check_instant(end, end_param)
    if end <= start:
        raise RuleViolation(
            end_param, f"{end_param} ({end}) must be after {start_param} ({start})."
        )


def zone_of(name: str, param: str = "timezone") -> ZoneInfo:
    """The IANA zone called `name`, or RuleViolation naming `param`."""
    if isinstance(name, str) and name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    raise RuleViolation(
        param,
        f"Invalid {param}: {name!r} is not a known IANA time zone name (such as Europe/Berlin or UTC).",
    )


def _check_instant(value: int, param: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RuleViolation(param, f"Invalid {param}: it must be an integer Unix timestamp.")
    if not MIN_TIMESTAMP <= value <= MAX_TIMESTAMP:
        raise RuleViolation(
            param,
            f"Invalid {param}: {value} must lie between {MIN_TIMESTAMP} and {MAX_TIMESTAMP}.",
        )
    if value % 60:
        raise RuleViolation(
            param,
            f"Invalid {param}: {value} must be aligned to a minute (a multiple of 60 seconds).",
        )


def _too_many(param: str) -> RuleViolation:
    return RuleViolation(
        param,
        f"The range holds more than {MAX_BUCKETS} buckets of this {param}. "
        f"Use a wider {param} or a shorter range.",
    )


def _seconds(offset: timedelta) -> int:
    return offset.days * _DAY + offset.seconds


def _offset_at(zone: ZoneInfo, ts: int) -> int:
    """The zone's UTC offset, in seconds, at instant `ts`."""
    return _seconds(datetime.fromtimestamp(ts, zone).utcoffset())


def _first_instant(zone: ZoneInfo, wall: int) -> tuple[int, int]:
    """The first instant whose wall time reaches `wall` (a whole local hour, in local seconds since
    1970-01-01 00:00), and the UTC offset at that instant.

    Ambiguous (a fold): the earlier instant. Nonexistent (a gap): the first instant after the gap.
    zoneinfo follows PEP 495: `fold=0` gives the offset before a transition, `fold=1` the one after.
    """
    local = _fromordinal(_EPOCH_ORDINAL + wall // _DAY)
    if wall % _DAY:
        local += _HOURS[wall % _DAY // _HOUR]
    before = zone.utcoffset(local)
    after = zone.utcoffset(_combine(local, _AT_FOLD[local.hour]))
    if before >= after:  # one instant, or a fold (the earlier instant has the larger offset)
        offset = before.days * _DAY + before.seconds
        return wall - offset, offset
    # A gap: the transition T has T + before <= wall < T + after. Find T, the first instant
    # whose offset is no longer `before`, in (wall - after, wall - before].
    lo, hi = wall - _seconds(after), wall - _seconds(before)
    old = _seconds(before)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset_at(zone, mid) == old:
            lo = mid
        else:
            hi = mid
    return hi, _offset_at(zone, hi)


def _floor_label(window: str, wall: int) -> int:
    """The start (local wall seconds) of the label holding wall time `wall`."""
    if window == "hour":
        return wall - wall % _HOUR
    days = wall // _DAY
    if window == "day":
        return days * _DAY
    if window == "week":
        return (days - (days + 3) % 7) * _DAY  # back to Monday
    d = date.fromordinal(_EPOCH_ORDINAL + days)
    return (date(d.year, d.month, 1).toordinal() - _EPOCH_ORDINAL) * _DAY


def _next_month(label: int) -> int:
    d = date.fromordinal(_EPOCH_ORDINAL + label // _DAY)
    year, month = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return (date(year, month, 1).toordinal() - _EPOCH_ORDINAL) * _DAY


def _label_count(window: str, first: int, last: int) -> int:
    if window == "month":
        a = date.fromordinal(_EPOCH_ORDINAL + first // _DAY)
        b = date.fromordinal(_EPOCH_ORDINAL + last // _DAY)
        return (b.year - a.year) * 12 + b.month - a.month + 1
    return (last - first) // _STEP[window] + 1


def _cuts(zone: ZoneInfo, start: int, end: int, window: str, label: int) -> list[int]:
    """The bucket starts in `[start, end)`: `start`, then the first instant of each label after
    `label` (the label holding `start`), in order and without repeats."""
    cuts = [start]
    # `edge` is the first instant of `label` (never after `start`), `offset` the offset there.
    edge, offset = _first_instant(zone, label)
    step = _STEP.get(window)
    stride = _SAFE_SPAN // step if step else 0  # labels per arithmetic stride: 50 hours, 2 days
    while True:
        if stride:
            far = label + stride * step
            far_edge = far - offset
            if far_edge - edge <= _SAFE_SPAN and _first_instant(zone, far) == (far_edge, offset):
                # The offset holds from `edge` to `far_edge`, so each label in between starts
                # exactly `offset` before its wall time.
                first = label + step - offset
                if first <= cuts[-1]:
                    first += ((cuts[-1] - first) // step + 1) * step
                cuts.extend(range(first, min(far_edge, end - 1) + 1, step))
                if far_edge >= end:
                    return cuts
                label, edge = far, far_edge
                continue
        label = label + step if step else _next_month(label)
        at, offset = _first_instant(zone, label)
        if at >= end:
            return cuts
        if at > cuts[-1]:
            cuts.append(at)
        edge = at
