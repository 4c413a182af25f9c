"""Random billing histories through the server, on SQLite and PostgreSQL.

Each example is a customer on its own test clock with a monthly metered subscription and a
random sequence of steps: grants (random amounts, priorities, categories, expiries), usage,
clock advances across period ends and finalizations, invoice voids, grant expiries and voids.
After every step, through the API only: no grant's balance is below 0; each grant's ledger sums
to its balance in the summary; the scope summary is the sum of the grants'; an ended grant holds
0; and every invoice's subtotal minus its credits is its amount due, each line's credits being
exactly the ledger's `credits_applied` entries naming it, minus nothing (voids keep them shown).
"""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdk_helpers import advance

HOUR, DAY = 3600, 86_400
T0 = 1_767_225_600  # 2026-01-01 00:00 UTC


def d(obj):
    return obj._to_dict_recursive(for_json=True)


@pytest.fixture(scope="module")
def acct(server):
    client = server.client(server.new_key(new_account=True))
    meter = client.v1.billing.meters.create(
        {
            "display_name": "tokens",
            "event_name": f"tok_{uuid.uuid4().hex[:8]}",
            "default_aggregation": {"formula": "sum"},
        }
    )
    price = client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount": 3,
            "product_data": {"name": "Tokens"},
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )
    return client, meter, price.id


step = st.one_of(
    st.tuples(
        st.just("grant"),
        st.integers(1, 2_000),
        st.integers(0, 3),  # priority / 25
        st.booleans(),  # promotional
        st.one_of(st.none(), st.integers(1, 70)),  # expires after n days
        st.integers(0, 20),  # effective after n days
    ),
    st.tuples(st.just("usage"), st.integers(-50, 1_500)),
    st.tuples(st.just("advance"), st.integers(1, 40 * 24)),  # hours
    st.tuples(st.just("void_invoice"), st.integers(0, 10)),
    st.tuples(st.just("end_grant"), st.integers(0, 10), st.booleans()),
)


def _check(client, cus, grants, now):
    txns = [
        d(t)
        for t in client.v1.billing.credit_balance_transactions.list(
            {"customer": cus, "limit": 100}
        ).auto_paging_iter()
    ]
    per_grant: dict[str, int] = {}
    applied: dict[tuple[str, str], int] = {}
    for t in txns:
        side = t["credit"] or t["debit"]
        sign = 1 if t["type"] == "credit" else -1
        per_grant[t["credit_grant"]] = (
            per_grant.get(t["credit_grant"], 0) + sign * side["amount"]["monetary"]["value"]
        )
        if side["type"] == "credits_applied":
            ref = side["credits_applied"]
            key = (ref["invoice"], ref["invoice_line_item"])
            applied[key] = applied.get(key, 0) + side["amount"]["monetary"]["value"]
    total = 0
    for g in grants:
        s = d(
            client.v1.billing.credit_balance_summary.retrieve(
                {"customer": cus, "filter": {"type": "credit_grant", "credit_grant": g}}
            )
        )
        ledger = s["balances"][0]["ledger_balance"]["monetary"]["value"]
        assert ledger == per_grant.get(g, 0) >= 0
        row = client.v1.billing.credit_grants.retrieve(g)
        if row.voided_at is not None or (row.expires_at is not None and row.expires_at <= now):
            assert ledger == 0, (g, ledger)
        total += ledger
    if grants:
        scope = d(
            client.v1.billing.credit_balance_summary.retrieve(
                {
                    "customer": cus,
                    "filter": {
                        "type": "applicability_scope",
                        "applicability_scope": {"price_type": "metered"},
                    },
                }
            )
        )
        assert scope["balances"][0]["ledger_balance"]["monetary"]["value"] == total
        assert 0 <= scope["balances"][0]["available_balance"]["monetary"]["value"] <= total
    invoices = [
        d(i) for i in client.v1.invoices.list({"customer": cus, "limit": 100}).auto_paging_iter()
    ]
    for inv in invoices:
        credits = sum(c["amount"] for c in inv["total_pretax_credit_amounts"])
        assert inv["subtotal"] - credits == inv["amount_due"] >= 0
        for ln in inv["lines"]["data"]:
            shown = sum(c["amount"] for c in ln["pretax_credit_amounts"])
            assert shown == applied.get((inv["id"], ln["id"]), 0) <= ln["amount"]
    return invoices


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    first=st.tuples(
        st.just("grant"), st.integers(1, 2_000), st.just(1), st.booleans(), st.none(), st.just(0)
    ),
    steps=st.lists(step, min_size=1, max_size=12),
)
def test_random_histories_keep_every_invariant(acct, first, steps):
    client, meter, price = acct
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": T0})
    cus = client.v1.customers.create({"test_clock": clock.id}).id
    client.v1.subscriptions.create({"customer": cus, "items": [{"price": price}]})
    now, grants, invoices = T0, [], []
    # Every history has a grant and usage, and ends past two period ends and their drafts' hour.
    steps = [
        first,
        ("usage", 700),
        *steps,
        ("advance", 32 * 24),
        ("usage", 300),
        ("advance", 32 * 24),
    ]
    for s in steps:
        kind = s[0]
        if kind == "grant":
            _, value, prio, promo, expires, effective = s
            eff = now + effective * DAY
            p = {
                "customer": cus,
                "amount": {"type": "monetary", "monetary": {"currency": "usd", "value": value}},
                "applicability_config": {"scope": {"price_type": "metered"}},
                "priority": prio * 25,
                "category": "promotional" if promo else "paid",
                "effective_at": eff,
            }
            if expires is not None:
                p["expires_at"] = eff + expires * DAY
            grants.append(client.v1.billing.credit_grants.create(p).id)
        elif kind == "usage":
            client.v1.billing.meter_events.create(
                {
                    "event_name": meter.event_name,
                    "payload": {"stripe_customer_id": cus, "value": str(s[1])},
                    "timestamp": now,
                }
            )
        elif kind == "advance":
            now += s[1] * HOUR
            advance(client, clock.id, now)
        elif kind == "void_invoice":
            open_ = [i for i in invoices if i["status"] == "open"]
            if open_:
                client.v1.invoices.void_invoice(open_[s[1] % len(open_)]["id"])
        elif kind == "end_grant" and grants:
            g = client.v1.billing.credit_grants.retrieve(grants[s[1] % len(grants)])
            live = g.voided_at is None and (g.expires_at is None or g.expires_at > now)
            if live:
                if s[2]:
                    client.v1.billing.credit_grants.void_grant(g.id)
                else:
                    client.v1.billing.credit_grants.expire(g.id)
        invoices = _check(client, cus, grants, now)
