"""Meter usage: the analytics answer and event summaries, from stored events.

The answer is assembled in one pass: each event is placed in its local-time bucket by bisection
and folded into a mergeable partial (`engine.aggregate`), per meter, group and bucket. The
brute-force oracle (`engine.aggregate.usage_rows`) is what tests compare this with.
Always true: cancelled events count nowhere; for meters with an `event_time_window`, only the
most recently received event per customer and UTC hour or day counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from meterline.engine.aggregate import (
    EMPTY,
    Event,
    Partial,
    Row,
    finish,
    matches,
    merge,
    partial_of,
    row_sort_key,
)
from meterline.engine.buckets import bucket_bounds, bucket_index
from meterline.engine.metering import window_start
from meterline.services import ServiceError, not_found
from meterline.services import meters as meters_service
from meterline.store.repo import Repo
from meterline.store.tables import customers, meter_events, meters


@dataclass(frozen=True)
class MeterQuery:
    meter_id: str
    group_by: tuple[str, ...] = ()
    filters: Mapping[str, str | Sequence[str]] | None = None


def load_events(
    repo: Repo, customer: str, meter_ids: Sequence[str], start: int, end: int
) -> dict[str, list[Event]]:
    """The customer's counting events of these meters in [start, end), per meter."""
    out: dict[str, list[Event]] = {m: [] for m in meter_ids}
    if not meter_ids:
        return out
    t = meter_events.c
    q = repo.select(
        meter_events,
        t.customer == customer,
        t.meter.in_(list(meter_ids)),
        t.timestamp >= start,
        t.timestamp < end,
        t.cancelled_at.is_(None),
    ).with_only_columns(t.meter, t.timestamp, t.value, t.seq, t.payload)
    for m, ts, value, seq, payload in repo.conn.execute(q):
        out[m].append(Event(ts, value, seq, payload))
    windows = {
        r["id"]: r["event_time_window"]
        for r in (repo.get(meters, m) for m in meter_ids)
        if r is not None and r["event_time_window"]
    }
    for m, w in windows.items():
        latest: dict[int, Event] = {}
        for e in out[m]:
            k = window_start(e.timestamp, w)
            if k not in latest or e.seq > latest[k].seq:
                latest[k] = e
        out[m] = sorted(latest.values(), key=lambda e: e.seq)
    return out


def meters_with_usage(repo: Repo, customer: str, start: int, end: int) -> list[str]:
    t = meter_events.c
    q = (
        sa.select(t.meter)
        .where(
            t.account_id == repo.scope.account_id,
            t.livemode == repo.scope.livemode,
            t.customer == customer,
            t.timestamp >= start,
            t.timestamp < end,
            t.cancelled_at.is_(None),
        )
        .distinct()
    )
    return sorted(r[0] for r in repo.conn.execute(q))


def check_customer(repo: Repo, customer: str, param: str = "customer") -> None:
    row = repo.get(customers, customer)
    if row is None or row["deleted"]:
        raise not_found("customer", customer, param)


def aggregate(
    events_by_meter: Mapping[str, Sequence[Event]],
    formulas: Mapping[str, str],
    bounds: list[tuple[int, int]],
    queries: Mapping[str, MeterQuery],
) -> list[Row]:
    """One pass per meter: bucket by bisection, group, fold into partials, finish."""
    rows: list[Row] = []
    for meter_id, events in events_by_meter.items():
        q = queries.get(meter_id) or MeterQuery(meter_id)
        keys = sorted(set(q.group_by))
        wanted = q.filters or {}
        acc: dict[tuple[int, tuple[str | None, ...]], Partial] = {}
        for e in events:
            if wanted and not matches(e, wanted):
                continue
            i = bucket_index(bounds, e.timestamp)
            if i is None:
                continue
            k = (i, tuple(e.dimensions.get(key) for key in keys))
            acc[k] = merge(acc.get(k, EMPTY), partial_of((e,)))
        formula = formulas[meter_id]
        for (i, values), part in acc.items():
            rows.append(
                Row(
                    meter_id,
                    bounds[i][0],
                    bounds[i][1],
                    finish(formula, part),
                    dict(zip(keys, values, strict=True)) if keys else None,
                )
            )
    rows.sort(key=row_sort_key)
    return rows


def meter_usage(
    repo: Repo,
    customer: str,
    start: int,
    end: int,
    window: str | None,
    tz: str,
    queries: list[MeterQuery] | None,
    *,
    param_names: Mapping[str, str],
    meter_param: str,
) -> list[Row]:
    bounds = bucket_bounds(start, end, window, tz, **param_names)
    check_customer(repo, customer)
    formulas: dict[str, str] = {}
    by_meter: dict[str, MeterQuery] = {}
    if queries:
        for i, q in enumerate(queries):
            meter = meters_service.get(repo, q.meter_id, param=meter_param.format(i=i))
            declared = set(meter["dimension_payload_keys"] or [])
            for j, key in enumerate(q.group_by):
                if key not in declared:
                    raise ServiceError(
                        400,
                        f"The meter {q.meter_id} does not declare the dimension {key!r}; it declares "
                        f"{', '.join(sorted(declared)) or 'none'} (dimension_payload_keys).",
                        code="parameter_invalid",
                        param=f"meters[{i}][dimension_group_by_keys][{j}]",
                    )
            for key in q.filters or {}:
                if key not in declared:
                    raise ServiceError(
                        400,
                        f"The meter {q.meter_id} does not declare the dimension {key!r}, so it cannot filter by it.",
                        code="parameter_invalid",
                        param=f"meters[{i}][dimension_filters][{key}]",
                    )
            formulas[q.meter_id] = meter["formula"]
            by_meter[q.meter_id] = q
    else:
        for mid in meters_with_usage(repo, customer, start, end):
            formulas[mid] = meters_service.get(repo, mid)["formula"]
    events = load_events(repo, customer, list(formulas), start, end)
    return aggregate(events, formulas, bounds, by_meter)


def event_summaries(
    repo: Repo, meter_id: str, customer: str, start: int, end: int, window: str | None
) -> list[tuple[int, int, Any]]:
    """(start, end, value) for every UTC hour or day of [start, end), or the whole range."""
    meter = meters_service.get(repo, meter_id)
    check_customer(repo, customer)
    align = {"hour": 3600, "day": 86400}.get(window or "", 60)
    for name, value in (("start_time", start), ("end_time", end)):
        if value % 60:
            raise ServiceError(
                400,
                f"{name} must be aligned to a minute boundary (a multiple of 60 seconds).",
                code="parameter_invalid",
                param=name,
            )
        if value % align:
            raise ServiceError(
                400,
                f"With value_grouping_window={window}, {name} must be aligned to a UTC {window} boundary.",
                code="parameter_invalid",
                param=name,
            )
    if end <= start:
        raise ServiceError(
            400, "end_time must be after start_time.", code="parameter_invalid", param="end_time"
        )
    bounds = bucket_bounds(start, end, window, "UTC")
    events = load_events(repo, customer, [meter_id], start, end)[meter_id]
    acc: dict[int, Partial] = {}
    for e in events:
        i = bucket_index(bounds, e.timestamp)
        if i is not None:
            acc[i] = merge(acc.get(i, EMPTY), partial_of((e,)))
    return [
        (b0, b1, finish(meter["formula"], acc.get(i, EMPTY))) for i, (b0, b1) in enumerate(bounds)
    ]
