"""Pure tests of aggregation (meterline.engine.aggregate): the formulas, the mergeable partial
states, and the brute-force analytics oracle `usage_rows`.

Examples with hand-computed values (exact sums beyond 28 digits, `last` ties, empty input,
group-by with missing keys, filters, ordering, local-day buckets); then hypothesis properties:
partial states merged in any grouping give exactly what folding the raw events gives, and the
oracle's rows agree with per-minute rollups and with the unwindowed answer.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal, localcontext
from functools import reduce

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterline.engine.aggregate import (
    EMPTY,
    Event,
    Partial,
    Row,
    dimensions_sort_key,
    finish,
    fold,
    merge,
    partial_of,
    usage_rows,
)
from meterline.engine.buckets import bucket_bounds, bucket_index
from meterline.engine.errors import RuleViolation

FORMULAS = ("sum", "count", "last")


def u(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def ev(ts: int, value: str, seq: int, **dims: str) -> Event:
    return Event(timestamp=ts, value=Decimal(value), seq=seq, dimensions=dims)


def same(a: Decimal, b: Decimal) -> bool:
    """Equal in value and in digits (exponent and sign of zero included)."""
    return a == b and a.as_tuple() == b.as_tuple()


# --- fold ------------------------------------------------------------------------------------


def test_sum_is_exact_beyond_the_default_28_digits() -> None:
    events = [ev(0, "999999999999999", 0), ev(1, "0.000000000000001", 1)]
    assert same(fold("sum", events), Decimal("999999999999999.000000000000001"))
    assert same(fold("sum", [ev(0, "0.1", 0)] * 3), Decimal("0.3"))
    assert same(
        fold("sum", [ev(0, "1E+15", 0), ev(0, "1E-15", 1), ev(0, "-1E+15", 2)]), Decimal("1E-15")
    )


def test_sum_takes_negative_corrections() -> None:
    assert same(fold("sum", [ev(0, "5", 0), ev(1, "-7.50", 1)]), Decimal("-2.50"))


def test_count_counts_events_whatever_their_values() -> None:
    events = [ev(0, "5", 0), ev(1, "-5", 1), ev(1, "0", 2)]
    assert same(fold("count", events), Decimal(3))
    assert fold("sum", events) == 0


def test_last_takes_the_latest_timestamp_then_the_latest_arrival() -> None:
    events = [ev(10, "1", 5), ev(20, "2", 1), ev(20, "3", 2), ev(15, "4", 9)]
    assert same(fold("last", events), Decimal("3"))
    # Listed out of arrival order: seq decides, not position.
    assert same(fold("last", [ev(20, "3", 2), ev(20, "2", 1)]), Decimal("3"))
    # A later timestamp beats a later arrival.
    assert same(fold("last", [ev(30, "7", 0), ev(20, "8", 99)]), Decimal("7"))


def test_no_events_give_zero_for_every_formula() -> None:
    for formula in FORMULAS:
        assert same(fold(formula, []), Decimal(0))
        assert same(finish(formula, EMPTY), Decimal(0))
    assert partial_of([]) == EMPTY


def test_an_unknown_formula_is_refused() -> None:
    with pytest.raises(RuleViolation) as e:
        fold("max", [ev(0, "1", 0)])
    assert e.value.param == "default_aggregation[formula]"
    with pytest.raises(RuleViolation):
        finish("avg", EMPTY)


# --- partial states --------------------------------------------------------------------------


def test_partial_of_and_merge_by_hand() -> None:
    a = partial_of([ev(10, "1.5", 0), ev(30, "2", 1)])
    b = partial_of([ev(30, "4", 2), ev(20, "-1", 3)])
    assert a == Partial(Decimal("3.5"), 2, 30, 1, Decimal("2"))
    assert b == Partial(Decimal("3"), 2, 30, 2, Decimal("4"))
    m = merge(a, b)
    assert m == Partial(Decimal("6.5"), 4, 30, 2, Decimal("4"))
    assert merge(b, a) == m  # distinct (timestamp, seq): order does not matter
    assert merge(a, EMPTY) == a and merge(EMPTY, a) == a
    # EMPTY's placeholder last (0, 0) never beats a real event, even one at (0, 0).
    first = partial_of([ev(0, "9", 0)])
    assert merge(first, EMPTY) == first and merge(EMPTY, first) == first
    assert finish("last", merge(first, EMPTY)) == Decimal("9")
    assert [finish(f, m) for f in FORMULAS] == [Decimal("6.5"), Decimal(4), Decimal(4)]


digits15 = st.integers(-(10**15) + 1, 10**15 - 1)
values = st.builds(lambda n, e: Decimal(n).scaleb(e), digits15, st.integers(-20, 6))


@st.composite
def event_lists(draw, max_size: int = 30, span: int = 300) -> list[Event]:
    """Events with few distinct timestamps (so ties are common) and unique arrival numbers."""
    n = draw(st.integers(0, max_size))
    seqs = draw(st.permutations(range(n)))
    return [
        Event(
            timestamp=draw(st.integers(0, span)),
            value=draw(values),
            seq=seqs[i],
            dimensions={"k": draw(st.sampled_from("ab"))},
        )
        for i in range(n)
    ]


@settings(max_examples=150, deadline=None)
@given(event_lists(), st.data())
def test_merging_two_partials_equals_folding_the_union(events: list[Event], data) -> None:
    cut = data.draw(st.integers(0, len(events)))
    a, b = events[:cut], events[cut:]
    merged = merge(partial_of(a), partial_of(b))
    assert merged == partial_of(events)
    for formula in FORMULAS:
        assert same(finish(formula, merged), fold(formula, a + b))


@settings(max_examples=150, deadline=None)
@given(event_lists(max_size=40, span=600), st.randoms(use_true_random=False))
def test_per_minute_rollups_merged_in_any_order_equal_the_raw_fold(
    events: list[Event], rnd: random.Random
) -> None:
    minutes: dict[int, list[Event]] = {}
    for e in events:
        minutes.setdefault(e.timestamp // 60, []).append(e)
    rollups = [partial_of(group) for group in minutes.values()]
    rnd.shuffle(rollups)
    total = reduce(merge, rollups, EMPTY)
    for formula in FORMULAS:
        assert same(finish(formula, total), fold(formula, events))


@settings(max_examples=150, deadline=None)
@given(event_lists(max_size=12), event_lists(max_size=12), event_lists(max_size=12))
def test_merge_is_associative(x: list[Event], y: list[Event], z: list[Event]) -> None:
    a, b, c = partial_of(x), partial_of(y), partial_of(z)
    left, right = merge(merge(a, b), c), merge(a, merge(b, c))
    for formula in FORMULAS:  # the last_* fields may differ only where count is 0
        assert same(finish(formula, left), finish(formula, right))
    assert (left.sum, left.count) == (right.sum, right.count)


# --- the oracle ------------------------------------------------------------------------------

JAN1 = u("2024-01-01T00:00")
JAN4 = u("2024-01-04T00:00")
EVENTS = [
    ev(u("2024-01-01T10:00"), "5", 1, region="eu", tier="gold"),
    ev(u("2024-01-01T11:00"), "2.5", 2, region="us"),
    ev(u("2024-01-01T23:59") + 59, "1", 3, region="eu", tier="silver"),
    ev(u("2024-01-03T00:00"), "-3", 4, region="eu"),
    ev(JAN1 - 1, "100", 0, region="eu"),  # before the range
    ev(JAN4, "100", 5, region="eu"),  # at the (exclusive) end
]
D1, D2, D3 = (JAN1, JAN1 + 86_400), (JAN1 + 86_400, JAN1 + 2 * 86_400), (JAN1 + 2 * 86_400, JAN4)


def rows(**kw) -> list[Row]:
    args = {
        "events_by_meter": {"mtr_sum": EVENTS, "mtr_count": EVENTS, "mtr_last": EVENTS},
        "formulas": {"mtr_sum": "sum", "mtr_count": "count", "mtr_last": "last"},
        "start": JAN1,
        "end": JAN4,
        "window": "day",
        "tz": "UTC",
    }
    args.update(kw)
    return usage_rows(**args)


def table(result: list[Row]) -> list[tuple]:
    return [
        (r.meter_id, r.bucket_start_time, r.bucket_end_time, r.bucket_value, r.dimensions)
        for r in result
    ]


def test_rows_per_meter_and_day_with_no_row_for_an_empty_day() -> None:
    assert table(rows()) == [
        ("mtr_count", *D1, Decimal(3), None),
        ("mtr_count", *D3, Decimal(1), None),
        ("mtr_last", *D1, Decimal("1"), None),
        ("mtr_last", *D3, Decimal("-3"), None),
        ("mtr_sum", *D1, Decimal("8.5"), None),
        ("mtr_sum", *D3, Decimal("-3"), None),
    ]


def test_no_window_gives_one_row_per_meter_over_the_whole_range() -> None:
    assert table(rows(window=None)) == [
        ("mtr_count", JAN1, JAN4, Decimal(4), None),
        ("mtr_last", JAN1, JAN4, Decimal("-3"), None),
        ("mtr_sum", JAN1, JAN4, Decimal("5.5"), None),
    ]


def test_group_by_orders_rows_by_dimensions_then_bucket() -> None:
    result = rows(
        events_by_meter={"mtr_sum": EVENTS},
        formulas={"mtr_sum": "sum"},
        group_by={"mtr_sum": ["region"]},
    )
    assert table(result) == [
        ("mtr_sum", *D1, Decimal("6"), {"region": "eu"}),
        ("mtr_sum", *D3, Decimal("-3"), {"region": "eu"}),
        ("mtr_sum", *D1, Decimal("2.5"), {"region": "us"}),
    ]


def test_a_missing_group_by_key_groups_under_none_which_sorts_first() -> None:
    result = rows(
        events_by_meter={"mtr_sum": EVENTS},
        formulas={"mtr_sum": "sum"},
        group_by={"mtr_sum": ["tier"]},
    )
    assert table(result) == [
        ("mtr_sum", *D1, Decimal("2.5"), {"tier": None}),
        ("mtr_sum", *D3, Decimal("-3"), {"tier": None}),
        ("mtr_sum", *D1, Decimal("5"), {"tier": "gold"}),
        ("mtr_sum", *D1, Decimal("1"), {"tier": "silver"}),
    ]


def test_several_group_by_keys_hold_exactly_those_keys() -> None:
    result = rows(
        events_by_meter={"mtr_count": EVENTS},
        formulas={"mtr_count": "count"},
        group_by={"mtr_count": ["tier", "region", "tier"]},
        window=None,
    )
    assert table(result) == [
        ("mtr_count", JAN1, JAN4, Decimal(1), {"region": "eu", "tier": None}),
        ("mtr_count", JAN1, JAN4, Decimal(1), {"region": "eu", "tier": "gold"}),
        ("mtr_count", JAN1, JAN4, Decimal(1), {"region": "eu", "tier": "silver"}),
        ("mtr_count", JAN1, JAN4, Decimal(1), {"region": "us", "tier": None}),
    ]


@pytest.mark.parametrize(
    ("dimension_filters", "expected"),
    [
        ({"region": "eu"}, Decimal("3")),  # 5 + 1 - 3
        ({"region": ["eu"]}, Decimal("3")),
        ({"region": ["us", "apac"]}, Decimal("2.5")),
        ({"region": "eu", "tier": "gold"}, Decimal("5")),  # every key must match
        ({"tier": ["gold", "silver"]}, Decimal("6")),  # a payload without the key never matches
        ({"region": "EU"}, None),  # values compare exactly
        ({"region": []}, None),  # an empty list matches nothing
    ],
)
def test_filters(dimension_filters: dict, expected: Decimal | None) -> None:
    result = rows(
        events_by_meter={"mtr_sum": EVENTS},
        formulas={"mtr_sum": "sum"},
        filters={"mtr_sum": dimension_filters},
        window=None,
    )
    assert [r.bucket_value for r in result] == ([] if expected is None else [expected])


def test_filters_and_group_by_apply_per_meter() -> None:
    result = rows(
        events_by_meter={"mtr_a": EVENTS, "mtr_b": EVENTS},
        formulas={"mtr_a": "sum", "mtr_b": "sum"},
        filters={"mtr_a": {"region": "us"}},
        group_by={"mtr_b": ["region"]},
        window=None,
    )
    assert table(result) == [
        ("mtr_a", JAN1, JAN4, Decimal("2.5"), None),
        ("mtr_b", JAN1, JAN4, Decimal("3"), {"region": "eu"}),
        ("mtr_b", JAN1, JAN4, Decimal("2.5"), {"region": "us"}),
    ]


def test_last_in_a_bucket_breaks_timestamp_ties_by_arrival() -> None:
    t = u("2024-01-02T12:00")
    events = [ev(t, "7", 11), ev(t, "9", 12), ev(t - 60, "1", 20)]
    result = rows(events_by_meter={"m": events}, formulas={"m": "last"})
    assert table(result) == [("m", *D2, Decimal("9"), None)]


def test_local_days_put_events_in_the_berlin_day_they_happened() -> None:
    # Berlin days around the spring change: 30 Mar is 29 Mar 23:00Z to 30 Mar 23:00Z (24 h),
    # 31 Mar is 30 Mar 23:00Z to 31 Mar 22:00Z (23 h).
    events = [
        ev(u("2024-03-30T22:59"), "1", 0),  # 30 Mar 23:59 CET
        ev(u("2024-03-30T23:00"), "10", 1),  # 31 Mar 00:00 CET
        ev(u("2024-03-31T21:59"), "100", 2),  # 31 Mar 23:59 CEST
        ev(u("2024-03-31T22:00"), "1000", 3),  # 1 Apr 00:00 CEST
    ]
    result = usage_rows(
        {"m": events},
        {"m": "sum"},
        u("2024-03-29T23:00"),
        u("2024-04-01T22:00"),
        "day",
        "Europe/Berlin",
    )
    assert table(result) == [
        ("m", u("2024-03-29T23:00"), u("2024-03-30T23:00"), Decimal("1"), None),
        ("m", u("2024-03-30T23:00"), u("2024-03-31T22:00"), Decimal("110"), None),
        ("m", u("2024-03-31T22:00"), u("2024-04-01T22:00"), Decimal("1000"), None),
    ]


def test_a_meter_with_no_events_in_range_has_no_rows() -> None:
    assert rows(events_by_meter={"m": [EVENTS[4], EVENTS[5]]}, formulas={"m": "sum"}) == []
    assert rows(events_by_meter={"m": []}, formulas={"m": "count"}) == []
    assert rows(events_by_meter={}, formulas={}) == []


def test_bucket_errors_name_the_callers_parameters() -> None:
    with pytest.raises(RuleViolation) as e:
        rows(window="year")
    assert e.value.param == "value_grouping_window"
    with pytest.raises(RuleViolation) as e:
        rows(start=JAN1 + 1, start_param="starts_at", end_param="ends_at")
    assert e.value.param == "starts_at"
    with pytest.raises(RuleViolation) as e:
        rows(formulas={"mtr_sum": "sum", "mtr_count": "count", "mtr_last": "median"})
    assert e.value.param == "default_aggregation[formula]"


def test_dimensions_sort_none_before_values_key_by_key() -> None:
    dims = [
        {"a": "x", "b": None},
        {"a": None, "b": "z"},
        {"a": "x", "b": "a"},
        {"a": None, "b": None},
    ]
    assert sorted(dims, key=dimensions_sort_key) == [
        {"a": None, "b": None},
        {"a": None, "b": "z"},
        {"a": "x", "b": None},
        {"a": "x", "b": "a"},
    ]


# --- oracle properties -----------------------------------------------------------------------

ZONES = ("UTC", "Europe/Berlin", "Asia/Kathmandu", "Australia/Lord_Howe", "America/Santiago")
BASE = u("2024-03-28T00:00")  # a week holding spring changes in Berlin and (in April) Chile


@st.composite
def analytics_case(draw):
    span = 12 * 86_400
    n = draw(st.integers(0, 40))
    seqs = draw(st.permutations(range(n)))
    events = [
        Event(
            timestamp=BASE + draw(st.integers(-3600, span + 3600)),
            value=draw(values),
            seq=seqs[i],
            dimensions={
                k: v
                for k, v in (
                    ("r", draw(st.sampled_from(["eu", "us", None]))),
                    ("t", draw(st.sampled_from(["x", None]))),
                )
                if v is not None
            },
        )
        for i in range(n)
    ]
    start = BASE + draw(st.integers(0, 3 * 24 * 60)) * 60
    end = start + draw(st.integers(1, 9 * 24 * 60)) * 60
    window = draw(st.sampled_from(["hour", "day", "week", "month"]))
    zone = draw(st.sampled_from(ZONES))
    keys = draw(st.sampled_from([[], ["r"], ["t"], ["r", "t"]]))
    filters = draw(st.sampled_from([{}, {"r": "eu"}, {"r": ["eu", "us"]}, {"t": "x"}]))
    return events, start, end, window, zone, keys, filters


def group_of(e: Event, keys: list[str]) -> dict | None:
    return {k: e.dimensions.get(k) for k in sorted(keys)} if keys else None


@settings(max_examples=150, deadline=None)
@given(analytics_case(), st.sampled_from(FORMULAS))
def test_oracle_rows_equal_per_minute_rollups_merged_per_bucket(case, formula: str) -> None:
    events, start, end, window, zone, keys, filters = case
    result = usage_rows(
        {"m": events}, {"m": formula}, start, end, window, zone, {"m": keys}, {"m": filters}
    )
    # The fast path's way: per-minute partial states per group, merged per bucket. Buckets
    # start and end on whole minutes (every offset here is a whole number of minutes).
    bounds = bucket_bounds(start, end, window, zone)
    assert all(s % 60 == 0 and e % 60 == 0 for s, e in bounds)
    rollups: dict[tuple, list[Event]] = {}
    for e in events:
        if not all(
            e.dimensions.get(k) is not None
            and (e.dimensions[k] == v if isinstance(v, str) else e.dimensions[k] in v)
            for k, v in filters.items()
        ):
            continue
        key = (
            tuple(sorted((group_of(e, keys) or {}).items(), key=lambda kv: kv[0])),
            e.timestamp // 60,
        )
        rollups.setdefault(key, []).append(e)
    per_bucket: dict[tuple, Partial] = {}
    for (dims, minute), members in rollups.items():
        i = bucket_index(bounds, minute * 60)
        if i is None:
            continue
        slot = (dims, i)
        per_bucket[slot] = merge(per_bucket.get(slot, EMPTY), partial_of(members))
    expected = sorted(
        (
            (
                bounds[i][0],
                bounds[i][1],
                finish(formula, p),
                dict(dims) if keys else None,
            )
            for (dims, i), p in per_bucket.items()
        ),
        key=lambda r: (dimensions_sort_key(r[3]), r[0]),
    )
    got = [(r.bucket_start_time, r.bucket_end_time, r.bucket_value, r.dimensions) for r in result]
    assert len(got) == len(expected)
    for g, x in zip(got, expected, strict=True):
        assert g[:2] == x[:2] and g[3] == x[3] and same(g[2], x[2])


@settings(max_examples=150, deadline=None)
@given(analytics_case())
def test_windowed_rows_add_up_to_the_unwindowed_row(case) -> None:
    events, start, end, window, zone, keys, filters = case
    args = ({"m": events}, start, end)
    for formula in FORMULAS:
        windowed = usage_rows(
            args[0], {"m": formula}, start, end, window, zone, {"m": keys}, {"m": filters}
        )
        whole = usage_rows(
            args[0], {"m": formula}, start, end, None, zone, {"m": keys}, {"m": filters}
        )
        assert [r.dimensions for r in whole] == sorted(
            {tuple(sorted((r.dimensions or {}).items())): r.dimensions for r in windowed}.values(),
            key=dimensions_sort_key,
        )
        for row in whole:
            mine = [r for r in windowed if r.dimensions == row.dimensions]
            starts = [r.bucket_start_time for r in mine]
            assert starts == sorted(starts)
            if formula == "last":
                assert row.bucket_value == mine[-1].bucket_value
            else:
                with localcontext() as exact:
                    exact.prec = 200  # far beyond any sum of these values: no rounding
                    assert row.bucket_value == sum((r.bucket_value for r in mine), Decimal(0))
