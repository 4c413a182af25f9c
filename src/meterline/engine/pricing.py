"""What a price charges for a quantity: metered usage to billed quantity, and quantity to money.

Always true here:
- Usage is a `Decimal` aggregate; a negative period total bills quantity 0. `transform_quantity`
  divides by `divide_by` and rounds `up` or `down` to a whole quantity; without a transform a
  fractional usage is billed as is (per-unit amounts are exact decimals until the line rounds).
- A line's amount is computed exactly (unit amounts may be decimals of the minor unit) and rounded
  once, half-up, to an integer of the currency's minor unit (ours; semantics "Amounts round
  half-up ... once per line").
- `graduated` tiers charge each slice of the quantity at its tier (plus each entered tier's flat
  amount); `volume` charges the whole quantity at the one tier it falls in (plus that tier's flat
  amount). A tier's `up_to` is inclusive; None is infinity. Quantity 0 charges nothing in either
  mode, flat amounts included (ours: no usage, no charge).
May import: the standard library and engine values.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal

from meterline.engine.aggregate import exact_add, exact_mul
from meterline.engine.catalog import PriceSpec, Tier

ZERO = Decimal(0)


def billed_quantity(
    usage: Decimal, divide_by: int | None = None, round_: str | None = None
) -> Decimal:
    """The quantity a metered line bills for a period's aggregate."""
    if usage <= 0:
        return ZERO
    if divide_by:
        q = usage / Decimal(divide_by)  # default context: 28 digits, far beyond 15-digit usage
        mode = ROUND_CEILING if round_ == "up" else ROUND_FLOOR
        return q.to_integral_value(rounding=mode)
    return usage


def _unit(amount: int | None, amount_decimal: Decimal | None) -> Decimal:
    if amount_decimal is not None:
        return Decimal(amount_decimal)
    return Decimal(amount or 0)


def _flat(t: Tier) -> Decimal:
    return _unit(t.flat_amount, t.flat_amount_decimal)


def exact_amount(spec: PriceSpec, quantity: Decimal) -> Decimal:
    """The line's amount in (possibly fractional) minor units, before rounding."""
    if quantity <= 0:
        return ZERO
    if spec.billing_scheme != "tiered" or not spec.tiers:
        return exact_mul(quantity, _unit(spec.unit_amount, spec.unit_amount_decimal))
    tiers = spec.tiers
    if spec.tiers_mode == "volume":
        for t in tiers:
            if t.up_to is None or quantity <= t.up_to:
                return exact_add(
                    exact_mul(quantity, _unit(t.unit_amount, t.unit_amount_decimal)), _flat(t)
                )
        raise ValueError("the last tier must go up to infinity")
    total, lower = ZERO, ZERO
    for t in tiers:
        upper = quantity if t.up_to is None else min(quantity, Decimal(t.up_to))
        if upper > lower:
            total = exact_add(
                total, exact_mul(upper - lower, _unit(t.unit_amount, t.unit_amount_decimal))
            )
            total = exact_add(total, _flat(t))
        if t.up_to is None or quantity <= t.up_to:
            break
        lower = Decimal(t.up_to)
    return total


def line_amount(spec: PriceSpec, quantity: Decimal) -> int:
    """The line's amount in minor units: exact, then rounded half-up once."""
    return int(exact_amount(spec, quantity).quantize(Decimal(1), rounding=ROUND_HALF_UP))


__all__ = ["billed_quantity", "exact_amount", "line_amount"]
