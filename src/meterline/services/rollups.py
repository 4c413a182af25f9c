"""The rollup builder: folds new meter events into quarter-hour and hour cells, recomputes the
cells that cancellations touched, and rebuilds everything from raw events on demand.

Always true:
- Rollups are derived state. After `catch_up`, the cells hold exactly the partial of the
  counting events with seq <= the watermark, except cells named by a queued cancellation, which
  queries read from raw events until the builder has recomputed them; `rebuild` gives the same
  cells from nothing. Queries add the events above the watermark from the raw log, so answers
  never wait for the builder.
- One fold is one transaction that moves the watermark by compare-and-set: concurrent builders
  (every `meterline serve` worker runs one) never fold an event twice.
- Meters with an `event_time_window` have no cells (their latest-per-window rule is applied to
  raw events at query time).
May import: engine, store, clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson

from meterline import clock
from meterline.engine.aggregate import EMPTY, Partial, exact_add, merge
from meterline.engine.rollups import RESOLUTIONS
from meterline.services import Periodic
from meterline.store import rollups as store
from meterline.store.db import Database

FOLD_LIMIT = 50_000  # events per fold transaction

Settings = dict[tuple[str, bool, str], tuple[tuple[str, ...], bool]]


def dims_key(keys: tuple[str, ...], payload: dict) -> str:
    """The `dims` of an event: its values of the meter's declared keys, in sorted key order."""
    return orjson.dumps([payload.get(k) for k in keys]).decode()


def _value(p: Partial) -> store.CellValue:
    return (p.sum, p.count, p.last_ts, p.last_seq, p.last_value)


def _partial(v: store.CellValue) -> Partial:
    return Partial(*v)


