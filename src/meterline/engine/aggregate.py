"""Aggregation of meter events: the formulas, mergeable partial states, and the analytics oracle.

Owns: the values `Event` and `Row`; `fold` (a formula over raw events); `Partial` with
`partial_of`, `merge` and `finish` (the same answer assembled from rollups such as per-minute
sums, counts and last values); and `usage_rows`, the brute-force reference answer of the meter
usage analytics endpoint.

Always true here:
- Values are `Decimal`, never float, and sums are exact: they run in a context that raises
  rather than rounds, whatever the digits and exponents (values have at most 15 significant
  digits and three-digit exponents, so an exact sum stays small).
- `sum` adds the values, `count` counts the events (as a Decimal), `last` takes the value of
  the event with the greatest `(timestamp, seq)`; `seq` is the arrival order. With no events every
  formula gives `Decimal(0)`: no usage is zero usage (callers that must tell "no events" apart
  look at `Partial.count`).
- `finish(f, merge(partial_of(A), partial_of(B))) == fold(f, A + B)` for every formula, digit
  for digit; `merge` is associative with `EMPTY` as its identity, so rollups combine in any
  grouping. On an exact `(timestamp, seq)` tie (which distinct events never have) the later
  event, or the right-hand partial, wins in both.
- `usage_rows` is deliberately naive (it loops over buckets, then events): it is the reference
  the fast path is tested against, never the fast path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import (
    MAX_EMAX,
    MAX_PREC,
    MIN_EMIN,
    Context,
    Decimal,
    Inexact,
    InvalidOperation,
    Overflow,
    Rounded,
)

from meterline.engine.buckets import bucket_bounds
from meterline.engine.errors import RuleViolation
from meterline.engine.metering import FORMULAS

ZERO = Decimal(0)
# Every sum runs here: unbounded precision, and any rounding raises instead of passing silently.
_EXACT = Context(
    prec=MAX_PREC,
    Emax=MAX_EMAX,
    Emin=MIN_EMIN,
    traps=[Inexact, Rounded, InvalidOperation, Overflow],
)
_exact_add = _EXACT.add
exact_add = _exact_add  # for callers that fold partials in place (services.usage)
exact_mul = _EXACT.multiply  # products of quantities and unit amounts (engine.pricing)


@dataclass(frozen=True)
class Event:
    """One meter event as aggregation sees it. `dimensions` is its payload (string values)."""

    timestamp: int
    value: Decimal
    seq: int
    dimensions: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Partial:
    """What any formula needs of a set of events, and merges with another set's.

    With `count == 0` the `last_*` fields mean nothing (see `EMPTY`)."""

    sum: Decimal
    count: int
    last_ts: int
    last_seq: int
    last_value: Decimal


EMPTY = Partial(sum=ZERO, count=0, last_ts=0, last_seq=0, last_value=ZERO)


@dataclass(frozen=True)
class Row:
    """One analytics row: a meter's value over one bucket for one combination of group-by values.

    `dimensions` holds exactly the group-by keys (a missing payload key gives None), or is None
    when the request groups by nothing."""

    meter_id: str
    bucket_start_time: int
    bucket_end_time: int
    bucket_value: Decimal
    dimensions: dict[str, str | None] | None


def check_formula(formula: str, param: str = "default_aggregation[formula]") -> None:
    if formula not in FORMULAS:
        raise RuleViolation(
            param, f"Invalid {param}: {formula!r}. It must be one of {', '.join(FORMULAS)}."
        )


def fold(formula: str, events: Iterable[Event]) -> Decimal:
    """The formula's value over raw events, straight from the definition."""
    check_formula(formula)
    if formula == "sum":
        total = ZERO
        for e in events:
            total = _exact_add(total, e.value)
        return total
    if formula == "count":
        return Decimal(sum(1 for _ in events))
    best: Event | None = None
    for e in events:
        if best is None or (e.timestamp, e.seq) >= (best.timestamp, best.seq):
            best = e
    return ZERO if best is None else best.value


