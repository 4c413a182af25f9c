"""Pure unit tests of the catalog rules (meterline.engine.catalog) and currencies (engine.money).

No server, no database: every rule is checked for the parameter it names, in both the price
naming (`unit_amount`, `recurring[interval]`, `transform_quantity`) and the plan naming (`amount`,
`interval`, `transform_usage`).
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterline.engine.catalog import (
    MAX_INTERVAL_COUNT,
    PLAN_NAMES,
    PRICE_NAMES,
    Names,
    PriceSpec,
    Recurring,
    Tier,
    check_price,
    check_recurring,
    check_tiers,
)
from meterline.engine.errors import RuleViolation
from meterline.engine.money import (
    CURRENCIES,
    MAX_UNIT_AMOUNT,
    THREE_DECIMAL,
    ZERO_DECIMAL,
    check_currency,
    minor_unit_exponent,
)

BOTH = pytest.mark.parametrize("names", [PRICE_NAMES, PLAN_NAMES], ids=["price", "plan"])

GOOD_TIERS = (Tier(up_to=1000, unit_amount=10), Tier(up_to=None, unit_amount=5))


def refused(fn, *args, param: str | None, code: str = "parameter_invalid") -> RuleViolation:
    """Call fn(*args), expect a RuleViolation naming `param` with `code` and a message."""
    with pytest.raises(RuleViolation) as ei:
        fn(*args)
    err = ei.value
    assert (err.param, err.code) == (param, code), err.message
    assert err.message and str(err) == err.message
    return err


def per_unit(**kw) -> PriceSpec:
    return PriceSpec(currency="usd", **{"unit_amount": 100, **kw})


def tiered(**kw) -> PriceSpec:
    return PriceSpec(
        currency="usd",
        **{"billing_scheme": "tiered", "tiers": GOOD_TIERS, "tiers_mode": "graduated", **kw},
    )


# -- parameter naming -------------------------------------------------------------------------------
def test_price_and_plan_names():
    assert PRICE_NAMES == Names(
        "unit_amount",
        "unit_amount_decimal",
        "transform_quantity",
        "recurring[interval]",
        "recurring[interval_count]",
        "recurring[usage_type]",
        "recurring[meter]",
        "recurring[trial_period_days]",
    )
    assert PLAN_NAMES == Names(
        "amount",
        "amount_decimal",
        "transform_usage",
        "interval",
        "interval_count",
        "usage_type",
        "meter",
        "trial_period_days",
    )


def test_rule_violation_defaults_to_parameter_invalid():
    e = RuleViolation("x", "bad x")
    assert (e.param, e.message, e.code, str(e)) == ("x", "bad x", "parameter_invalid", "bad x")


# -- check_recurring ---------------------------------------------------------------------------------
@BOTH
@pytest.mark.parametrize("interval", ["day", "week", "month", "year"])
def test_recurring_interval_count_bounds(names, interval):
    cap = {"day": 1095, "week": 156, "month": 36, "year": 3}[interval]
    assert MAX_INTERVAL_COUNT[interval] == cap
    check_recurring(Recurring(interval, 1), names)
    check_recurring(Recurring(interval, cap), names)
    for bad in (cap + 1, 0, -1):
        err = refused(
            check_recurring,
            Recurring(interval, bad),
            names,
            param=names.interval_count,
            code="parameter_invalid_integer",
        )
        assert str(cap) in err.message and names.interval_count in err.message


@BOTH
@pytest.mark.parametrize("interval", ["fortnight", "", "Month", "days"])
def test_recurring_interval_enum(names, interval):
    refused(
        check_recurring,
        Recurring(interval),
        names,
        param=names.interval,
        code="parameter_invalid_enum",
    )


@BOTH
def test_recurring_usage_type(names):
    check_recurring(Recurring("month", usage_type="licensed"), names)
    check_recurring(Recurring("month", usage_type="metered"), names)
    refused(
        check_recurring,
        Recurring("month", usage_type="sometimes"),
        names,
        param=names.usage_type,
        code="parameter_invalid_enum",
    )


@BOTH
def test_recurring_meter_needs_metered(names):
    check_recurring(Recurring("month", usage_type="metered", meter="mtr_1"), names)
    err = refused(
        check_recurring,
        Recurring("month", usage_type="licensed", meter="mtr_1"),
        names,
        param=names.meter,
    )
    assert names.usage_type in err.message


@BOTH
def test_recurring_trial_period_days(names):
    for ok in (None, 0, 1, 730):
        check_recurring(Recurring("month", trial_period_days=ok), names)
    for bad in (-1, 731, 10_000):
        refused(
            check_recurring,
            Recurring("month", trial_period_days=bad),
            names,
            param=names.trial_period_days,
            code="parameter_invalid_integer",
        )


@BOTH
def test_recurring_checks_run_in_order(names):
    # a bad interval is reported before a bad count, a bad count before a bad usage type
    refused(
        check_recurring,
        Recurring("hour", 0, "x"),
        names,
        param=names.interval,
        code="parameter_invalid_enum",
    )
    refused(
        check_recurring,
        Recurring("day", 0, "x"),
        names,
        param=names.interval_count,
        code="parameter_invalid_integer",
    )


# -- check_tiers ---------------------------------------------------------------------------------------
def test_tiers_accepted_shapes():
    check_tiers((Tier(None, unit_amount=0),))  # one tier, inf
    check_tiers((Tier(None, flat_amount=500),))  # flat only
    check_tiers((Tier(None, unit_amount_decimal=Decimal("0.000000000001")),))  # 12 places
    check_tiers((Tier(None, flat_amount_decimal=Decimal("12.5")),))
    check_tiers(
        (
            Tier(1, unit_amount=1, flat_amount=100),
            Tier(2, unit_amount=MAX_UNIT_AMOUNT),
            Tier(None, flat_amount_decimal=Decimal(MAX_UNIT_AMOUNT)),
        )
    )
    check_tiers(GOOD_TIERS)


def test_tiers_empty():
    refused(check_tiers, (), param="tiers", code="parameter_missing")


def test_tiers_last_must_be_inf():
    err = refused(
        check_tiers, (Tier(10, unit_amount=1), Tier(20, unit_amount=1)), param="tiers[1][up_to]"
    )
    assert "inf" in err.message
    refused(check_tiers, (Tier(10, unit_amount=1),), param="tiers[0][up_to]")


def test_tiers_inf_only_last():
    refused(
        check_tiers, (Tier(None, unit_amount=1), Tier(None, unit_amount=1)), param="tiers[0][up_to]"
    )
    refused(
        check_tiers,
        (Tier(5, unit_amount=1), Tier(None, unit_amount=1), Tier(None, unit_amount=1)),
        param="tiers[1][up_to]",
    )


@pytest.mark.parametrize(
    "ups,bad", [((10, 10), 1), ((10, 5), 1), ((0,), 0), ((-3,), 0), ((1, 2, 2), 2), ((5, 6, 4), 2)]
)
def test_tiers_up_to_strictly_increasing(ups, bad):
    tiers = tuple(Tier(u, unit_amount=1) for u in ups) + (Tier(None, unit_amount=1),)
    err = refused(check_tiers, tiers, param=f"tiers[{bad}][up_to]")
    assert "increasing" in err.message


def test_tiers_amount_pairs_exclusive():
    refused(
        check_tiers,
        (Tier(None, unit_amount=1, unit_amount_decimal=Decimal("1.5")),),
        param="tiers[0][unit_amount_decimal]",
        code="parameters_exclusive",
    )
    refused(
        check_tiers,
        (Tier(3, unit_amount=1), Tier(None, flat_amount=1, flat_amount_decimal=Decimal("1"))),
        param="tiers[1][flat_amount_decimal]",
        code="parameters_exclusive",
    )
    # a unit amount and a flat amount together is fine
    check_tiers((Tier(None, unit_amount_decimal=Decimal("0.5"), flat_amount=100),))


def test_tiers_need_an_amount():
    refused(
        check_tiers,
        (Tier(3, unit_amount=1), Tier(None)),
        param="tiers[1]",
        code="parameter_missing",
    )


@pytest.mark.parametrize("field", ["unit_amount", "flat_amount"])
def test_tier_integer_amount_range(field):
    check_tiers((Tier(None, **{field: 0}),))
    check_tiers((Tier(None, **{field: MAX_UNIT_AMOUNT}),))
    refused(
        check_tiers,
        (Tier(None, **{field: MAX_UNIT_AMOUNT + 1}),),
        param=f"tiers[0][{field}]",
        code="amount_too_large",
    )
    refused(
        check_tiers,
        (Tier(None, **{field: -1}),),
        param=f"tiers[0][{field}]",
        code="amount_too_small",
    )


@pytest.mark.parametrize("field", ["unit_amount_decimal", "flat_amount_decimal"])
@pytest.mark.parametrize("value", ["-0.01", "100000000", "NaN", "Infinity", "0.0000000000001"])
def test_tier_decimal_amount_refused(field, value):
    refused(
        check_tiers,
        (Tier(7, unit_amount=1), Tier(None, **{field: Decimal(value)})),
        param=f"tiers[1][{field}]",
        code="parameter_invalid_decimal",
    )


# -- check_price ----------------------------------------------------------------------------------
@BOTH
def test_per_unit_accepted(names):
    check_price(per_unit(), names)
    check_price(per_unit(unit_amount=0), names)
    check_price(per_unit(unit_amount=MAX_UNIT_AMOUNT), names)
    check_price(per_unit(unit_amount=None, unit_amount_decimal=Decimal("0.0125")), names)
    check_price(
        per_unit(unit_amount=None, unit_amount_decimal=Decimal("99999999.000000000000")), names
    )
    check_price(per_unit(recurring=Recurring("month", 3, "metered", trial_period_days=14)), names)
    check_price(per_unit(transform_divide_by=1000, transform_round="up"), names)
    check_price(per_unit(transform_divide_by=1, transform_round="down"), names)


@BOTH
def test_billing_scheme_enum(names):
    refused(
        check_price,
        per_unit(billing_scheme="flat"),
        names,
        param="billing_scheme",
        code="parameter_invalid_enum",
    )


@BOTH
def test_amount_and_decimal_exclusive(names):
    err = refused(
        check_price,
        per_unit(unit_amount_decimal=Decimal("1.5")),
        names,
        param=names.unit_amount_decimal,
        code="parameters_exclusive",
    )
    assert names.unit_amount in err.message


@BOTH
def test_amount_missing(names):
    err = refused(
        check_price,
        per_unit(unit_amount=None),
        names,
        param=names.unit_amount,
        code="parameter_missing",
    )
    assert names.unit_amount_decimal in err.message


@BOTH
def test_amount_range(names):
    refused(
        check_price,
        per_unit(unit_amount=MAX_UNIT_AMOUNT + 1),
        names,
        param=names.unit_amount,
        code="amount_too_large",
    )
    refused(
        check_price,
        per_unit(unit_amount=-1),
        names,
        param=names.unit_amount,
        code="amount_too_small",
    )


@BOTH
@pytest.mark.parametrize(
    "value",
    [
        "-1",
        "-0.000000000001",
        "100000000",
        "99999999.000000000001",
        "0.0000000000001",
        "NaN",
        "-Infinity",
    ],
)
def test_amount_decimal_refused(names, value):
    refused(
        check_price,
        per_unit(unit_amount=None, unit_amount_decimal=Decimal(value)),
        names,
        param=names.unit_amount_decimal,
        code="parameter_invalid_decimal",
    )


@BOTH
def test_recurring_is_checked_with_callers_names(names):
    refused(
        check_price,
        per_unit(recurring=Recurring("month", 37)),
        names,
        param=names.interval_count,
        code="parameter_invalid_integer",
    )
    refused(
        check_price,
        per_unit(recurring=Recurring("week", 157)),
        names,
        param=names.interval_count,
        code="parameter_invalid_integer",
    )
    refused(
        check_price,
        per_unit(recurring=Recurring("decade")),
        names,
        param=names.interval,
        code="parameter_invalid_enum",
    )
    refused(check_price, tiered(recurring=Recurring("month", meter="m")), names, param=names.meter)


@BOTH
def test_transform(names):
    t = names.transform
    refused(
        check_price,
        per_unit(transform_divide_by=0, transform_round="up"),
        names,
        param=f"{t}[divide_by]",
        code="parameter_invalid_integer",
    )
    refused(
        check_price,
        per_unit(transform_divide_by=-5, transform_round="up"),
        names,
        param=f"{t}[divide_by]",
        code="parameter_invalid_integer",
    )
    refused(
        check_price,
        per_unit(transform_round="up"),
        names,
        param=f"{t}[divide_by]",
        code="parameter_invalid_integer",
    )
    refused(
        check_price,
        per_unit(transform_divide_by=10),
        names,
        param=f"{t}[round]",
        code="parameter_invalid_enum",
    )
    refused(
        check_price,
        per_unit(transform_divide_by=10, transform_round="nearest"),
        names,
        param=f"{t}[round]",
        code="parameter_invalid_enum",
    )


@BOTH
def test_tiered_accepted(names):
    check_price(tiered(), names)
    check_price(tiered(tiers_mode="volume", recurring=Recurring("year", 3, "metered")), names)


@BOTH
def test_tiered_refuses_flat_amounts(names):
    err = refused(check_price, tiered(unit_amount=5), names, param=names.unit_amount)
    assert "tiered" in err.message
    refused(
        check_price,
        tiered(unit_amount_decimal=Decimal("0.5")),
        names,
        param=names.unit_amount_decimal,
    )


@BOTH
def test_tiered_needs_tiers_and_mode(names):
    refused(check_price, tiered(tiers=None), names, param="tiers", code="parameter_missing")
    refused(
        check_price, tiered(tiers_mode=None), names, param="tiers_mode", code="parameter_missing"
    )
    refused(
        check_price,
        tiered(tiers_mode="stairs"),
        names,
        param="tiers_mode",
        code="parameter_invalid_enum",
    )
    refused(check_price, tiered(tiers=()), names, param="tiers", code="parameter_missing")


@BOTH
def test_tiered_refuses_transform(names):
    err = refused(
        check_price,
        tiered(transform_divide_by=10, transform_round="up"),
        names,
        param=names.transform,
    )
    assert "tiers" in err.message


@BOTH
def test_tiered_checks_the_tiers(names):
    refused(
        check_price,
        tiered(tiers=(Tier(5, unit_amount=1), Tier(4, unit_amount=1))),
        names,
        param="tiers[1][up_to]",
    )


@BOTH
def test_per_unit_refuses_tier_fields(names):
    refused(check_price, per_unit(tiers=GOOD_TIERS), names, param="tiers")
    refused(check_price, per_unit(tiers_mode="volume"), names, param="tiers_mode")


# -- money --------------------------------------------------------------------------------------
def test_check_currency():
    assert check_currency("usd") == "usd"
    assert check_currency("USD") == "usd"
    assert check_currency("Eur") == "eur"
    assert check_currency("jpy") == "jpy"
    for bad in ("xyz", "", "us", "usdd", "dollars"):
        refused(check_currency, bad, param="currency", code="parameter_invalid_currency")
    err = refused(
        check_currency,
        "xyz",
        "plan[currency]",
        param="plan[currency]",
        code="parameter_invalid_currency",
    )
    assert "xyz" in err.message


def test_minor_units():
    assert minor_unit_exponent("usd") == 2
    assert minor_unit_exponent("eur") == 2
    assert minor_unit_exponent("jpy") == 0
    assert minor_unit_exponent("krw") == 0
    assert minor_unit_exponent("kwd") == 3
    assert minor_unit_exponent("bhd") == 3
    assert ZERO_DECIMAL <= CURRENCIES and THREE_DECIMAL <= CURRENCIES
    assert not ZERO_DECIMAL & THREE_DECIMAL
    assert all(len(c) == 3 and c == c.lower() for c in CURRENCIES)
    assert MAX_UNIT_AMOUNT == 99_999_999


# -- properties -------------------------------------------------------------------------------------
_AMOUNT_FIELDS = ("unit_amount", "unit_amount_decimal", "flat_amount", "flat_amount_decimal")
_int_amounts = st.integers(0, MAX_UNIT_AMOUNT)


@st.composite
def _decimal_amount(draw) -> Decimal:
    places = draw(st.integers(0, 12))
    whole = draw(st.integers(0, MAX_UNIT_AMOUNT - 1))
    frac = draw(st.integers(0, 10**places - 1))
    return Decimal(whole) + Decimal(frac).scaleb(-places)


@st.composite
def valid_tiers(draw) -> tuple[Tier, ...]:
    """1 to 8 tiers: up_to strictly increasing, last up_to=None, exactly one amount each."""
    n = draw(st.integers(1, 8))
    ups = sorted(draw(st.sets(st.integers(1, 10**12), min_size=n - 1, max_size=n - 1)))
    tiers = []
    for up_to in [*ups, None]:
        field = draw(st.sampled_from(_AMOUNT_FIELDS))
        value = draw(_decimal_amount() if field.endswith("_decimal") else _int_amounts)
        tiers.append(Tier(up_to=up_to, **{field: value}))
    return tuple(tiers)


@settings(max_examples=200, deadline=None)
@given(
    tiers=valid_tiers(),
    mode=st.sampled_from(["graduated", "volume"]),
    names=st.sampled_from([PRICE_NAMES, PLAN_NAMES]),
)
def test_property_valid_tiers_accepted(tiers, mode, names):
    check_tiers(tiers)
    check_price(
        PriceSpec(currency="usd", billing_scheme="tiered", tiers=tiers, tiers_mode=mode), names
    )
    check_price(
        PriceSpec(
            currency="eur",
            billing_scheme="tiered",
            tiers=tiers,
            tiers_mode=mode,
            recurring=Recurring("month"),
        ),
        names,
    )


_BREAKS = (
    "not_increasing",
    "last_not_inf",
    "inf_too_early",
    "no_amount",
    "both_unit",
    "both_flat",
    "too_large",
    "negative",
    "bad_decimal",
)


def _break(tiers: tuple[Tier, ...], i: int, how: str) -> tuple[Tier, str, str]:
    """Break one property of tier i; returns (the broken tier, expected param, expected code)."""
    t = tiers[i]
    p = f"tiers[{i}]"
    if how == "not_increasing":  # up_to at or below the previous one (0 for the first tier)
        previous = tiers[i - 1].up_to if i > 0 else 0
        return replace(t, up_to=previous - (i % 2)), f"{p}[up_to]", "parameter_invalid"
    if how == "last_not_inf":
        previous = tiers[i - 1].up_to if i > 0 else 0
        return replace(t, up_to=previous + 1), f"{p}[up_to]", "parameter_invalid"
    if how == "inf_too_early":
        return replace(t, up_to=None), f"{p}[up_to]", "parameter_invalid"
    if how == "no_amount":
        return Tier(up_to=t.up_to), p, "parameter_missing"
    if how == "both_unit":
        return (
            Tier(up_to=t.up_to, unit_amount=1, unit_amount_decimal=Decimal("1.5")),
            f"{p}[unit_amount_decimal]",
            "parameters_exclusive",
        )
    if how == "both_flat":
        return (
            Tier(up_to=t.up_to, flat_amount=1, flat_amount_decimal=Decimal("1")),
            f"{p}[flat_amount_decimal]",
            "parameters_exclusive",
        )
    if how == "too_large":
        return (
            Tier(up_to=t.up_to, flat_amount=MAX_UNIT_AMOUNT + 1),
            f"{p}[flat_amount]",
            "amount_too_large",
        )
    if how == "negative":
        return Tier(up_to=t.up_to, unit_amount=-1), f"{p}[unit_amount]", "amount_too_small"
    assert how == "bad_decimal"
    return (
        Tier(up_to=t.up_to, unit_amount_decimal=Decimal("0.0000000000001")),
        f"{p}[unit_amount_decimal]",
        "parameter_invalid_decimal",
    )


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    tiers=valid_tiers(),
    how=st.sampled_from(_BREAKS),
    names=st.sampled_from([PRICE_NAMES, PLAN_NAMES]),
)
def test_property_one_broken_property_is_named(data, tiers, how, names):
    if how == "last_not_inf":
        i = len(tiers) - 1
    elif how == "inf_too_early":
        if len(tiers) < 2:
            tiers = (Tier(1, unit_amount=1), *tiers)
        i = data.draw(st.integers(0, len(tiers) - 2), label="i")
    else:
        last = len(tiers) - 1 if how != "not_increasing" else len(tiers) - 2
        if last < 0:
            tiers = (Tier(1, unit_amount=1), *tiers)
            last = 0
        i = data.draw(st.integers(0, last), label="i")
    broken, param, code = _break(tiers, i, how)
    bad = tiers[:i] + (broken,) + tiers[i + 1 :]
    with pytest.raises(RuleViolation) as ei:
        check_tiers(bad)
    assert (ei.value.param, ei.value.code) == (param, code), ei.value.message
    with pytest.raises(RuleViolation) as ei:
        check_price(
            PriceSpec(currency="usd", billing_scheme="tiered", tiers=bad, tiers_mode="volume"),
            names,
        )
    assert (ei.value.param, ei.value.code) == (param, code), ei.value.message