class _Meters:
    """Meter settings, read once and again when an unknown meter turns up."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.settings: Settings = {}

    def get(self, account: str, live: bool, meter: str) -> tuple[tuple[str, ...], bool]:
        key = (account, live, meter)
        if key not in self.settings:
            with self.db.read() as conn:
                self.settings = store.meter_settings(conn)
        return self.settings.get(key, ((), True))  # a meter that vanished: no cells


def _fold(cells: dict[store.Cell, Partial], meters: _Meters, events: list[tuple]) -> None:
    """Merge each event into the partials of its cells. The events are summed per cell in
    place first ([sum, count, last ts, last seq, last value]) and each cell merged once: the
    same partials as one `merge` per event and cell (merging is associative, sums are exact),
    without a Partial per event (the builder's main cost under a steady stream)."""
    acc: dict[store.Cell, list] = {}
    for account, live, customer, meter, ts, value, seq, payload in events:
        keys, windowed = meters.get(account, live, meter)
        if windowed:
            continue
        dims = dims_key(keys, payload)
        for res in RESOLUTIONS:
            k = (account, live, customer, meter, res, ts - ts % res, dims)
            a = acc.get(k)
            if a is None:
                acc[k] = [value, 1, ts, seq, value]
                continue
            a[0] = exact_add(a[0], value)
            a[1] += 1
            if (ts, seq) >= (a[2], a[3]):
                a[2], a[3], a[4] = ts, seq, value
    for k, a in acc.items():
        p = Partial(*a)
        cells[k] = merge(cells[k], p) if k in cells else p


def _recompute_cancelled(conn, meters: _Meters, upto: int) -> None:
    """Recompute every cell a queued cancellation (of an event with seq <= upto) touches, from
    the raw events, and drop those queue entries."""
    queued = store.queued_cancels(conn, upto)
    if not queued:
        return
    touched = {
        (a, lm, c, m, res, ts - ts % res) for _, a, lm, c, m, ts in queued for res in RESOLUTIONS
    }
    for a, lm, c, m, res, bucket in sorted(touched):
        keys, windowed = meters.get(a, lm, m)
        cells: dict[store.Cell, Partial] = {}
        if not windowed:
            for ts, value, seq, payload in store.cell_events(
                conn, a, lm, c, m, bucket, bucket + res, upto
            ):
                k = (a, lm, c, m, res, bucket, dims_key(keys, payload))
                cells[k] = merge(cells.get(k, EMPTY), Partial(value, 1, ts, seq, value))
        store.replace_cell_span(
            conn, a, lm, c, m, res, bucket, {k: _value(p) for k, p in cells.items()}
        )
    store.drop_cancels(conn, [q[0] for q in queued])


class _Lost(Exception):
    pass


def fold_once(db: Database, *, limit: int = FOLD_LIMIT, meters: _Meters | None = None) -> int:
    """Fold up to `limit` new events and the queued cancellations; the number of events folded
    (0 when there was nothing to do or another builder got there first)."""
    meters = meters or _Meters(db)
    upto = store.safe_upto(db)
    with db.read() as conn:
        w = store.watermark(conn)
        events = store.new_events(conn, w, upto, limit) if upto > w else []
        cancels = store.any_cancels(conn)
    if upto <= w and not cancels:
        return 0
    new_w = events[-1][6] if len(events) == limit else max(upto, w)
    cells: dict[store.Cell, Partial] = {}
    _fold(cells, meters, events)
    try:
        with db.write() as conn:
            if new_w != w and not store.advance(conn, w, new_w, clock.now()):
                raise _Lost
            if new_w == w and store.watermark(conn, lock="update") != w:
                raise _Lost
            if cells:
                stored = store.load_cells(conn, cells)
                store.store_cells(
                    conn,
                    {
                        k: _value(merge(_partial(stored[k]), p) if k in stored else p)
                        for k, p in cells.items()
                    },
                )
            _recompute_cancelled(conn, meters, new_w)
    except _Lost:  # another builder moved the watermark first: this fold is rolled back
        return 0
    return len(events)


def catch_up(db: Database, *, progress: Callable[[int], None] | None = None) -> int:
    """Fold until the rollups hold every event committed when it was called, and the
    cancellations queued by then are applied (by this builder or a concurrent one); the
    number of events this call folded."""
    meters = _Meters(db)
    target = store.safe_upto(db)
    with db.read() as conn:
        cancels = store.max_cancel_seq(conn)
    total = 0
    idle, last_w = 0, -1
    while True:
        with db.try_exclusive("rollups") as mine:
            n = fold_once(db, meters=meters) if mine else 0
        total += n
        if progress is not None and n:
            progress(n)
        if n == FOLD_LIMIT:
            continue
        with db.read() as conn:
            w = store.watermark(conn)
            if w >= target and not store.cancels_left(conn, cancels):
                return total
        idle = idle + 1 if n == 0 and w == last_w else 0
        last_w = w
        if idle > 3000:  # about 30 s without a fold of ours or anyone's progress
            raise RuntimeError(f"the rollup watermark stays at {w}, below {target}")
        if n == 0:
            time.sleep(0.01)  # another builder holds the next fold


def run_once(db: Database) -> int:
    """One builder tick: fold what is there, unless another worker is folding already."""
    with db.try_exclusive("rollups") as mine:
        if not mine:
            return 0
        meters = _Meters(db)
        total = 0
        while True:
            n = fold_once(db, meters=meters)
            total += n
            if n < FOLD_LIMIT:
                return total


def rebuild(db: Database, *, progress: Callable[[int, int], None] | None = None) -> int:
    """Drop every cell and build them again from the raw events, in one transaction (readers see
    the old cells until it commits); returns the number of events folded. `progress(done,
    total)` is called as events are read."""
    meters = _Meters(db)
    with db.read() as conn:
        meters.settings = store.meter_settings(conn)
    upto = store.safe_upto(db)
    with db.write() as conn:
        store.watermark(conn, lock="update")
        total = store.count_events(conn, upto)
        cancel_seq = store.max_cancel_seq(conn)
        store.reset(conn)
        open_events: list[tuple] = []  # the events of the open (customer, meter, hour)
        current: tuple | None = None
        done = 0
        out: list[tuple[store.Cell, store.CellValue]] = []

        def close() -> None:
            cells: dict[store.Cell, Partial] = {}
            _fold(cells, meters, open_events)
            out.extend((k, _value(p)) for k, p in cells.items())
            open_events.clear()

        for ev in store.iter_all_events(conn, upto):
            account, live, customer, meter, ts = ev[0], ev[1], ev[2], ev[3], ev[4]
            key = (account, live, customer, meter, ts - ts % RESOLUTIONS[0])
            if key != current:
                # Events come by (account, livemode, customer, meter, time): once the hour
                # changes, the open cells (this hour and its quarters) are complete.
                close()
                current = key
                if len(out) >= 5_000:
                    store.insert_cells(conn, out)
                    out.clear()
            open_events.append(ev)
            done += 1
            if progress is not None and done % 50_000 == 0:
                progress(done, total)
        close()
        store.insert_cells(conn, out)
        store.set_watermark(conn, upto, clock.now())
        store.drop_cancels(conn, upto_seq=cancel_seq)
    if progress is not None:
        progress(done, total)
    return done


class Builder(Periodic):
    """Runs `run_once` every `interval` seconds on a thread of its own (one per server worker)."""

    thread_name = "meterline-rollups"
    what = "rollup fold"
    logger = "meterline.rollups"

    def __init__(self, db: Database, interval: float = 1.0) -> None:
        super().__init__(db, interval)

    def tick(self) -> None:
        run_once(self.db)


__all__ = ["Builder", "catch_up", "dims_key", "fold_once", "rebuild", "run_once"]
