"""Billing credits: burn order, application to invoice lines, and the ledger's rules.

Values: `Grant` (a credit grant as the rules see it), `Line` (an invoice line as credits see it),
`Application` (credits of one grant applied to one line), `Entry` (a credit balance
transaction). Functions: `burn_key`, `is_active`, `eligible`, `apply_credits`, `balance`,
`due_entries` (what the ledger must gain by a time), `give_back` (an invoice void) and
`invoice_totals`.

Always true here:
- Burn order (semantics "Credits"): priority ascending, then the earliest `expires_at` (none
  last), then promotional before paid, then the earliest `effective_at`, then `created`, then id.
- Credits pay only for metered lines (with a meter) in the grant's currency and scope; lines are
  taken in invoice order, grants in burn order, and an application never exceeds the line's
  remaining amount or the grant's remaining balance: no grant's balance goes below 0.
- A grant's balance at any time is granted + reinstated - applied - expired - voided over its
  entries. `due_entries` writes `credits_granted` once at `effective_at`, and once a grant has
  ended (expired or voided) any remaining balance is debited at the end (or at the give-back
  that raised it again), so an ended grant's balance is 0.
- `invoice_totals`: subtotal - credits = amount due, for every invoice, to the cent.
May import: the standard library only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

CREDIT_TYPES = ("credits_granted", "credits_application_invoice_voided")
DEBIT_TYPES = ("credits_applied", "credits_expired", "credits_voided")


@dataclass(frozen=True)
class Grant:
    id: str
    currency: str
    amount: int
    effective_at: int
    created: int
    category: str = "paid"  # or "promotional"
    priority: int = 50
    expires_at: int | None = None
    voided_at: int | None = None
    prices: frozenset[str] | None = None  # None: scope price_type=metered

    def ended_at(self) -> int | None:
        """When the grant stops counting: its void or its expiry, whichever comes first."""
        ends = [t for t in (self.expires_at, self.voided_at) if t is not None]
        return min(ends) if ends else None


@dataclass(frozen=True)
class Line:
    id: str
    price: str
    currency: str
    amount: int  # pre-tax, after discounts, in minor units
    metered: bool  # a metered price with a meter attached


@dataclass(frozen=True)
class Application:
    grant: str
    line: str
    amount: int


@dataclass(frozen=True)
class Entry:
    grant: str
    type: str
    amount: int  # positive; the type says credit or debit
    effective_at: int
    invoice: str | None = None
    line: str | None = None

    @property
    def signed(self) -> int:
        return self.amount if self.type in CREDIT_TYPES else -self.amount


def burn_key(g: Grant) -> tuple:
    return (
        g.priority,
        g.expires_at is None,
        g.expires_at or 0,
        g.category != "promotional",
        g.effective_at,
        g.created,
        g.id,
    )


def is_active(g: Grant, t: int) -> bool:
    """Whether the grant counts at time t: effective, not expired, not voided."""
    end = g.ended_at()
    return g.effective_at <= t and (end is None or t < end)


def eligible(g: Grant, line: Line) -> bool:
    return (
        line.metered
        and line.currency == g.currency
        and (g.prices is None or line.price in g.prices)
    )


def apply_credits(
    lines: Sequence[Line], grants: Iterable[Grant], balances: Mapping[str, int], t: int
) -> list[Application]:
    """The applications of finalizing an invoice with these lines at time t, given each grant's
    balance before it."""
    remaining = {g: max(0, b) for g, b in balances.items()}
    ordered = sorted((g for g in grants if is_active(g, t)), key=burn_key)
    out: list[Application] = []
    for line in lines:
        due = line.amount
        for g in ordered:
            if due <= 0:
                break
            if not eligible(g, line):
                continue
            take = min(due, remaining.get(g.id, 0))
            if take > 0:
                out.append(Application(g.id, line.id, take))
                remaining[g.id] -= take
                due -= take
    return out


def balance(entries: Iterable[Entry], grant: str | None = None, at: int | None = None) -> int:
    """The sum of the entries (of one grant, up to a time, when given)."""
    return sum(
        e.signed
        for e in entries
        if (grant is None or e.grant == grant) and (at is None or e.effective_at <= at)
    )


def due_entries(g: Grant, entries: Sequence[Entry], t: int) -> list[Entry]:
    """The entries the grant's ledger must gain to be complete at time t: its grant once it is
    effective, and the debit of what remains once it has ended."""
    out: list[Entry] = []
    if g.effective_at <= t and not any(e.type == "credits_granted" for e in entries):
        out.append(Entry(g.id, "credits_granted", g.amount, g.effective_at))
    end = g.ended_at()
    if end is not None and end <= t:
        remaining = balance([*entries, *out])
        if remaining > 0:
            voided = g.voided_at is not None and g.voided_at == end
            last = max((e.effective_at for e in [*entries, *out]), default=end)
            out.append(
                Entry(
                    g.id,
                    "credits_voided" if voided else "credits_expired",
                    remaining,
                    max(end, last),
                )
            )
    return out


def applied_entries(applications: Iterable[Application], invoice: str, t: int) -> list[Entry]:
    return [
        Entry(a.grant, "credits_applied", a.amount, t, invoice=invoice, line=a.line)
        for a in applications
        if a.amount > 0
    ]


def give_back(entries: Iterable[Entry], invoice: str, t: int) -> list[Entry]:
    """The reinstatements of voiding an invoice: one per application of it, at time t."""
    return [
        Entry(
            e.grant, "credits_application_invoice_voided", e.amount, t, invoice=invoice, line=e.line
        )
        for e in entries
        if e.type == "credits_applied" and e.invoice == invoice
    ]


@dataclass(frozen=True)
class Totals:
    subtotal: int
    credits: int
    amount_due: int
    per_line: dict[str, int]  # credits applied to each line


def invoice_totals(lines: Sequence[Line], applications: Iterable[Application]) -> Totals:
    per_line: dict[str, int] = {line.id: 0 for line in lines}
    for a in applications:
        per_line[a.line] += a.amount
    subtotal = sum(line.amount for line in lines)
    credits = sum(per_line.values())
    return Totals(subtotal, credits, subtotal - credits, per_line)


__all__ = [
    "Application",
    "Entry",
    "Grant",
    "Line",
    "Totals",
    "applied_entries",
    "apply_credits",
    "balance",
    "burn_key",
    "due_entries",
    "eligible",
    "give_back",
    "invoice_totals",
    "is_active",
]
