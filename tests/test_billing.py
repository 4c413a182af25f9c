"""Subscriptions and invoices consuming credits, end to end through the official SDK.

A customer on a test clock, a monthly plan with a metered price on a meter plus a licensed price,
three grants with different priorities, expiries and categories, and usage events; the clock is
advanced across two periods (a month-end anchor, so February clamps), and the invoices, the
ledger and the balances are checked to the cent; then an invoice is voided, a grant expires half
used, and a void after that expiry gives back and expires again at once.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime

import pytest
import stripe

from openapi_check import assert_list_of, assert_matches
from sdk_helpers import advance

HOUR, DAY = 3600, 86_400


def d(obj):
    return obj._to_dict_recursive(for_json=True)


def ts(*args) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp())


@pytest.fixture(scope="module")
def acct(server):
    key = server.new_key(new_account=True)
    client = server.client(key)
    meter = client.v1.billing.meters.create(
        {
            "display_name": "tokens",
            "event_name": f"tok_{uuid.uuid4().hex[:8]}",
            "default_aggregation": {"formula": "sum"},
        }
    )
    product = client.v1.products.create({"name": "Tokens"})
    seat = client.v1.products.create({"name": "Seat"})
    plan = client.v1.plans.create(
        {
            "product": product.id,
            "currency": "usd",
            "amount": 3,
            "interval": "month",
            "usage_type": "metered",
            "meter": meter.id,
        }
    )
    licensed = client.v1.prices.create(
        {
            "product": seat.id,
            "currency": "usd",
            "unit_amount": 1000,
            "recurring": {"interval": "month", "trial_period_days": 7},
        }
    )
    return client, meter, plan.id, licensed.id


def clone(client):
    """Another client with the same key and address: its own connection pool."""
    r = client._requestor
    return stripe.StripeClient(r.api_key, base_addresses=r.base_addresses, max_network_retries=0)


def grant(client, customer, value, **kw):
    p = {
        "customer": customer,
        "amount": {"type": "monetary", "monetary": {"currency": "usd", "value": value}},
        "applicability_config": {"scope": {"price_type": "metered"}},
    }
    p.update(kw)
    return client.v1.billing.credit_grants.create(p)


def ledger(client, customer):
    out = []
    for t in client.v1.billing.credit_balance_transactions.list(
        {"customer": customer, "limit": 100}
    ).auto_paging_iter():
        t = d(t)
        side = t["credit"] or t["debit"]
        ref = side.get("credits_applied") or side.get("credits_application_invoice_voided")
        out.append(
            (
                t["credit_grant"],
                side["type"],
                side["amount"]["monetary"]["value"],
                t["effective_at"],
                ref["invoice"] if ref else None,
            )
        )
    return sorted(out, key=lambda e: (e[3], e[0], e[1]))


def balance(client, customer, grant_id=None):
    f = (
        {"type": "credit_grant", "credit_grant": grant_id}
        if grant_id
        else {"type": "applicability_scope", "applicability_scope": {"price_type": "metered"}}
    )
    s = d(client.v1.billing.credit_balance_summary.retrieve({"customer": customer, "filter": f}))
    assert_matches(s, "billing.credit_balance_summary")
    (b,) = s["balances"]
    return b["available_balance"]["monetary"]["value"], b["ledger_balance"]["monetary"]["value"]


def usage(client, meter, customer, value, at):
    client.v1.billing.meter_events.create(
        {
            "event_name": meter.event_name,
            "payload": {"stripe_customer_id": customer, "value": str(value)},
            "timestamp": at,
        }
    )


def invoice_of(client, sub_id, status=None):
    p = {"subscription": sub_id, "limit": 100}
    if status:
        p["status"] = status
    return [d(i) for i in client.v1.invoices.list(p).data]


def test_two_periods_with_three_grants_to_the_cent(acct):
    client, meter, plan, licensed = acct
    t0 = ts(2026, 1, 31, 10)
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": t0})
    cus = client.v1.customers.create(
        {"name": "Ada", "email": "ada@example.com", "test_clock": clock.id}
    )
    # Burn order: B (priority 10, expires) before A (priority 10, never expires) before C (50).
    a = grant(client, cus.id, 500, priority=10, name="A")
    b = grant(client, cus.id, 500, priority=10, category="promotional", expires_at=t0 + 45 * DAY)
    c = grant(client, cus.id, 1000, effective_at=t0 + 40 * DAY)
    sub = client.v1.subscriptions.create(
        {
            "customer": cus.id,
            "items": [{"plan": plan}, {"price": licensed, "quantity": 2}],
            "metadata": {"team": "ml"},
        }
    )
    body = d(sub)
    assert_matches(body, "subscription")
    assert sub.status == "active" and sub.test_clock == clock.id
    assert sub.billing_cycle_anchor == t0 and sub.start_date == t0
    items = body["items"]["data"]
    assert [i["quantity"] for i in items] == [None, 2]
    feb28 = ts(2026, 2, 28, 10)
    mar31 = ts(2026, 3, 31, 10)
    assert {(i["current_period_start"], i["current_period_end"]) for i in items} == {(t0, feb28)}
    # The first invoice bills the seats in advance, finalized at once; credits never pay seats.
    (first,) = invoice_of(client, sub.id)
    assert_matches(first, "invoice")
    assert first["id"] == sub.latest_invoice
    assert (first["billing_reason"], first["status"], first["subtotal"], first["amount_due"]) == (
        "subscription_create",
        "open",
        2000,
        2000,
    )
    assert [(ln["amount"], ln["quantity"], ln["period"]) for ln in first["lines"]["data"]] == [
        (2000, 2, {"start": t0, "end": feb28})
    ]
    assert first["total_pretax_credit_amounts"] == []
    # Period 1 usage: 80 tokens now, and 20 more reported during the draft's hour.
    usage(client, meter, cus.id, 50, t0 + 60)
    usage(client, meter, cus.id, 30, t0 + 120)
    advance(client, clock.id, feb28 + HOUR // 2)
    drafts = invoice_of(client, sub.id, "draft")
    assert len(drafts) == 1
    draft = drafts[0]
    assert draft["automatically_finalizes_at"] == feb28 + HOUR
    assert (draft["period_start"], draft["period_end"]) == (t0, feb28)
    assert [ln["amount"] for ln in draft["lines"]["data"]] == [240, 2000]
    # The draft reserves credits: available drops, the ledger does not.
    assert balance(client, cus.id) == (1000 - 240, 1000)
    preview = d(client.v1.invoices.create_preview({"subscription": sub.id}))
    assert preview["period_start"] == feb28 and preview["period_end"] == mar31
    usage(client, meter, cus.id, 20, feb28 - HOUR)  # late, for the closed period: it counts
    advance(client, clock.id, feb28 + 2 * HOUR)
    second = d(client.v1.invoices.retrieve(draft["id"]))
    assert_matches(second, "invoice")
    lines = second["lines"]["data"]
    assert [(ln["amount"], ln["quantity"]) for ln in lines] == [(300, 100), (2000, 2)]
    assert lines[0]["period"] == {"start": t0, "end": feb28}
    assert lines[1]["period"] == {"start": feb28, "end": mar31}
    assert (
        second["status"] == "open" and second["status_transitions"]["finalized_at"] == feb28 + HOUR
    )
    assert (second["subtotal"], second["total"], second["amount_due"]) == (2300, 2000, 2000)
    (credit,) = lines[0]["pretax_credit_amounts"]
    assert credit["amount"] == 300 and credit["type"] == "credit_balance_transaction"
    assert second["total_pretax_credit_amounts"] == [credit]
    assert lines[1]["pretax_credit_amounts"] == []
    txn = d(
        client.v1.billing.credit_balance_transactions.retrieve(credit["credit_balance_transaction"])
    )
    assert txn["credit_grant"] == b.id
    assert txn["debit"]["credits_applied"] == {
        "invoice": second["id"],
        "invoice_line_item": lines[0]["id"],
    }
    assert balance(client, cus.id, b.id) == (200, 200)
    assert balance(client, cus.id, a.id) == (500, 500)
    sub = client.v1.subscriptions.retrieve(sub.id)
    assert d(sub)["items"]["data"][0]["current_period_start"] == feb28
    assert sub.latest_invoice == second["id"]
    # Period 2: 400 tokens = 1200. C becomes effective on day 40, B expires on day 45 with 200 left.
    usage(client, meter, cus.id, 400, feb28 + HOUR + 60)
    advance(client, clock.id, mar31 + 2 * HOUR)
    third = invoice_of(client, sub.id)[0]
    assert third["created"] == mar31
    assert [ln["amount"] for ln in third["lines"]["data"]] == [1200, 2000]
    assert (third["subtotal"], third["amount_due"]) == (3200, 2000)
    assert sorted(c_["amount"] for c_ in third["total_pretax_credit_amounts"]) == [500, 700]
    assert sorted(ledger(client, cus.id)) == sorted(
        [
            (a.id, "credits_granted", 500, t0, None),
            (b.id, "credits_granted", 500, t0, None),
            (b.id, "credits_applied", 300, feb28 + HOUR, second["id"]),
            (c.id, "credits_granted", 1000, t0 + 40 * DAY, None),
            (b.id, "credits_expired", 200, t0 + 45 * DAY, None),
            (a.id, "credits_applied", 500, mar31 + HOUR, third["id"]),
            (c.id, "credits_applied", 700, mar31 + HOUR, third["id"]),
        ]
    )
    assert balance(client, cus.id) == (300, 300)
    # Void the third invoice: A and C get their credits back.
    voided = d(client.v1.invoices.void_invoice(third["id"]))
    assert_matches(voided, "invoice")
    assert voided["status"] == "void" and voided["amount_remaining"] == 0
    assert balance(client, cus.id) == (1500, 1500)
    # Void the second, after B has expired: B gets 300 back and loses it again at once.
    client.v1.invoices.void_invoice(second["id"])
    at = mar31 + 2 * HOUR
    assert sorted(ledger(client, cus.id)[-4:]) == sorted(
        [
            (a.id, "credits_application_invoice_voided", 500, at, third["id"]),
            (c.id, "credits_application_invoice_voided", 700, at, third["id"]),
            (b.id, "credits_application_invoice_voided", 300, at, second["id"]),
            (b.id, "credits_expired", 300, at, None),
        ]
    )
    assert balance(client, cus.id, b.id) == (0, 0)
    assert balance(client, cus.id) == (1500, 1500)
    # Pay the first invoice out of band.
    paid = d(client.v1.invoices.pay(first["id"], {"paid_out_of_band": True}))
    assert (paid["status"], paid["amount_paid"], paid["amount_remaining"]) == ("paid", 2000, 0)
    # Every invoice: subtotal - credits = amount due.
    for inv in invoice_of(client, sub.id):
        credits = sum(c_["amount"] for c_ in inv["total_pretax_credit_amounts"])
        assert inv["subtotal"] - credits == inv["amount_due"] == inv["total"]
        assert sum(ln["amount"] for ln in inv["lines"]["data"]) == inv["subtotal"]
    assert_list_of(d(client.v1.invoices.list({"customer": cus.id})), "invoice", "/v1/invoices")
    lines_page = d(client.v1.invoices.line_items.list(second["id"], {"limit": 1}))
    assert_list_of(lines_page, "line_item", f"/v1/invoices/{second['id']}/lines")
    assert lines_page["has_more"] is True and lines_page["data"][0]["id"] == lines[0]["id"]


def test_two_finalizations_of_one_customer_never_spend_a_credit_twice(acct, db_kind):
    """Two drafts of one customer, 300 each on a metered line, and a grant of 400: finalized at
    the same instant by two requests (two connections, so two workers as the kernel spreads
    them), the credits applied total exactly 400, 200 times over. On SQLite the same runs
    serialized by its single writer; the race is PostgreSQL's."""
    client, meter, plan, _ = acct
    reps = 200 if db_kind == "postgresql" else 20
    t0 = ts(2026, 3, 1)
    setups = []
    for _ in range(reps):
        clock = client.v1.test_helpers.test_clocks.create({"frozen_time": t0})
        cus = client.v1.customers.create({"test_clock": clock.id})
        grant(client, cus.id, 400)
        subs = [
            client.v1.subscriptions.create({"customer": cus.id, "items": [{"plan": plan}]})
            for _ in range(2)
        ]
        usage(client, meter, cus.id, 100, t0 + 10)
        setups.append((clock.id, cus.id, [s.id for s in subs]))
    end = ts(2026, 4, 1)
    drafts = []
    for clock_id, cus_id, subs in setups:
        advance(client, clock_id, end + 60)
        ids = [invoice_of(client, s, "draft")[0]["id"] for s in subs]
        drafts.append((cus_id, ids))
    clients = [clone(client) for _ in range(2)]
    barrier = threading.Barrier(2)
    results: dict[str, dict] = {}

    def finalize(which: int, iid: str) -> None:
        barrier.wait()
        results[iid] = d(clients[which].v1.invoices.finalize_invoice(iid))

    for cus_id, (i1, i2) in drafts:
        threads = [threading.Thread(target=finalize, args=(n, i)) for n, i in ((0, i1), (1, i2))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        applied = [
            sum(c["amount"] for c in results[i]["total_pretax_credit_amounts"]) for i in (i1, i2)
        ]
        assert sorted(applied) == [100, 300], (cus_id, applied)
        assert [results[i]["amount_due"] for i in (i1, i2)] == [300 - a for a in applied]
        assert balance(client, cus_id) == (0, 0)
