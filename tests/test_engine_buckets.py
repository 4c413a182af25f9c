"""Pure tests of the analytics time buckets (meterline.engine.buckets).

Examples with hand-computed UTC instants for DST gaps and folds in both hemispheres, 30- and
45-minute offsets, Lord Howe's 30-minute DST, days without a local midnight, weeks and months,
clipping, the 50,000-bucket cap and every error parameter; then hypothesis properties over random
minute-aligned ranges, windows and zones, including a check against an independent reference
that scans the range every 15 minutes.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterline.engine.buckets import (
    MAX_BUCKETS,
    MAX_TIMESTAMP,
    WINDOWS,
    bucket_bounds,
    bucket_index,
)
from meterline.engine.errors import RuleViolation

H = 3600
D = 86_400


def u(text: str) -> int:
    """Unix seconds of a UTC wall time written as 2024-03-31T01:00."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def hours(bounds: list[tuple[int, int]]) -> list[float]:
    return [(b - a) / H for a, b in bounds]


def starts(bounds: list[tuple[int, int]]) -> list[int]:
    return [a for a, _ in bounds]


# --- no window, UTC, clipping ---------------------------------------------------------------


def test_no_window_is_one_bucket_for_the_whole_range() -> None:
    assert bucket_bounds(u("2024-01-01T10:17"), u("2024-03-05T00:01"), None, "Asia/Kathmandu") == [
        (u("2024-01-01T10:17"), u("2024-03-05T00:01"))
    ]


def test_utc_days_clip_the_first_and_last_bucket() -> None:
    assert bucket_bounds(u("2024-01-01T10:17"), u("2024-01-03T05:00"), "day", "UTC") == [
        (u("2024-01-01T10:17"), u("2024-01-02T00:00")),
        (u("2024-01-02T00:00"), u("2024-01-03T00:00")),
        (u("2024-01-03T00:00"), u("2024-01-03T05:00")),
    ]


def test_utc_hours_clip_and_a_range_inside_one_hour_is_one_bucket() -> None:
    assert bucket_bounds(u("2024-01-01T10:59"), u("2024-01-01T12:01"), "hour", "UTC") == [
        (u("2024-01-01T10:59"), u("2024-01-01T11:00")),
        (u("2024-01-01T11:00"), u("2024-01-01T12:00")),
        (u("2024-01-01T12:00"), u("2024-01-01T12:01")),
    ]
    assert bucket_bounds(u("2024-01-01T10:05"), u("2024-01-01T10:06"), "hour", "UTC") == [
        (u("2024-01-01T10:05"), u("2024-01-01T10:06"))
    ]


def test_a_range_on_exact_boundaries_is_not_clipped() -> None:
    b = bucket_bounds(u("2024-01-01T00:00"), u("2024-01-03T00:00"), "day", "UTC")
    assert b == [
        (u("2024-01-01T00:00"), u("2024-01-02T00:00")),
        (u("2024-01-02T00:00"), u("2024-01-03T00:00")),
    ]


# --- Europe/Berlin and America/New_York: 23- and 25-hour days -------------------------------


def test_berlin_23_hour_day() -> None:
    # 2024-03-31: 02:00 CET (+1) jumps to 03:00 CEST (+2) at 01:00Z.
    b = bucket_bounds(u("2024-03-29T23:00"), u("2024-04-01T22:00"), "day", "Europe/Berlin")
    assert starts(b) == [u("2024-03-29T23:00"), u("2024-03-30T23:00"), u("2024-03-31T22:00")]
    assert hours(b) == [24, 23, 24]


def test_berlin_hours_on_the_23_hour_day_skip_the_missing_2_oclock() -> None:
    b = bucket_bounds(u("2024-03-30T23:00"), u("2024-03-31T22:00"), "hour", "Europe/Berlin")
    assert len(b) == 23
    assert hours(b) == [1] * 23
    # 00:00 and 01:00 CET, then 03:00 CEST: no bucket for the 02:00 that never happened.
    assert starts(b)[:4] == [
        u("2024-03-30T23:00"),
        u("2024-03-31T00:00"),
        u("2024-03-31T01:00"),
        u("2024-03-31T02:00"),
    ]


