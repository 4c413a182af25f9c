"""Pure tests of the rollup planner (meterline.engine.rollups).

Examples for UTC, New York days, Kolkata hours (half-hour offset) and Kathmandu (45 minutes);
then a property over random minute-aligned ranges, windows and zones: the plan covers every
second of the range exactly once, no cell straddles a bucket boundary, and the raw remainder is
only what no whole quarter hour inside a bucket can cover.
"""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from meterline.engine.buckets import bucket_bounds
from meterline.engine.rollups import HOUR, QUARTER, cell_start, covers, merge_spans, plan

H = 3600
D = 86_400


def u(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def test_utc_days_use_hours_and_raw_edges():
    start, end = u("2026-03-01T00:07"), u("2026-03-04T10:50")
    p = plan(bucket_bounds(start, end, "day", "UTC"))
    assert p.cells[HOUR] == [(u("2026-03-01T01:00"), u("2026-03-04T10:00"))]
    assert p.cells[QUARTER] == [
        (u("2026-03-01T00:15"), u("2026-03-01T01:00")),
        (u("2026-03-04T10:00"), u("2026-03-04T10:45")),
    ]
    assert p.raw == [(start, u("2026-03-01T00:15")), (u("2026-03-04T10:45"), end)]


def test_new_york_days_across_dst_are_whole_hours():
    start, end = u("2026-03-01T05:00"), u("2026-03-31T04:00")  # local midnights, DST on 03-08
    p = plan(bucket_bounds(start, end, "day", "America/New_York"))
    assert p.cells[HOUR] == [(start, end)]
    assert p.cells[QUARTER] == [] and p.raw == []


def test_kolkata_hours_are_quarters():
    start, end = u("2026-03-01T00:00"), u("2026-03-02T00:00")
    bounds = bucket_bounds(start, end, "hour", "Asia/Kolkata")
    assert bounds[0] == (start, u("2026-03-01T00:30"))  # clipped first bucket
    p = plan(bounds)
    assert p.cells[HOUR] == []
    assert p.cells[QUARTER] == [(start, end)]
    assert p.raw == []


def test_kathmandu_days_mix_hours_and_quarters():
    start, end = u("2026-03-01T00:00"), u("2026-03-03T00:00")
    p = plan(bucket_bounds(start, end, "day", "Asia/Kathmandu"))  # local midnight = 18:15 UTC
    # 18:00-18:15 ends day one, 18:15-19:00 starts day two: quarters, joined into one span.
    assert p.cells[QUARTER] == [
        (u("2026-03-01T18:00"), u("2026-03-01T19:00")),
        (u("2026-03-02T18:00"), u("2026-03-02T19:00")),
    ]
    assert p.cells[HOUR] == [
        (start, u("2026-03-01T18:00")),
        (u("2026-03-01T19:00"), u("2026-03-02T18:00")),
        (u("2026-03-02T19:00"), end),
    ]
    assert p.raw == []


def test_merge_spans_and_covers():
    spans = merge_spans([(5, 10), (0, 5), (20, 30), (25, 26)])
    assert spans == [(0, 10), (20, 30)]
    starts = [a for a, _ in spans]
    assert [t for t in (-1, 0, 9, 10, 19, 20, 29, 30) if covers(spans, starts, t)] == [0, 9, 20, 29]


ZONES = [
    "UTC",
    "America/New_York",
    "Europe/Berlin",
    "Australia/Sydney",
    "America/Santiago",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
]


@settings(max_examples=150, deadline=None)
@given(
    start=st.integers(u("2026-01-01T00:00") // 60, u("2026-12-01T00:00") // 60),
    length=st.integers(1, 20 * 24 * 60),
    window=st.sampled_from([None, "hour", "day", "week", "month"]),
    tz=st.sampled_from(ZONES),
)
def test_plan_covers_each_second_once_and_cells_stay_in_buckets(start, length, window, tz):
    start *= 60
    end = start + length * 60
    bounds = bucket_bounds(start, end, window, tz)
    p = plan(bounds)
    pieces = [(a, b, res) for res, spans in p.cells.items() for a, b in spans]
    pieces += [(a, b, 60) for a, b in p.raw]
    pieces.sort()
    # Exactly once: sorted pieces tile [start, end) without gap or overlap.
    assert pieces[0][0] == start and pieces[-1][1] == end
    for (_, b, _), (a, _, _) in zip(pieces, pieces[1:], strict=False):
        assert b == a
    bucket_starts = [b0 for b0, _ in bounds]
    for a, b, res in pieces:
        assert a % res == 0 and b % res == 0 or res == 60
        if res == 60:
            continue
        for c in range(a, b, res):  # each cell lies in one bucket
            i = max(k for k, s in enumerate(bucket_starts) if s <= c)
            assert bounds[i][0] <= c and c + res <= bounds[i][1]
    # Raw pieces never hold a whole quarter hour that lies inside one bucket.
    for a, b in p.raw:
        q = cell_start(a + QUARTER - 1, QUARTER)
        while q + QUARTER <= b:
            assert not any(b0 <= q and q + QUARTER <= b1 for b0, b1 in bounds)
            q += QUARTER