def partial_of(events: Iterable[Event]) -> Partial:
    """The partial state of a set of events (one pass)."""
    total, count = ZERO, 0
    last: Event | None = None
    for e in events:
        total = _exact_add(total, e.value)
        count += 1
        if last is None or (e.timestamp, e.seq) >= (last.timestamp, last.seq):
            last = e
    if last is None:
        return EMPTY
    return Partial(total, count, last.timestamp, last.seq, last.value)


def merge(a: Partial, b: Partial) -> Partial:
    """The partial state of the union of two disjoint sets of events."""
    if b.count == 0:
        return a
    if a.count == 0:
        return b
    later = b if (b.last_ts, b.last_seq) >= (a.last_ts, a.last_seq) else a
    return Partial(
        _exact_add(a.sum, b.sum), a.count + b.count, later.last_ts, later.last_seq, later.last_value
    )


def finish(formula: str, partial: Partial) -> Decimal:
    """The formula's value from a partial state: equal to `fold` over the same events."""
    check_formula(formula)
    if formula == "sum":
        return partial.sum
    if formula == "count":
        return Decimal(partial.count)
    return partial.last_value if partial.count else ZERO


def dimensions_sort_key(dimensions: Mapping[str, str | None] | None) -> tuple:
    """Rows of a meter sort by this: the (key, value) pairs in key order, None before any value."""
    if not dimensions:
        return ()
    return tuple(
        (key, (0, "") if value is None else (1, value)) for key, value in sorted(dimensions.items())
    )


def row_sort_key(row: Row) -> tuple:
    """The analytics order: meter, then dimensions, then bucket start."""
    return (row.meter_id, dimensions_sort_key(row.dimensions), row.bucket_start_time)


def matches(event: Event, dimension_filters: Mapping[str, str | Sequence[str]]) -> bool:
    """Every filter key holds: the event's value equals the filter value, or is one of the list.

    A payload without the key never matches; an empty list matches nothing."""
    for key, wanted in dimension_filters.items():
        value = event.dimensions.get(key)
        if value is None:
            return False
        if isinstance(wanted, str):
            if value != wanted:
                return False
        elif value not in wanted:
            return False
    return True


def usage_rows(
    events_by_meter: Mapping[str, Sequence[Event]],
    formulas: Mapping[str, str],
    start: int,
    end: int,
    window: str | None,
    tz: str,
    group_by: Mapping[str, Sequence[str]] | None = None,
    filters: Mapping[str, Mapping[str, str | Sequence[str]]] | None = None,
    **param_names: str,
) -> list[Row]:
    """THE ORACLE: the meter usage analytics rows, from raw events, by brute force.

    `events_by_meter` maps each meter to its events (cancelled ones already left out),
    `formulas` names each of those meters' formula, and `group_by` / `filters` are per meter
    (absent means none). A row exists for each bucket with at least one matching event, per meter
    and per distinct combination of the group-by values; an event whose payload lacks a group-by
    key groups under None for that key. Events outside `[start, end)` are in no bucket, so they
    count nowhere. `param_names` (`start_param`, `end_param`, ...) go to `bucket_bounds`.
    """
    group_by = group_by or {}
    filters = filters or {}
    bounds = bucket_bounds(start, end, window, tz, **param_names)
    rows: list[Row] = []
    for meter_id in sorted(events_by_meter):
        formula = formulas[meter_id]
        check_formula(formula)
        keys = sorted(set(group_by.get(meter_id) or ()))
        wanted = filters.get(meter_id) or {}
        kept = [e for e in events_by_meter[meter_id] if matches(e, wanted)]
        for bucket_start, bucket_end in bounds:
            groups: dict[tuple[str | None, ...], list[Event]] = {}
            for e in kept:
                if bucket_start <= e.timestamp < bucket_end:
                    values = tuple(e.dimensions.get(key) for key in keys)
                    groups.setdefault(values, []).append(e)
            for values, members in groups.items():
                rows.append(
                    Row(
                        meter_id=meter_id,
                        bucket_start_time=bucket_start,
                        bucket_end_time=bucket_end,
                        bucket_value=fold(formula, members),
                        dimensions=dict(zip(keys, values, strict=True)) if keys else None,
                    )
                )
    rows.sort(key=row_sort_key)
    return rows