def test_berlin_25_hour_day_and_its_two_hour_repeated_hour() -> None:
    # 2024-10-27: 03:00 CEST (+2) falls back to 02:00 CET (+1) at 01:00Z.
    b = bucket_bounds(u("2024-10-26T22:00"), u("2024-10-28T23:00"), "day", "Europe/Berlin")
    assert b == [
        (u("2024-10-26T22:00"), u("2024-10-27T23:00")),
        (u("2024-10-27T23:00"), u("2024-10-28T23:00")),
    ]
    assert hours(b) == [25, 24]
    h = bucket_bounds(u("2024-10-26T22:00"), u("2024-10-27T23:00"), "hour", "Europe/Berlin")
    assert len(h) == 24
    # 00:00 and 01:00 CEST, then the 02:00 hour: both passes (00:00Z to 02:00Z), then 03:00 CET.
    assert h[:4] == [
        (u("2024-10-26T22:00"), u("2024-10-26T23:00")),
        (u("2024-10-26T23:00"), u("2024-10-27T00:00")),
        (u("2024-10-27T00:00"), u("2024-10-27T02:00")),
        (u("2024-10-27T02:00"), u("2024-10-27T03:00")),
    ]


def test_a_range_starting_in_the_second_pass_of_a_fold_joins_the_repeated_hour() -> None:
    # 01:30Z is 02:30 CET, the second 02:30 of the night: its bucket is the 02:00 hour.
    b = bucket_bounds(u("2024-10-27T01:30"), u("2024-10-27T03:00"), "hour", "Europe/Berlin")
    assert b == [
        (u("2024-10-27T01:30"), u("2024-10-27T02:00")),
        (u("2024-10-27T02:00"), u("2024-10-27T03:00")),
    ]


def test_new_york_23_and_25_hour_days() -> None:
    # 2024-03-10: 02:00 EST (-5) jumps to 03:00 EDT (-4) at 07:00Z.
    b = bucket_bounds(u("2024-03-10T05:00"), u("2024-03-12T04:00"), "day", "America/New_York")
    assert starts(b) == [u("2024-03-10T05:00"), u("2024-03-11T04:00")]
    assert hours(b) == [23, 24]
    # 2024-11-03: 02:00 EDT falls back to 01:00 EST at 06:00Z.
    b = bucket_bounds(u("2024-11-03T04:00"), u("2024-11-04T05:00"), "day", "America/New_York")
    assert b == [(u("2024-11-03T04:00"), u("2024-11-04T05:00"))]
    assert hours(b) == [25]
    h = bucket_bounds(u("2024-11-03T04:00"), u("2024-11-03T09:00"), "hour", "America/New_York")
    # 00:00 EDT, the 01:00 hour (05:00Z to 07:00Z, both passes), 02:00 EST, 03:00 EST.
    assert h == [
        (u("2024-11-03T04:00"), u("2024-11-03T05:00")),
        (u("2024-11-03T05:00"), u("2024-11-03T07:00")),
        (u("2024-11-03T07:00"), u("2024-11-03T08:00")),
        (u("2024-11-03T08:00"), u("2024-11-03T09:00")),
    ]


# --- southern hemisphere ---------------------------------------------------------------------


def test_sydney_days_in_april_and_october() -> None:
    # 2024-04-07: 03:00 AEDT (+11) falls back to 02:00 AEST (+10) at 16:00Z on the 6th.
    b = bucket_bounds(u("2024-04-06T13:00"), u("2024-04-08T14:00"), "day", "Australia/Sydney")
    assert starts(b) == [u("2024-04-06T13:00"), u("2024-04-07T14:00")]
    assert hours(b) == [25, 24]
    # 2024-10-06: 02:00 AEST jumps to 03:00 AEDT at 16:00Z on the 5th.
    b = bucket_bounds(u("2024-10-05T14:00"), u("2024-10-07T13:00"), "day", "Australia/Sydney")
    assert starts(b) == [u("2024-10-05T14:00"), u("2024-10-06T13:00")]
    assert hours(b) == [23, 24]


def test_sydney_months_start_at_local_midnight_of_the_first() -> None:
    b = bucket_bounds(u("2023-12-31T13:00"), u("2024-05-31T14:00"), "month", "Australia/Sydney")
    assert starts(b) == [
        u("2023-12-31T13:00"),  # 1 Jan 00:00 AEDT (+11)
        u("2024-01-31T13:00"),  # 1 Feb
        u("2024-02-29T13:00"),  # 1 Mar
        u("2024-03-31T13:00"),  # 1 Apr, still AEDT
        u("2024-04-30T14:00"),  # 1 May, AEST (+10)
    ]


