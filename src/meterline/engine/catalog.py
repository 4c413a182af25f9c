"""Prices and plans as values, and Stripe's rules for them.

A plan is a price: both are a `PriceSpec`; only the parameter names differ, so every rule
names the parameter the caller used (`amount` for a plan, `unit_amount` for a price).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from meterline.engine.errors import RuleViolation
from meterline.engine.money import MAX_UNIT_AMOUNT

INTERVALS = ("day", "month", "week", "year")
MAX_INTERVAL_COUNT = {"day": 1095, "week": 156, "month": 36, "year": 3}
USAGE_TYPES = ("licensed", "metered")
BILLING_SCHEMES = ("per_unit", "tiered")
TIERS_MODES = ("graduated", "volume")
ROUNDS = ("down", "up")
MAX_DECIMAL_PLACES = 12


@dataclass(frozen=True)
class Tier:
    up_to: int | None  # None is "inf"
    unit_amount: int | None = None
    unit_amount_decimal: Decimal | None = None
    flat_amount: int | None = None
    flat_amount_decimal: Decimal | None = None


@dataclass(frozen=True)
class Recurring:
    interval: str
    interval_count: int = 1
    usage_type: str = "licensed"
    meter: str | None = None
    trial_period_days: int | None = None


@dataclass(frozen=True)
class PriceSpec:
    currency: str
    billing_scheme: str = "per_unit"
    unit_amount: int | None = None
    unit_amount_decimal: Decimal | None = None
    tiers: tuple[Tier, ...] | None = None
    tiers_mode: str | None = None
    transform_divide_by: int | None = None
    transform_round: str | None = None
    recurring: Recurring | None = None


@dataclass(frozen=True)
class Names:
    """The parameter names of one API style (price or plan)."""

    unit_amount: str
    unit_amount_decimal: str
    transform: str
    interval: str
    interval_count: str
    usage_type: str
    meter: str
    trial_period_days: str


PRICE_NAMES = Names(
    "unit_amount",
    "unit_amount_decimal",
    "transform_quantity",
    "recurring[interval]",
    "recurring[interval_count]",
    "recurring[usage_type]",
    "recurring[meter]",
    "recurring[trial_period_days]",
)
PLAN_NAMES = Names(
    "amount",
    "amount_decimal",
    "transform_usage",
    "interval",
    "interval_count",
    "usage_type",
    "meter",
    "trial_period_days",
)


def _amount(value: int | None, param: str) -> None:
    if value is not None and not 0 <= value <= MAX_UNIT_AMOUNT:
        code = "amount_too_large" if value > MAX_UNIT_AMOUNT else "amount_too_small"
        raise RuleViolation(
            param,
            f"Invalid {param}: must be between 0 and {MAX_UNIT_AMOUNT} (in the currency's minor unit), got {value}.",
            code,
        )


def _decimal(value: Decimal | None, param: str) -> None:
    if value is None:
        return
    if not value.is_finite() or value < 0 or value > MAX_UNIT_AMOUNT:
        raise RuleViolation(
            param,
            f"Invalid {param}: must be a decimal between 0 and {MAX_UNIT_AMOUNT} in the minor unit, got {value}.",
            "parameter_invalid_decimal",
        )
    if -value.as_tuple().exponent > MAX_DECIMAL_PLACES:  # type: ignore[operator]
        raise RuleViolation(
            param,
            f"Invalid {param}: at most {MAX_DECIMAL_PLACES} decimal places are allowed.",
            "parameter_invalid_decimal",
        )


def _exclusive(a: object, b: object, pa: str, pb: str) -> None:
    if a is not None and b is not None:
        raise RuleViolation(
            pb, f"You may only specify one of these parameters: {pa}, {pb}.", "parameters_exclusive"
        )


def check_recurring(r: Recurring, names: Names) -> None:
    if r.interval not in INTERVALS:
        raise RuleViolation(
            names.interval,
            f"Invalid {names.interval}: must be one of day, week, month, or year.",
            "parameter_invalid_enum",
        )
    cap = MAX_INTERVAL_COUNT[r.interval]
    if not 1 <= r.interval_count <= cap:
        raise RuleViolation(
            names.interval_count,
            f"Invalid {names.interval_count}: with interval={r.interval} it must be between 1 and {cap}; "
            "the longest billing interval is 3 years (1095 days, 156 weeks, 36 months or 3 years).",
            "parameter_invalid_integer",
        )
    if r.usage_type not in USAGE_TYPES:
        raise RuleViolation(
            names.usage_type,
            f"Invalid {names.usage_type}: must be licensed or metered.",
            "parameter_invalid_enum",
        )
    if r.meter is not None and r.usage_type != "metered":
        raise RuleViolation(
            names.meter,
            f"{names.meter} can only be set when {names.usage_type} is metered.",
            "parameter_invalid",
        )
    if r.trial_period_days is not None and not 0 <= r.trial_period_days <= 730:
        raise RuleViolation(
            names.trial_period_days,
            f"Invalid {names.trial_period_days}: must be between 0 and 730 days.",
            "parameter_invalid_integer",
        )


def check_tiers(tiers: tuple[Tier, ...]) -> None:
    if not tiers:
        raise RuleViolation(
            "tiers",
            "tiers must contain at least one tier, the last with up_to=inf.",
            "parameter_missing",
        )
    previous = 0
    for i, t in enumerate(tiers):
        p = f"tiers[{i}]"
        last = i == len(tiers) - 1
        if t.up_to is None and not last:
            raise RuleViolation(
                f"{p}[up_to]",
                f"Only the last tier can have up_to=inf; {p} is tier {i + 1} of {len(tiers)}.",
            )
        if t.up_to is not None:
            if last:
                raise RuleViolation(
                    f"{p}[up_to]",
                    f"The last tier must have up_to=inf, so that every quantity has a price (got {t.up_to}).",
                )
            if t.up_to <= previous:
                raise RuleViolation(
                    f"{p}[up_to]",
                    f"Tiers must be in increasing order of up_to, each above the previous one ({t.up_to} follows {previous}).",
                )
            previous = t.up_to
        _exclusive(
            t.unit_amount, t.unit_amount_decimal, f"{p}[unit_amount]", f"{p}[unit_amount_decimal]"
        )
        _exclusive(
            t.flat_amount, t.flat_amount_decimal, f"{p}[flat_amount]", f"{p}[flat_amount_decimal]"
        )
        if (
            t.unit_amount is None
            and t.unit_amount_decimal is None
            and t.flat_amount is None
            and t.flat_amount_decimal is None
        ):
            raise RuleViolation(
                p,
                f"Each tier needs a unit_amount, a flat_amount, or both; {p} has neither.",
                "parameter_missing",
            )
        _amount(t.unit_amount, f"{p}[unit_amount]")
        _amount(t.flat_amount, f"{p}[flat_amount]")
        _decimal(t.unit_amount_decimal, f"{p}[unit_amount_decimal]")
        _decimal(t.flat_amount_decimal, f"{p}[flat_amount_decimal]")


def check_price(spec: PriceSpec, names: Names) -> None:
    """Every rule of a new price or plan; raises RuleViolation naming the caller's parameter."""
    if spec.billing_scheme not in BILLING_SCHEMES:
        raise RuleViolation(
            "billing_scheme",
            "Invalid billing_scheme: must be per_unit or tiered.",
            "parameter_invalid_enum",
        )
    if spec.recurring is not None:
        check_recurring(spec.recurring, names)
    has_transform = spec.transform_divide_by is not None or spec.transform_round is not None
    if has_transform:
        if spec.transform_divide_by is None or spec.transform_divide_by < 1:
            raise RuleViolation(
                f"{names.transform}[divide_by]",
                f"{names.transform}[divide_by] must be a positive integer.",
                "parameter_invalid_integer",
            )
        if spec.transform_round not in ROUNDS:
            raise RuleViolation(
                f"{names.transform}[round]",
                f"{names.transform}[round] must be up or down.",
                "parameter_invalid_enum",
            )
    if spec.billing_scheme == "tiered":
        if spec.unit_amount is not None or spec.unit_amount_decimal is not None:
            which = names.unit_amount if spec.unit_amount is not None else names.unit_amount_decimal
            raise RuleViolation(
                which,
                f"{which} cannot be used with billing_scheme=tiered: the tiers set the amounts.",
            )
        if spec.tiers is None:
            raise RuleViolation(
                "tiers",
                "Missing required param: tiers. A tiered price needs tiers, the last with up_to=inf.",
                "parameter_missing",
            )
        if spec.tiers_mode is None:
            raise RuleViolation(
                "tiers_mode",
                "Missing required param: tiers_mode (graduated or volume) for billing_scheme=tiered.",
                "parameter_missing",
            )
        if spec.tiers_mode not in TIERS_MODES:
            raise RuleViolation(
                "tiers_mode",
                "Invalid tiers_mode: must be graduated or volume.",
                "parameter_invalid_enum",
            )
        if has_transform:
            raise RuleViolation(
                names.transform,
                f"{names.transform} cannot be combined with tiers; use one or the other.",
            )
        check_tiers(spec.tiers)
        return
    if spec.tiers is not None:
        raise RuleViolation("tiers", "tiers can only be set when billing_scheme=tiered.")
    if spec.tiers_mode is not None:
        raise RuleViolation("tiers_mode", "tiers_mode can only be set when billing_scheme=tiered.")
    _exclusive(
        spec.unit_amount, spec.unit_amount_decimal, names.unit_amount, names.unit_amount_decimal
    )
    if spec.unit_amount is None and spec.unit_amount_decimal is None:
        raise RuleViolation(
            names.unit_amount,
            f"Missing required param: {names.unit_amount} (or {names.unit_amount_decimal}) for billing_scheme=per_unit.",
            "parameter_missing",
        )
    _amount(spec.unit_amount, names.unit_amount)
    _decimal(spec.unit_amount_decimal, names.unit_amount_decimal)
