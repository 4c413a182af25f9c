"""Subscription cycles and invoice assembly: which periods bill, and the lines an invoice gets.

Values: `Item` (a subscription item as billing sees it), `LineDraft` (an invoice line before it is
stored), `Cycle` (a subscription's billing state) and `Renewal` (what a period end does).
Functions: `first_period`, `renew`, `licensed_lines`, `metered_lines`, `prorated`.

Always true here:
- Periods follow `engine.periods` from the billing cycle anchor (month ends clamp). Before the
  anchor (a trial that ends earlier, or an anchor set in the future), the period runs to the
  anchor and is a part of the whole cycle that ends there: licensed lines for it are prorated by
  seconds, `amount x part / whole`, rounded half-up once (ours; Stripe prorates by seconds too).
- Licensed lines bill in advance for the period that starts; metered lines bill in arrears for
  the period that ended, from the meter's aggregate over `[start, end)` (negatives bill 0, then
  `transform_quantity`, then the price; `engine.pricing`). A trial period bills no usage and its
  licensed lines are 0 (ours: usage during a trial is free, as the trial is).
- A period end of a subscription set to cancel at period end ends it: usage bills in arrears,
  nothing bills in advance.
May import: the standard library and engine values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from meterline.engine.catalog import PriceSpec
from meterline.engine.periods import boundary, period_containing
from meterline.engine.pricing import billed_quantity, exact_amount, line_amount


@dataclass(frozen=True)
class Item:
    id: str
    price: str
    product: str
    name: str  # the product's name, for line descriptions
    spec: PriceSpec
    quantity: int | None  # None for metered items
    meter: str | None  # the meter of a metered price

    @property
    def metered(self) -> bool:
        return self.spec.recurring is not None and self.spec.recurring.usage_type == "metered"


@dataclass(frozen=True)
class LineDraft:
    item: str
    price: str
    product: str
    description: str
    quantity: Decimal
    amount: int
    start: int
    end: int
    metered: bool
    proration: bool = False


@dataclass(frozen=True)
class Cycle:
    anchor: int
    interval: str
    count: int
    period_start: int
    period_end: int
    trial_end: int | None = None
    cancel_at_period_end: bool = False


@dataclass(frozen=True)
class Renewal:
    usage: tuple[int, int] | None  # the ended period whose usage bills; None after a trial
    next: tuple[int, int] | None  # the period that starts; None when the subscription ends
    whole: tuple[int, int] | None  # the whole cycle `next` is a part of (for proration)
    trial_ended: bool


def _period_from(anchor: int, interval: str, count: int, at: int) -> tuple[int, int, int, int]:
    """(start, end, whole_start, whole_end) of the period that starts at `at`."""
    if at < anchor:
        return at, anchor, boundary(anchor, interval, count, -1), anchor
    _, s, e = period_containing(anchor, interval, count, at)
    return at, e, s, e


def first_period(
    now: int, anchor: int, interval: str, count: int, trial_end: int | None
) -> tuple[int, int, int, int]:
    """(start, end, whole_start, whole_end) of a new subscription's first period: the trial if
    there is one, else the period from now (to the anchor when the anchor lies ahead)."""
    if trial_end is not None and trial_end > now:
        return now, trial_end, now, trial_end
    return _period_from(anchor, interval, count, now)


def renew(c: Cycle) -> Renewal:
    """What the end of the current period does."""
    trial = c.trial_end is not None and c.period_end == c.trial_end
    usage = None if trial else (c.period_start, c.period_end)
    if c.cancel_at_period_end:
        return Renewal(usage, None, None, trial)
    s, e, ws, we = _period_from(c.anchor, c.interval, c.count, c.period_end)
    return Renewal(usage, (s, e), (ws, we), trial)


def prorated(exact: Decimal, part: int, whole: int) -> int:
    """`exact x part / whole` minor units, rounded half-up once."""
    if whole <= 0 or part >= whole:
        return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    value = exact * Decimal(part) / Decimal(whole)
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _qty_text(q: Decimal) -> str:
    return format(q.normalize(), "f") if q != q.to_integral_value() else str(int(q))


def licensed_lines(
    items: Sequence[Item],
    start: int,
    end: int,
    whole: tuple[int, int] | None = None,
    *,
    trial: bool = False,
) -> list[LineDraft]:
    """Lines billing the licensed items in advance for [start, end), prorated when the period
    is a part of a whole cycle, 0 during a trial."""
    out = []
    ws, we = whole or (start, end)
    part = (end - start) < (we - ws)
    for it in items:
        if it.metered:
            continue
        q = Decimal(it.quantity or 0)
        if trial:
            amount, text = 0, f"Trial period for {it.name}"
        else:
            exact = exact_amount(it.spec, q)
            amount = prorated(exact, end - start, we - ws) if part else line_amount(it.spec, q)
            text = f"{_qty_text(q)} × {it.name}"
            if part:
                text = f"Remaining time on {text}"
        out.append(LineDraft(it.id, it.price, it.product, text, q, amount, start, end, False, part))
    return out


def metered_lines(
    items: Sequence[Item], usage: Mapping[str, Decimal], start: int, end: int
) -> list[LineDraft]:
    """Lines billing the metered items in arrears: each meter's aggregate over [start, end)."""
    out = []
    for it in items:
        if not it.metered:
            continue
        r = it.spec
        q = billed_quantity(
            usage.get(it.meter or "", Decimal(0)), r.transform_divide_by, r.transform_round
        )
        out.append(
            LineDraft(
                it.id,
                it.price,
                it.product,
                f"{_qty_text(q)} × {it.name} (usage)",
                q,
                line_amount(r, q),
                start,
                end,
                True,
            )
        )
    return out


__all__ = [
    "Cycle",
    "Item",
    "LineDraft",
    "Renewal",
    "first_period",
    "licensed_lines",
    "metered_lines",
    "prorated",
    "renew",
]