# --- 30- and 45-minute offsets and Lord Howe's 30-minute DST ---------------------------------


def test_kolkata_hours_start_at_half_past_utc() -> None:
    # +05:30: local 10:00 is 04:30Z. 04:00Z is 09:30 local, 07:00Z is 12:30 local.
    b = bucket_bounds(u("2024-01-01T04:00"), u("2024-01-01T07:00"), "hour", "Asia/Kolkata")
    assert b == [
        (u("2024-01-01T04:00"), u("2024-01-01T04:30")),
        (u("2024-01-01T04:30"), u("2024-01-01T05:30")),
        (u("2024-01-01T05:30"), u("2024-01-01T06:30")),
        (u("2024-01-01T06:30"), u("2024-01-01T07:00")),
    ]


def test_kolkata_days_start_at_1830_utc() -> None:
    b = bucket_bounds(u("2024-01-01T00:00"), u("2024-01-03T00:00"), "day", "Asia/Kolkata")
    assert starts(b) == [u("2024-01-01T00:00"), u("2024-01-01T18:30"), u("2024-01-02T18:30")]


def test_kathmandu_hours_start_at_quarter_past_utc() -> None:
    # +05:45: local 10:00 is 04:15Z.
    b = bucket_bounds(u("2024-01-01T04:00"), u("2024-01-01T06:30"), "hour", "Asia/Kathmandu")
    assert b == [
        (u("2024-01-01T04:00"), u("2024-01-01T04:15")),
        (u("2024-01-01T04:15"), u("2024-01-01T05:15")),
        (u("2024-01-01T05:15"), u("2024-01-01T06:15")),
        (u("2024-01-01T06:15"), u("2024-01-01T06:30")),
    ]
    d = bucket_bounds(u("2024-01-01T00:00"), u("2024-01-02T00:00"), "day", "Asia/Kathmandu")
    assert starts(d) == [u("2024-01-01T00:00"), u("2024-01-01T18:15")]


def test_lord_howe_half_hour_gap() -> None:
    # 2024-10-06: 02:00 (+10:30) jumps to 02:30 (+11) at 15:30Z on the 5th.
    b = bucket_bounds(u("2024-10-05T13:30"), u("2024-10-05T17:00"), "hour", "Australia/Lord_Howe")
    assert b == [
        (u("2024-10-05T13:30"), u("2024-10-05T14:30")),  # 00:00
        (u("2024-10-05T14:30"), u("2024-10-05T15:30")),  # 01:00
        (u("2024-10-05T15:30"), u("2024-10-05T16:00")),  # the 02:00 hour starts at 02:30
        (u("2024-10-05T16:00"), u("2024-10-05T17:00")),  # 03:00 (+11)
    ]
    d = bucket_bounds(u("2024-10-05T13:30"), u("2024-10-06T13:00"), "day", "Australia/Lord_Howe")
    assert hours(d) == [23.5]


def test_lord_howe_half_hour_fold() -> None:
    # 2024-04-07: 02:00 (+11) falls back to 01:30 (+10:30) at 15:00Z on the 6th.
    b = bucket_bounds(u("2024-04-06T13:00"), u("2024-04-06T16:30"), "hour", "Australia/Lord_Howe")
    assert b == [
        (u("2024-04-06T13:00"), u("2024-04-06T14:00")),  # 00:00 (+11)
        (u("2024-04-06T14:00"), u("2024-04-06T15:30")),  # 01:00, 01:30 to 02:00 twice
        (u("2024-04-06T15:30"), u("2024-04-06T16:30")),  # 02:00 (+10:30)
    ]
    d = bucket_bounds(u("2024-04-06T13:00"), u("2024-04-07T13:30"), "day", "Australia/Lord_Howe")
    assert hours(d) == [24.5]


