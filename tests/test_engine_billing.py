"""Pure tests of the billing engine: pricing, periods, and credits (burn order, application,
ledger).

Examples from the semantics note (burn order, month-end clamping, half-up rounding once per
line), then properties: for any random sequence of grants, invoices, voids, expiries and clock
advances, no grant's balance goes below 0, the ledger of every grant sums to its balance (and
an ended grant's to 0), and every invoice's subtotal minus credits equals its amount due.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterline.engine.catalog import PriceSpec, Recurring, Tier
from meterline.engine.credits import (
    Entry,
    Grant,
    Line,
    applied_entries,
    apply_credits,
    balance,
    burn_key,
    due_entries,
    give_back,
    invoice_totals,
    is_active,
)
from meterline.engine.invoices import (
    Cycle,
    Item,
    first_period,
    licensed_lines,
    metered_lines,
    prorated,
    renew,
)
from meterline.engine.periods import boundary, period_containing
from meterline.engine.pricing import billed_quantity, exact_amount, line_amount


def u(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


# --- pricing ---------------------------------------------------------------------------------


def test_billed_quantity():
    assert billed_quantity(Decimal("-5")) == 0
    assert billed_quantity(Decimal("0")) == 0
    assert billed_quantity(Decimal("12.5")) == Decimal("12.5")
    assert billed_quantity(Decimal("1001"), 1000, "up") == 2
    assert billed_quantity(Decimal("1999"), 1000, "down") == 1
    assert billed_quantity(Decimal("1000"), 1000, "up") == 1


def test_per_unit_and_decimal_amounts_round_half_up_once():
    assert line_amount(PriceSpec("usd", unit_amount=25), Decimal(4)) == 100
    spec = PriceSpec("usd", unit_amount_decimal=Decimal("0.005"))
    assert exact_amount(spec, Decimal(101)) == Decimal("0.505")
    assert line_amount(spec, Decimal(101)) == 1  # 0.505 -> 1 (half-up)
    assert line_amount(spec, Decimal(99)) == 0  # 0.495 -> 0
    assert line_amount(spec, Decimal(300)) == 2  # 1.5 -> 2


TIERS = (
    Tier(up_to=10, unit_amount=500, flat_amount=100),
    Tier(up_to=20, unit_amount=300),
    Tier(up_to=None, unit_amount=100, flat_amount=7),
)


@pytest.mark.parametrize(
    ("qty", "graduated", "volume"),
    [
        (0, 0, 0),
        (1, 600, 600),
        (10, 5100, 5100),
        (11, 5400, 3300),
        (20, 8100, 6000),
        (25, 8100 + 500 + 7, 2500 + 7),
    ],
)
def test_tiers(qty, graduated, volume):
    g = PriceSpec("usd", billing_scheme="tiered", tiers=TIERS, tiers_mode="graduated")
    v = PriceSpec("usd", billing_scheme="tiered", tiers=TIERS, tiers_mode="volume")
    assert line_amount(g, Decimal(qty)) == graduated
    assert line_amount(v, Decimal(qty)) == volume


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 10_000))
def test_graduated_is_monotone_and_additive_over_slices(a, b):
    g = PriceSpec("usd", billing_scheme="tiered", tiers=TIERS, tiers_mode="graduated")
    lo, hi = sorted((a, b))
    assert exact_amount(g, Decimal(lo)) <= exact_amount(g, Decimal(hi))
    # Within the last tier, each unit costs exactly its unit amount.
    if lo > 20:
        assert exact_amount(g, Decimal(hi)) - exact_amount(g, Decimal(lo)) == 100 * (hi - lo)


# --- periods ---------------------------------------------------------------------------------


def test_month_ends_clamp_from_the_anchor():
    anchor = u("2026-01-31T10:00")
    got = [datetime.fromtimestamp(boundary(anchor, "month", 1, n), UTC) for n in range(5)]
    assert [d.strftime("%Y-%m-%d %H:%M") for d in got] == [
        "2026-01-31 10:00",
        "2026-02-28 10:00",
        "2026-03-31 10:00",
        "2026-04-30 10:00",
        "2026-05-31 10:00",
    ]
    leap = u("2028-01-31T00:00")
    assert boundary(leap, "month", 1, 1) == u("2028-02-29T00:00")
    feb29 = u("2028-02-29T00:00")
    assert boundary(feb29, "year", 1, 1) == u("2029-02-28T00:00")
    assert boundary(feb29, "year", 1, 4) == u("2032-02-29T00:00")
    assert boundary(anchor, "week", 2, 1) == anchor + 14 * 86400
    assert boundary(anchor, "month", 3, 1) == u("2026-04-30T10:00")


@settings(max_examples=200, deadline=None)
@given(
    anchor=st.integers(u("2024-01-01T00:00"), u("2027-01-01T00:00")),
    interval=st.sampled_from(["day", "week", "month", "year"]),
    count=st.integers(1, 3),
    later=st.integers(0, 4 * 366 * 86400),
)
def test_period_containing(anchor, interval, count, later):
    t = anchor + later
    n, start, end = period_containing(anchor, interval, count, t)
    assert start <= t < end
    assert start == boundary(anchor, interval, count, n) < boundary(anchor, interval, count, n + 1)


# --- credits ---------------------------------------------------------------------------------


def grant(id, **kw):
    base = dict(currency="usd", amount=1000, effective_at=0, created=0)
    base.update(kw)
    return Grant(id, **base)


def test_burn_order_follows_the_semantics_note():
    grants = [
        grant("g_paid_late", priority=50, expires_at=900),
        grant("g_never", priority=50),
        grant("g_promo_late", priority=50, expires_at=900, category="promotional"),
        grant("g_first", priority=0),
        grant("g_soon", priority=50, expires_at=500),
        grant(
            "g_promo_late_older",
            priority=50,
            expires_at=900,
            category="promotional",
            effective_at=-5,
        ),
    ]
    order = [g.id for g in sorted(grants, key=burn_key)]
    assert order == [
        "g_first",  # priority 0 first, even without expiry
        "g_soon",  # earliest expiry
        "g_promo_late_older",  # promotional before paid; then the earliest effective_at
        "g_promo_late",
        "g_paid_late",
        "g_never",  # no expiry last
    ]


def test_application_respects_scope_currency_and_lines():
    lines = [
        Line("li_lic", "price_lic", "usd", 5000, metered=False),
        Line("li_a", "price_a", "usd", 700, metered=True),
        Line("li_b", "price_b", "usd", 900, metered=True),
        Line("li_eur", "price_e", "eur", 900, metered=True),
    ]
    grants = [
        grant("g_b_only", priority=10, prices=frozenset({"price_b"})),
        grant("g_all", priority=20, amount=1000),
        grant("g_future", priority=0, effective_at=100),
    ]
    apps = apply_credits(lines, grants, {"g_b_only": 500, "g_all": 1000, "g_future": 999}, t=50)
    assert [(a.grant, a.line, a.amount) for a in apps] == [
        ("g_all", "li_a", 700),
        ("g_b_only", "li_b", 500),
        ("g_all", "li_b", 300),
    ]
    totals = invoice_totals(lines, apps)
    assert (totals.subtotal, totals.credits, totals.amount_due) == (7500, 1500, 6000)
    assert totals.per_line == {"li_lic": 0, "li_a": 700, "li_b": 800, "li_eur": 0}


def test_expiry_half_used_and_void_give_back():
    g = grant("g", amount=1000, effective_at=10, expires_at=100)
    ledger: list[Entry] = []
    ledger += due_entries(g, ledger, 5)
    assert ledger == []
    ledger += due_entries(g, ledger, 10)
    assert balance(ledger) == 1000
    apps = apply_credits([Line("li", "p", "usd", 500, True)], [g], {"g": balance(ledger)}, 50)
    ledger += applied_entries(apps, "in_1", 50)
    assert balance(ledger) == 500
    ledger += due_entries(g, ledger, 100)
    assert [(e.type, e.amount, e.effective_at) for e in ledger][-1] == ("credits_expired", 500, 100)
    assert balance(ledger) == 0
    # Voiding the invoice after the expiry gives 500 back, then expires it at once.
    ledger += give_back(ledger, "in_1", 120)
    assert balance(ledger) == 500
    ledger += due_entries(g, ledger, 120)
    assert ledger[-1].type == "credits_expired" and ledger[-1].effective_at == 120
    assert balance(ledger) == 0
    assert not is_active(g, 100) and is_active(g, 99)


# --- the property over random histories -------------------------------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("grant"),
            st.integers(1, 5000),  # amount
            st.integers(0, 100),  # priority
            st.integers(0, 300),  # effective in
            st.one_of(st.none(), st.integers(1, 900)),  # expires after effective
            st.sampled_from(["paid", "promotional"]),
            st.booleans(),  # scoped to price_a only
        ),
        st.tuples(
            st.just("invoice"),
            st.lists(
                st.tuples(
                    st.sampled_from(["price_a", "price_b", "price_lic"]),
                    st.integers(0, 4000),
                    st.sampled_from(["usd", "usd", "eur"]),
                ),
                min_size=1,
                max_size=4,
            ),
        ),
        st.tuples(st.just("void_invoice"), st.integers(0, 20)),
        st.tuples(st.just("void_grant"), st.integers(0, 20)),
        st.tuples(st.just("advance"), st.integers(1, 400)),
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_random_histories_keep_every_invariant(history):
    t = 1000
    grants: dict[str, Grant] = {}
    ledger: list[Entry] = []
    invoices: list[str] = []
    voided: set[str] = set()

    def settle():
        for g in grants.values():
            ledger.extend(due_entries(g, [e for e in ledger if e.grant == g.id], t))

    for op in history:
        kind = op[0]
        if kind == "grant":
            _, amount, priority, eff_in, exp_after, category, scoped = op
            gid = f"g{len(grants)}"
            eff = t + eff_in
            grants[gid] = Grant(
                gid,
                "usd",
                amount,
                eff,
                t,
                category,
                priority,
                None if exp_after is None else eff + exp_after,
                None,
                frozenset({"price_a"}) if scoped else None,
            )
        elif kind == "invoice":
            settle()
            iid = f"in{len(invoices)}"
            lines = [
                Line(f"{iid}_l{i}", price, cur, amount, price != "price_lic")
                for i, (price, amount, cur) in enumerate(op[1])
            ]
            balances = {g: balance(ledger, g) for g in grants}
            apps = apply_credits(lines, grants.values(), balances, t)
            totals = invoice_totals(lines, apps)
            assert totals.subtotal - totals.credits == totals.amount_due >= 0
            for line in lines:
                assert 0 <= totals.per_line[line.id] <= line.amount
                if not line.metered or line.currency != "usd":
                    assert totals.per_line[line.id] == 0
            ledger.extend(applied_entries(apps, iid, t))
            invoices.append(iid)
        elif kind == "void_invoice" and invoices:
            iid = invoices[op[1] % len(invoices)]
            if iid not in voided:
                voided.add(iid)
                ledger.extend(give_back(ledger, iid, t))
        elif kind == "void_grant" and grants:
            gid = sorted(grants)[op[1] % len(grants)]
            g = grants[gid]
            if g.voided_at is None:
                grants[gid] = Grant(**{**g.__dict__, "voided_at": t})
        elif kind == "advance":
            t += op[1]
        settle()
        for gid, g in grants.items():
            b = balance(ledger, gid)
            assert b >= 0, (gid, b)
            if not is_active(g, t) and g.ended_at() is not None and g.ended_at() <= t:
                assert b == 0
            # applied never exceeds what was granted and given back
            applied = sum(
                e.amount for e in ledger if e.grant == gid and e.type == "credits_applied"
            )
            given = sum(
                e.amount
                for e in ledger
                if e.grant == gid
                and e.type in ("credits_granted", "credits_application_invoice_voided")
            )
            assert applied <= given
        assert sum(balance(ledger, g) for g in grants) == balance(ledger)


# --- subscription cycles and invoice lines (engine.invoices) -----------------------------------


def _item(iid, spec, quantity=None, meter=None, name="API"):
    return Item(iid, f"price_{iid}", "prod_1", name, spec, quantity, meter)


LICENSED = PriceSpec("usd", unit_amount=1000, recurring=Recurring("month"))
METERED = PriceSpec(
    "usd",
    unit_amount_decimal=Decimal("0.5"),
    transform_divide_by=10,
    transform_round="up",
    recurring=Recurring("month", usage_type="metered", meter="mtr_1"),
)


def test_first_period_from_now_a_future_anchor_or_a_trial():
    now = u("2026-01-10T12:00:00")
    assert first_period(now, now, "month", 1, None) == (
        now,
        u("2026-02-10T12:00:00"),
        now,
        u("2026-02-10T12:00:00"),
    )
    anchor = u("2026-02-01T00:00:00")
    # Up to the anchor: a part of the month that ends there.
    assert first_period(now, anchor, "month", 1, None) == (
        now,
        anchor,
        u("2026-01-01T00:00:00"),
        anchor,
    )
    trial_end = now + 7 * 86_400
    assert first_period(now, trial_end, "month", 1, trial_end) == (now, trial_end, now, trial_end)


def test_renewals_walk_the_clamped_month_ends_and_end_on_cancel():
    a = u("2026-01-31T10:00:00")
    c = Cycle(a, "month", 1, a, u("2026-02-28T10:00:00"))
    r = renew(c)
    assert r.usage == (a, u("2026-02-28T10:00:00"))
    assert r.next == (u("2026-02-28T10:00:00"), u("2026-03-31T10:00:00")) == r.whole
    assert not r.trial_ended
    # A trial ending before the anchor: the trial bills no usage, the next period runs to the
    # anchor as a part of the whole month.
    t_end = u("2026-01-20T00:00:00")
    anchor = u("2026-02-01T00:00:00")
    r = renew(Cycle(anchor, "month", 1, u("2026-01-13T00:00:00"), t_end, trial_end=t_end))
    assert r.usage is None and r.trial_ended
    assert r.next == (t_end, anchor) and r.whole == (u("2026-01-01T00:00:00"), anchor)
    r = renew(Cycle(a, "month", 1, a, u("2026-02-28T10:00:00"), cancel_at_period_end=True))
    assert r.next is None and r.usage == (a, u("2026-02-28T10:00:00"))


def test_lines_in_advance_in_arrears_prorated_and_in_trial():
    items = [_item("lic", LICENSED, quantity=3), _item("met", METERED, meter="mtr_1")]
    lic = licensed_lines(items, 0, 100)
    assert [(x.item, x.amount, x.quantity, x.proration) for x in lic] == [("lic", 3000, 3, False)]
    # 10 of 31 days: 3000 x 10/31 = 967.74 -> 968 (half-up once).
    part = licensed_lines(items, 21 * 86_400, 31 * 86_400, (0, 31 * 86_400))
    assert part[0].amount == 968 and part[0].proration
    assert part[0].description.startswith("Remaining time on 3 × API")
    assert licensed_lines(items, 0, 100, trial=True)[0].amount == 0
    # 1,234 tokens / 10, rounded up = 124 units x 0.5 = 62.
    met = metered_lines(items, {"mtr_1": Decimal(1234)}, 0, 100)
    assert [(x.item, x.quantity, x.amount, x.metered) for x in met] == [
        ("met", Decimal(124), 62, True)
    ]
    # Negative or missing usage bills 0.
    assert metered_lines(items, {"mtr_1": Decimal(-5)}, 0, 100)[0].amount == 0
    assert metered_lines(items, {}, 0, 100)[0].amount == 0


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 4_000_000_000),
    st.sampled_from(["day", "week", "month", "year"]),
    st.integers(1, 3),
    st.integers(1, 40),
)
def test_renewals_tile_time_without_gaps_or_overlaps(anchor, interval, count, n):
    start, end, _, _ = first_period(anchor, anchor, interval, count, None)
    c = Cycle(anchor, interval, count, start, end)
    for _ in range(n):
        r = renew(c)
        assert r.usage == (c.period_start, c.period_end)
        assert r.next is not None and r.next[0] == c.period_end < r.next[1]
        c = Cycle(anchor, interval, count, *r.next)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**9), st.integers(1, 10**7), st.integers(0, 10**7))
def test_proration_is_bounded_by_the_whole(amount, whole, part):
    part = min(part, whole)
    got = prorated(Decimal(amount), part, whole)
    assert 0 <= got <= amount
    assert abs(Decimal(got) - Decimal(amount) * part / whole) <= Decimal("0.5")
