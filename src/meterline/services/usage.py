"""Meter usage: the analytics answer and event summaries, from rollups and raw events.

`collect` covers the local-time buckets with the coarsest rollup cells that fit wholly inside
them (hours, then quarter hours; `engine.rollups.plan`), reads the uncovered edges and the cells
touched by queued cancellations from raw events, and adds the raw events above the rollup
watermark, all in one snapshot; each event or cell is folded into a mergeable partial per meter,
group and bucket. The brute-force oracle (`engine.aggregate.usage_rows`) is what tests compare
this with.
Always true: every counting event is folded exactly once, whether the builder has folded it or
not; cancelled events count nowhere; for meters with an `event_time_window`, only the most
recently received event per customer and UTC hour or day counts.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from meterline import clock
from meterline.engine.aggregate import (
    EMPTY,
    ZERO,
    Event,
    Partial,
    Row,
    exact_add,
    finish,
    matches,
    row_sort_key,
)
from meterline.engine.buckets import bucket_bounds
from meterline.engine.metering import window_start
from meterline.engine.rollups import RESOLUTIONS, cell_start, covers, merge_spans, plan
from meterline.services import ServiceError, not_found
from meterline.services import meters as meters_service
from meterline.store import inbox
from meterline.store import rollups as rollup_store
from meterline.store.repo import Repo
from meterline.store.tables import customers, meters


@dataclass(frozen=True)
class MeterQuery:
    meter_id: str
    group_by: tuple[str, ...] = ()
    filters: Mapping[str, str | Sequence[str]] | None = None


@dataclass(frozen=True)
class MeterInfo:
    id: str
    formula: str
    keys: tuple[str, ...]  # the declared dimension keys, sorted (the order of rollup `dims`)
    window: str | None


def meter_info(row: Mapping[str, Any]) -> MeterInfo:
    return MeterInfo(
        row["id"],
        row["formula"],
        tuple(sorted(row["dimension_payload_keys"] or [])),
        row["event_time_window"],
    )


class _Acc:
    """Partials per meter, bucket and group, and the group keys and filters of each meter."""

    def __init__(
        self,
        metas: Mapping[str, MeterInfo],
        bounds: list[tuple[int, int]],
        queries: Mapping[str, MeterQuery],
    ) -> None:
        self.bounds = bounds
        self.starts = [b[0] for b in bounds]
        self.end = bounds[-1][1] if bounds else 0
        self.parts: dict[str, dict[tuple[int, tuple[str | None, ...]], list]] = {
            m: {} for m in metas
        }
        self.group: dict[str, list[str]] = {}
        self.filters: dict[str, Mapping[str, str | Sequence[str]]] = {}
        for m in metas:
            q = queries.get(m) or MeterQuery(m)
            self.group[m] = sorted(set(q.group_by))
            self.filters[m] = q.filters or {}
        self._dims_cache: dict[tuple[str, str], tuple[str | None, ...] | None] = {}

    def _index(self, ts: int) -> int | None:
        if not self.starts or ts < self.starts[0] or ts >= self.end:
            return None
        return bisect_right(self.starts, ts) - 1

    def _group_of(self, meter: str, dims: Mapping[str, Any]) -> tuple[str | None, ...] | None:
        wanted = self.filters[meter]
        if wanted and not matches(Event(0, ZERO, 0, dims), wanted):
            return None
        return tuple(dims.get(k) for k in self.group[meter])

    def add_event(
        self, meter: str, ts: int, value: Decimal, seq: int, payload: Mapping[str, Any]
    ) -> None:
        i = self._index(ts)
        if i is None:
            return
        g = self._group_of(meter, payload)
        if g is None:
            return
        self._add(self.parts[meter], (i, g), value, 1, ts, seq, value)

    @staticmethod
    def _add(acc: dict, k: tuple, s: Decimal, n: int, lts: int, lseq: int, lv: Any) -> None:
        """Merge one partial (sum, count, last ts, last seq, last value) into `acc[k]`, in
        place: the hot loop of an answer, so no `Partial` objects (`rows` makes them)."""
        cur = acc.get(k)
        if cur is None:
            acc[k] = [s, n, lts, lseq, lv]
            return
        cur[0] = exact_add(cur[0], s)
        cur[1] += n
        if lts > cur[2] or (lts == cur[2] and lseq >= cur[3]):
            cur[2], cur[3], cur[4] = lts, lseq, lv

    def add_cell(
        self,
        meta: MeterInfo,
        bucket: int,
        dims: str,
        s: Decimal,
        n: int,
        lts: int,
        lseq: int,
        lv: Any,
    ) -> None:
        i = self._index(bucket)
        if i is None:
            return
        ck = (meta.id, dims)
        if ck in self._dims_cache:
            g = self._dims_cache[ck]
        else:
            values = orjson.loads(dims)
            g = self._group_of(meta.id, dict(zip(meta.keys, values, strict=True)))
            self._dims_cache[ck] = g
        if g is None:
            return
        self._add(self.parts[meta.id], (i, g), s, n, lts, lseq, lv)

    def rows(self, metas: Mapping[str, MeterInfo]) -> list[Row]:
        out: list[Row] = []
        for m, acc in self.parts.items():
            keys = self.group[m]
            formula = metas[m].formula
            for (i, values), (s, n, lts, lseq, lv) in acc.items():
                part = Partial(s, n, lts, lseq, _dec(lv))
                out.append(
                    Row(
                        m,
                        self.bounds[i][0],
                        self.bounds[i][1],
                        finish(formula, part),
                        dict(zip(keys, values, strict=True)) if keys else None,
                    )
                )
        out.sort(key=row_sort_key)
        return out


def _add_windowed(
    acc: _Acc, repo: Repo, customer: str, meta: MeterInfo, start: int, end: int
) -> None:
    """A pre-aggregated meter: the most recently received event of each UTC window counts; the
    windows cut by the range are read whole, so the winner is found even outside the range."""
    w = meta.window or "hour"
    span = (window_start(start, w), window_start(end - 1, w) + (3600 if w == "hour" else 86400))
    latest: dict[int, tuple] = {}
    for ev in rollup_store.raw_events(repo, customer, [meta.id], [span]):
        k = window_start(ev[1], w)
        if k not in latest or ev[3] > latest[k][3]:
            latest[k] = ev
    for m, ts, value, seq, payload in latest.values():
        if start <= ts < end:
            acc.add_event(m, ts, value, seq, payload)


def collect(
    repo: Repo,
    customer: str,
    metas: Mapping[str, MeterInfo],
    bounds: list[tuple[int, int]],
    queries: Mapping[str, MeterQuery] | None = None,
) -> list[Row]:
    """The rows of these meters over the buckets `bounds`, from rollup cells where whole cells
    fit in a bucket, raw events at the edges and for cells with a queued cancellation, and the
    raw events above the watermark (see services.rollups)."""
    acc = _Acc(metas, bounds, queries or {})
    if not bounds or not metas:
        return []
    start, end = bounds[0][0], bounds[-1][1]
    in_txn = repo.dialect == "postgresql" and not repo.conn.connection.driver_connection.autocommit  # type: ignore[union-attr]
    with _snapshot(repo):
        w = _watermark(repo, in_txn)
        rolled = [m for m, meta in metas.items() if not meta.window]
        if rolled:
            p = plan(bounds)
            dirty: dict[str, set[tuple[int, int]]] = {}
            for m, ts in _pending_cancels(repo, customer, w):
                if m in metas and not metas[m].window:
                    for res in RESOLUTIONS:
                        dirty.setdefault(m, set()).add((res, cell_start(ts, res)))
            redo: dict[str, list[tuple[int, int]]] = {}
            for res, spans in p.cells.items():
                if not spans:
                    continue
                starts = [s[0] for s in spans]
                many = len(spans) > 1
                for m, bucket, dims, s, n, lts, lseq, lv in rollup_store.rollup_rows(
                    repo, customer, rolled, res, spans
                ):
                    if many and not covers(spans, starts, bucket):
                        continue
                    d = dirty.get(m)
                    if d and (res, bucket) in d:
                        redo.setdefault(m, []).append((bucket, bucket + res))
                        continue
                    acc.add_cell(metas[m], bucket, dims, _dec(s), n, lts, lseq, lv)
            reads: list[tuple[list[str], list[tuple[int, int]]]] = [(rolled, p.raw)]
            reads += [([m], merge_spans(spans)) for m, spans in redo.items()]
            for meter_ids, spans in reads:
                if not spans:
                    continue
                starts = [s[0] for s in spans]
                many = len(spans) > 1
                for m, ts, value, seq, payload in rollup_store.raw_events(
                    repo, customer, meter_ids, spans, upto=w
                ):
                    if not many or covers(spans, starts, ts):
                        acc.add_event(m, ts, value, seq, payload)
            for m, ts, value, seq, payload in rollup_store.raw_events(
                repo, customer, rolled, [(start, end)], after=w
            ):
                acc.add_event(m, ts, value, seq, payload)
        for meta in metas.values():
            if meta.window:
                _add_windowed(acc, repo, customer, meta, start, end)
    return acc.rows(metas)


CANCELS_READ_WHOLE = 1000  # up to this many queued cancels, a billing run reads them at once


def _watermark(repo: Repo, in_txn: bool) -> int:
    """The rollup watermark. A unit of work with a memo (the billing run's transaction) reads
    it once: inside a write transaction it is held (FOR SHARE on PostgreSQL, the write lock on
    SQLite), so no builder moves it before the transaction ends."""
    memo = repo.memo if (in_txn or repo.dialect == "sqlite") else None
    if memo is not None and ("rollups", "watermark") in memo:
        return int(memo[("rollups", "watermark")])
    w = rollup_store.watermark(repo.conn, lock="share" if in_txn else None)
    if memo is not None:
        memo[("rollups", "watermark")] = w
    return w


def _pending_cancels(repo: Repo, customer: str, w: int) -> list[tuple[str, int]]:
    """Queued cancels of the customer's folded events. With a memo, the account's queue is read
    once for the unit of work when it is short (it usually is empty: builders drain it), so a
    run over many customers does not ask once per customer."""
    memo = repo.memo
    if memo is None:
        return rollup_store.pending_cancels(repo, customer, w)
    key = ("rollups", f"cancels:{w}")
    if key not in memo:
        rows = rollup_store.pending_cancels_all(repo, w, CANCELS_READ_WHOLE + 1)
        if len(rows) > CANCELS_READ_WHOLE:
            memo[key] = None
        else:
            by: dict[str, list[tuple[str, int]]] = {}
            for c, m, ts in rows:
                by.setdefault(c, []).append((m, ts))
            memo[key] = by
    whole = memo[key]
    if whole is None:
        return rollup_store.pending_cancels(repo, customer, w)
    return list(whole.get(customer, ()))


@contextmanager
def _snapshot(repo: Repo) -> Iterator[None]:
    """One snapshot for the statements of an answer. SQLite reads are one transaction already;
    PostgreSQL's reader runs autocommit statements, so they are wrapped in a REPEATABLE READ
    transaction (inside a write transaction, `watermark(lock="share")` keeps builders still)."""
    raw = repo.conn.connection.driver_connection  # type: ignore[union-attr]
    if repo.dialect != "postgresql" or not raw.autocommit:
        yield
        return
    raw.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        yield
    finally:
        raw.execute("COMMIT")


def _dec(v: Any) -> Decimal:
    return v if isinstance(v, Decimal) else Decimal(v)


def account_meters(repo: Repo) -> dict[str, MeterInfo]:
    return {r["id"]: meter_info(r) for r in repo.conn.execute(repo.select(meters)).mappings()}


def check_customer(repo: Repo, customer: str, param: str = "customer") -> None:
    row = repo.get(customers, customer)
    if row is None or row["deleted"]:
        raise not_found("customer", customer, param)


def refreshed_at(repo: Repo) -> int:
    """The time up to which received events are reflected (`data_refreshed_at`): now, unless
    stream events wait in the inbox (`store.inbox`), then when the oldest of them was received
    (of any account: a bound that holds for this one, and says nothing of the others' events).
    Rollups never make an answer stale (the raw tail above the watermark is read), so only the
    inbox can."""
    now = clock.now()
    oldest = inbox.oldest_pending(repo.conn)
    return now if oldest is None else min(now, oldest)


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
    metas: dict[str, MeterInfo] = {}
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
            metas[q.meter_id] = meter_info(meter)
            by_meter[q.meter_id] = q
    else:
        metas = account_meters(repo)
    return collect(repo, customer, metas, bounds, by_meter)


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
    rows = collect(repo, customer, {meter_id: meter_info(meter)}, bounds)
    values = {r.bucket_start_time: r.bucket_value for r in rows}
    return [(b0, b1, values.get(b0, finish(meter["formula"], EMPTY))) for b0, b1 in bounds]