def test_chatham_hour_inside_a_gap_starts_when_the_gap_ends() -> None:
    # +12:45 / +13:45. 2024-09-29: 02:45 jumps to 03:45 at 14:00Z on the 28th, so 03:00 never
    # happens and the 03:00 hour is the 15 minutes from 03:45 to 04:00.
    b = bucket_bounds(u("2024-09-28T13:15"), u("2024-09-28T15:15"), "hour", "Pacific/Chatham")
    assert b == [
        (u("2024-09-28T13:15"), u("2024-09-28T14:00")),  # 02:00 to 02:45
        (u("2024-09-28T14:00"), u("2024-09-28T14:15")),  # 03:45 to 04:00
        (u("2024-09-28T14:15"), u("2024-09-28T15:15")),  # 04:00
    ]
    # 2024-04-07: 03:45 falls back to 02:45 at 14:00Z on the 6th; 03:00 is ambiguous, so the
    # 03:00 hour starts at its first occurrence and runs two hours.
    b = bucket_bounds(u("2024-04-06T12:15"), u("2024-04-06T16:15"), "hour", "Pacific/Chatham")
    assert b == [
        (u("2024-04-06T12:15"), u("2024-04-06T13:15")),  # 02:00 (+13:45)
        (u("2024-04-06T13:15"), u("2024-04-06T15:15")),  # 03:00, first pass to 04:00 (+12:45)
        (u("2024-04-06T15:15"), u("2024-04-06T16:15")),  # 04:00
    ]


# --- days without a local midnight -----------------------------------------------------------


def test_santiago_dst_start_day_begins_at_one_oclock() -> None:
    # 2024-09-08: at 04:00Z, 00:00 (-4) becomes 01:00 (-3): no local midnight that day.
    b = bucket_bounds(u("2024-09-07T04:00"), u("2024-09-09T03:00"), "day", "America/Santiago")
    assert b == [
        (u("2024-09-07T04:00"), u("2024-09-08T04:00")),
        (u("2024-09-08T04:00"), u("2024-09-09T03:00")),
    ]
    assert hours(b) == [24, 23]


def test_santiago_dst_end_repeats_the_last_hour_of_the_day_before() -> None:
    # 2024-04-07: at 03:00Z, 00:00 (-3) becomes 23:00 (-4) on the 6th; the 6th lasts 25 hours.
    b = bucket_bounds(u("2024-04-06T03:00"), u("2024-04-08T04:00"), "day", "America/Santiago")
    assert b == [
        (u("2024-04-06T03:00"), u("2024-04-07T04:00")),
        (u("2024-04-07T04:00"), u("2024-04-08T04:00")),
    ]


def test_havana_midnight_gap_and_midnight_fold() -> None:
    # 2024-03-10: 00:00 CST (-5) jumps to 01:00 CDT (-4) at 05:00Z.
    b = bucket_bounds(u("2024-03-09T05:00"), u("2024-03-11T04:00"), "day", "America/Havana")
    assert b == [
        (u("2024-03-09T05:00"), u("2024-03-10T05:00")),
        (u("2024-03-10T05:00"), u("2024-03-11T04:00")),
    ]
    # 2024-11-03: 01:00 CDT falls back to 00:00 CST at 05:00Z; the day starts at the first 00:00.
    b = bucket_bounds(u("2024-11-02T04:00"), u("2024-11-04T05:00"), "day", "America/Havana")
    assert b == [
        (u("2024-11-02T04:00"), u("2024-11-03T04:00")),
        (u("2024-11-03T04:00"), u("2024-11-04T05:00")),
    ]
    h = bucket_bounds(u("2024-11-03T04:00"), u("2024-11-03T07:00"), "hour", "America/Havana")
    assert h == [
        (u("2024-11-03T04:00"), u("2024-11-03T06:00")),  # the 00:00 hour, both passes
        (u("2024-11-03T06:00"), u("2024-11-03T07:00")),  # 01:00 CST
    ]


def test_beirut_dst_start_day_begins_at_one_oclock() -> None:
    # 2024-03-31: 00:00 EET (+2) jumps to 01:00 EEST (+3) at 22:00Z on the 30th.
    b = bucket_bounds(u("2024-03-29T22:00"), u("2024-04-01T21:00"), "day", "Asia/Beirut")
    assert starts(b) == [u("2024-03-29T22:00"), u("2024-03-30T22:00"), u("2024-03-31T21:00")]
    assert hours(b) == [24, 23, 24]


def test_apia_skipped_day_has_no_bucket() -> None:
    # 2011-12-29 24:00 (-10) became 2011-12-31 00:00 (+14) at 10:00Z on the 30th.
    b = bucket_bounds(u("2011-12-28T10:00"), u("2011-12-31T10:00"), "day", "Pacific/Apia")
    assert b == [
        (u("2011-12-28T10:00"), u("2011-12-29T10:00")),  # 28 Dec
        (u("2011-12-29T10:00"), u("2011-12-30T10:00")),  # 29 Dec
        (u("2011-12-30T10:00"), u("2011-12-31T10:00")),  # 31 Dec (30 Dec never happened)
    ]


# --- weeks and months ------------------------------------------------------------------------


def test_weeks_start_monday_across_a_month_end() -> None:
    # 2024-02-05 and 2024-02-12 are Mondays.
    b = bucket_bounds(u("2024-01-31T10:00"), u("2024-02-14T00:00"), "week", "UTC")
    assert b == [
        (u("2024-01-31T10:00"), u("2024-02-05T00:00")),
        (u("2024-02-05T00:00"), u("2024-02-12T00:00")),
        (u("2024-02-12T00:00"), u("2024-02-14T00:00")),
    ]
    b = bucket_bounds(u("2024-01-31T10:00"), u("2024-02-14T00:00"), "week", "Europe/Berlin")
    assert starts(b) == [u("2024-01-31T10:00"), u("2024-02-04T23:00"), u("2024-02-11T23:00")]


def test_a_week_holding_a_dst_change_lasts_167_or_169_hours() -> None:
    # Monday 2024-03-25 to Monday 2024-04-01 in Berlin holds the spring change.
    b = bucket_bounds(u("2024-03-24T23:00"), u("2024-04-07T22:00"), "week", "Europe/Berlin")
    assert starts(b) == [u("2024-03-24T23:00"), u("2024-03-31T22:00")]
    assert hours(b) == [167, 168]
    b = bucket_bounds(u("2024-10-20T22:00"), u("2024-10-27T23:00"), "week", "Europe/Berlin")
    assert hours(b) == [169]


def test_month_lengths_28_29_30_31() -> None:
    b = bucket_bounds(u("2023-01-01T00:00"), u("2024-05-01T00:00"), "month", "UTC")
    days = [(e - s) // D for s, e in b]
    #          J   F   M   A   M   J   J   A   S   O   N   D   J   F   M   A
    assert days == [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31, 31, 29, 31, 30]


def test_berlin_months_follow_local_midnight_through_dst() -> None:
    b = bucket_bounds(u("2024-02-15T00:00"), u("2024-11-15T00:00"), "month", "Europe/Berlin")
    assert starts(b) == [
        u("2024-02-15T00:00"),
        u("2024-02-29T23:00"),  # 1 Mar, CET
        u("2024-03-31T22:00"),  # 1 Apr, CEST
        u("2024-04-30T22:00"),
        u("2024-05-31T22:00"),
        u("2024-06-30T22:00"),
        u("2024-07-31T22:00"),
        u("2024-08-31T22:00"),
        u("2024-09-30T22:00"),
        u("2024-10-31T23:00"),  # 1 Nov, CET again
    ]
    assert b[-1][1] == u("2024-11-15T00:00")


# --- bucket_index ----------------------------------------------------------------------------


def test_bucket_index_places_instants_and_rejects_outsiders() -> None:
    b = bucket_bounds(u("2024-01-01T10:17"), u("2024-01-03T05:00"), "day", "UTC")
    assert bucket_index(b, u("2024-01-01T10:17")) == 0
    assert bucket_index(b, u("2024-01-01T23:59") + 59) == 0
    assert bucket_index(b, u("2024-01-02T00:00")) == 1
    assert bucket_index(b, u("2024-01-03T04:59") + 59) == 2
    assert bucket_index(b, u("2024-01-03T05:00")) is None  # the end is exclusive
    assert bucket_index(b, u("2024-01-01T10:17") - 1) is None
    assert bucket_index([], 0) is None


# --- the cap and the errors ------------------------------------------------------------------


def test_exactly_max_buckets_is_allowed_and_one_more_is_not() -> None:
    start = u("2020-01-01T00:00")
    assert len(bucket_bounds(start, start + MAX_BUCKETS * H, "hour", "UTC")) == MAX_BUCKETS
    with pytest.raises(RuleViolation) as e:
        bucket_bounds(start, start + MAX_BUCKETS * H + 60, "hour", "UTC")
    assert e.value.param == "value_grouping_window"
    assert "wider value_grouping_window or a shorter range" in e.value.message
    assert str(MAX_BUCKETS) in e.value.message


def test_the_cap_counts_buckets_not_hours() -> None:
    # 50,000 real hours in Berlin from January 2020 run to September 2025. Each autumn's
    # repeated hour is one two-hour bucket (a spring day has 23 one-hour buckets), so the five
    # autumns 2020 to 2024 leave five buckets fewer than hours.
    start = u("2020-01-05T23:00")
    b = bucket_bounds(start, start + MAX_BUCKETS * H, "hour", "Europe/Berlin")
    assert len(b) == MAX_BUCKETS - 5
    assert b[-1][1] == start + MAX_BUCKETS * H


def test_a_huge_range_is_refused_at_once() -> None:
    t0 = time.perf_counter()
    with pytest.raises(RuleViolation) as e:
        bucket_bounds(0, MAX_TIMESTAMP, "hour", "Europe/Berlin")
    assert e.value.param == "value_grouping_window"
    with pytest.raises(RuleViolation) as e:
        bucket_bounds(0, MAX_TIMESTAMP, "month", "America/Santiago")
    assert e.value.param == "value_grouping_window"
    assert time.perf_counter() - t0 < 0.05


@pytest.mark.parametrize(
    ("window", "step"), [("hour", H), ("day", D), ("week", 7 * D), ("month", None)]
)
def test_50000_buckets_are_computed_quickly(window: str, step: int | None) -> None:
    start = u("2000-01-03T00:00")  # a Monday
    if step is None:
        end = int(datetime(6166, 8, 1, tzinfo=UTC).timestamp())  # 49,999 months on
    else:
        end = start + (MAX_BUCKETS - 2) * step
    t0 = time.perf_counter()
    b = bucket_bounds(start, end, window, "Europe/Berlin")
    elapsed = time.perf_counter() - t0
    assert MAX_BUCKETS - 10 <= len(b) <= MAX_BUCKETS
    assert elapsed < 0.5, f"{window}: {elapsed * 1000:.0f} ms"  # typically 5 to 45 ms


@pytest.mark.parametrize(
    ("args", "param"),
    [
        ((u("2024-01-01T00:00") + 1, u("2024-01-02T00:00"), "day", "UTC"), "start_time"),
        ((u("2024-01-01T00:00"), u("2024-01-02T00:00") + 30, "day", "UTC"), "end_time"),
        ((u("2024-01-01T00:00"), u("2024-01-01T00:00"), "day", "UTC"), "end_time"),
        ((u("2024-01-02T00:00"), u("2024-01-01T00:00"), "day", "UTC"), "end_time"),
        ((u("2024-01-01T00:00"), u("2024-01-02T00:00"), None, "Europe/Berln"), "timezone"),
        ((u("2024-01-01T00:00"), u("2024-01-02T00:00"), "day", ""), "timezone"),
        ((u("2024-01-01T00:00"), u("2024-01-02T00:00"), "day", "utc"), "timezone"),
        ((u("2024-01-01T00:00"), u("2024-01-02T00:00"), "day", "America"), "timezone"),
        ((u("2024-01-01T00:00"), u("2024-01-02T00:00"), "day", "../etc/passwd"), "timezone"),
        ((u("2024-01-01T00:00"), u("2024-01-02T00:00"), "day", "/etc/localtime"), "timezone"),
        ((u("2024-01-01T00:00"), u("2024-01-02T00:00"), "year", "UTC"), "value_grouping_window"),
        ((u("2024-01-01T00:00"), u("2024-01-02T00:00"), "", "UTC"), "value_grouping_window"),
        ((u("2024-01-01T00:00"), u("2024-01-02T00:00"), "Day", "UTC"), "value_grouping_window"),
        ((-60, u("2024-01-02T00:00"), "day", "UTC"), "start_time"),
        ((0, MAX_TIMESTAMP + 60, "day", "UTC"), "end_time"),
        ((1.5e9, u("2024-01-02T00:00"), "day", "UTC"), "start_time"),
        ((True, u("2024-01-02T00:00"), "day", "UTC"), "start_time"),
        ((u("2024-01-01T00:00"), "1704153600", "day", "UTC"), "end_time"),
    ],
)
def test_every_error_names_its_parameter(args: tuple, param: str) -> None:
    with pytest.raises(RuleViolation) as e:
        bucket_bounds(*args)
    assert e.value.param == param
    assert e.value.code == "parameter_invalid"
    assert e.value.message


def test_the_newer_api_shape_names_its_own_parameters() -> None:
    names = {"start_param": "starts_at", "end_param": "ends_at"}
    with pytest.raises(RuleViolation) as e:
        bucket_bounds(u("2024-01-01T00:00") + 7, u("2024-01-02T00:00"), "day", "UTC", **names)
    assert e.value.param == "starts_at"
    with pytest.raises(RuleViolation) as e:
        bucket_bounds(u("2024-01-02T00:00"), u("2024-01-01T00:00"), "day", "UTC", **names)
    assert e.value.param == "ends_at"
    assert "starts_at" in e.value.message
    with pytest.raises(RuleViolation) as e:
        bucket_bounds(
            u("2024-01-01T00:00"),
            u("2024-01-02T00:00"),
            "fortnight",
            "UTC",
            window_param="grouping",
        )
    assert e.value.param == "grouping"
    with pytest.raises(RuleViolation) as e:
        bucket_bounds(
            u("2024-01-01T00:00"), u("2024-01-02T00:00"), "day", "Nowhere", timezone_param="tz"
        )
    assert e.value.param == "tz"


def test_errors_come_in_parameter_order() -> None:
    with pytest.raises(RuleViolation) as e:
        bucket_bounds(u("2024-01-01T00:00") + 1, 7, "eon", "Nowhere")
    assert e.value.param == "start_time"
    with pytest.raises(RuleViolation) as e:
        bucket_bounds(u("2024-01-01T00:00"), u("2024-01-02T00:00"), "eon", "Nowhere")
    assert e.value.param == "timezone"


# --- properties ------------------------------------------------------------------------------

ZONES = (
    "UTC",
    "Europe/Berlin",
    "Europe/London",
    "America/New_York",
    "America/St_Johns",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "America/Santiago",
    "America/Havana",
    "Asia/Beirut",
    "Pacific/Apia",
    "Pacific/Chatham",
    "Africa/Casablanca",
)
# Days near which each zone changes its offset (or, with no DST, a month end and a leap day).
TRICKY = {
    "UTC": ("2024-02-29", "2024-12-31"),
    "Europe/Berlin": ("2024-03-31", "2024-10-27"),
    "Europe/London": ("2024-03-31", "2024-10-27"),
    "America/New_York": ("2024-03-10", "2024-11-03"),
    "America/St_Johns": ("2024-03-10", "2024-11-03"),
    "Australia/Sydney": ("2024-04-07", "2024-10-06"),
    "Australia/Lord_Howe": ("2024-04-07", "2024-10-06"),
    "Asia/Kolkata": ("2024-02-29", "2024-12-31"),
    "Asia/Kathmandu": ("2024-02-29", "2024-12-31"),
    "America/Santiago": ("2024-04-07", "2024-09-08"),
    "America/Havana": ("2024-03-10", "2024-11-03"),
    "Asia/Beirut": ("2024-03-31", "2024-10-27"),
    "Pacific/Apia": ("2011-12-30", "2011-04-03"),
    "Pacific/Chatham": ("2024-04-07", "2024-09-29"),
    "Africa/Casablanca": ("2024-03-10", "2024-04-14"),
}
MAX_LENGTH_DAYS = {None: 400, "hour": 12, "day": 200, "week": 3 * 366, "month": 12 * 366}
UNIT_MINUTES = {
    None: 24 * 60,
    "hour": 60,
    "day": 24 * 60,
    "week": 7 * 24 * 60,
    "month": 30 * 24 * 60,
}
LO, HI = u("1995-01-01T00:00"), u("2037-01-01T00:00")


@st.composite
def ranges(draw, max_days: dict | None = None) -> tuple[int, int, str | None, str]:
    """(start, end, window, zone): minute-aligned, often near a DST change of the zone."""
    zone = draw(st.sampled_from(ZONES))
    window = draw(st.sampled_from((None, *WINDOWS)))
    if draw(st.booleans()):
        start = LO + draw(st.integers(0, (HI - LO) // 60)) * 60
    else:
        day = u(draw(st.sampled_from(TRICKY[zone])) + "T00:00")
        start = day + draw(st.integers(-4 * 24 * 60, 2 * 24 * 60)) * 60
    unit = UNIT_MINUTES[window]  # about one bucket, so lengths spread over bucket counts
    most = (max_days or MAX_LENGTH_DAYS)[window] * 24 * 60 // unit
    minutes = draw(st.integers(0, most)) * unit + draw(st.integers(1, unit))
    end = start + minutes * 60
    return start, end, window, zone


def wall(ts: int, zone: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(ts, zone)


def label(window: str, local: datetime) -> tuple:
    if window == "hour":
        return (local.year, local.month, local.day, local.hour)
    if window == "day":
        return (local.year, local.month, local.day)
    if window == "week":
        return tuple(local.isocalendar())[:2]
    return (local.year, local.month)


def label_start(window: str, local: datetime) -> datetime:
    naive = local.replace(tzinfo=None, minute=0, second=0, microsecond=0)
    if window == "hour":
        return naive
    naive = naive.replace(hour=0)
    if window == "day":
        return naive
    if window == "week":
        return naive - timedelta(days=naive.weekday())
    return naive.replace(day=1)


@settings(max_examples=150, deadline=None)
@given(ranges())
def test_buckets_tile_the_range_and_start_at_local_boundaries(r) -> None:
    start, end, window, name = r
    zone = ZoneInfo(name)
    b = bucket_bounds(start, end, window, name)
    assert b[0][0] == start and b[-1][1] == end
    assert all(s < e for s, e in b)
    assert all(b[i][1] == b[i + 1][0] for i in range(len(b) - 1))
    if window is None:
        assert b == [(start, end)]
        return
    for s, _ in b[1:]:  # every unclipped start
        local, before = wall(s, zone), wall(s - 1, zone)
        boundary = label_start(window, local)
        assert label(window, before) < label(window, local)
        if local.replace(tzinfo=None) != boundary:
            # Only a gap may move a start: the wall clock jumped over the boundary.
            assert before.replace(tzinfo=None) < boundary
            assert before.utcoffset() < local.utcoffset()


@settings(max_examples=150, deadline=None)
@given(ranges(), st.lists(st.integers(-3 * D, 3 * D), max_size=20))
def test_bucket_index_agrees_with_a_linear_scan(r, offsets: list[int]) -> None:
    start, end, window, name = r
    b = bucket_bounds(start, end, window, name)
    probes = [start + o for o in offsets] + [end + o for o in offsets]
    probes += [s for s, _ in b] + [e - 1 for _, e in b] + [start - 1, end]
    for ts in probes:
        linear = next((i for i, (s, e) in enumerate(b) if s <= ts < e), None)
        assert bucket_index(b, ts) == linear


def reference(start: int, end: int, window: str, zone: ZoneInfo) -> list[int]:
    """Bucket starts by brute force: walk the range in 15-minute steps (every offset and DST
    change since 1995 falls on a quarter hour) and cut where the local label first passes the
    highest label seen so far."""
    cuts, highest = [start], label(window, wall(start, zone))
    t = start - start % 900 + 900
    while t < end:
        current = label(window, wall(t, zone))
        if current > highest:
            cuts.append(t)
            highest = current
        t += 900
    return cuts


SHORT = {None: 5, "hour": 4, "day": 20, "week": 30, "month": 70}


@settings(max_examples=150, deadline=None)
@given(ranges(SHORT))
def test_buckets_match_a_brute_force_scan(r) -> None:
    start, end, window, name = r
    b = bucket_bounds(start, end, window, name)
    if window is None:
        assert b == [(start, end)]
        return
    assert starts(b) == reference(start, end, window, ZoneInfo(name))


@settings(max_examples=150, deadline=None)
@given(ranges({None: 5, "hour": 12, "day": 100, "week": 100, "month": 100}))
def test_wider_windows_nest_in_narrower_ones(r) -> None:
    start, end, _, name = r
    cuts = {w: set(starts(bucket_bounds(start, end, w, name))) for w in WINDOWS}
    assert cuts["day"] <= cuts["hour"]
    assert cuts["week"] <= cuts["day"]
    assert cuts["month"] <= cuts["day"]
