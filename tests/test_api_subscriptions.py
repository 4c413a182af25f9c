"""Subscriptions through the official SDK: create with every supported setting, trials, a future
billing cycle anchor (prorated first period), update, cancel at period end and now, lists and
their filters, every refusal with its param (and nothing written), and account isolation."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
import stripe

from openapi_check import assert_error, assert_list_of, assert_matches
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
            "display_name": "calls",
            "event_name": f"call_{uuid.uuid4().hex[:8]}",
            "default_aggregation": {"formula": "sum"},
        }
    )
    prod = client.v1.products.create({"name": "Calls"})

    def price(**kw):
        p = {"product": prod.id, "currency": "usd", "unit_amount": 3100}
        p.update(kw)
        return client.v1.prices.create(p).id

    ids = {
        "monthly": price(recurring={"interval": "month", "trial_period_days": 14}),
        "metered": price(
            unit_amount=2,
            recurring={"interval": "month", "usage_type": "metered", "meter": meter.id},
        ),
        "yearly": price(recurring={"interval": "year"}),
        "eur": price(currency="eur", recurring={"interval": "month"}),
        "once": price(),
        "inactive": price(recurring={"interval": "month"}, active=False),
    }
    return server, client, meter, ids


def on_clock(client, t):
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": t})
    return clock, client.v1.customers.create({"test_clock": clock.id})


def refused(fn, status, param, code=None):
    with pytest.raises(stripe.StripeError) as ei:
        fn()
    err = ei.value
    assert err.http_status == status, err
    body = err.json_body
    assert_error(body, "invalid_request_error", code, param)
    return body["error"]


def test_create_retrieve_list_and_the_first_invoice(acct):
    _, client, _, ids = acct
    t0 = ts(2026, 5, 10, 8)
    clock, cus = on_clock(client, t0)
    sub = client.v1.subscriptions.create(
        {
            "customer": cus.id,
            "items": [
                {"price": ids["monthly"], "quantity": 3, "metadata": {"seat": "x"}},
                {"price": ids["metered"]},
            ],
            "collection_method": "send_invoice",
            "days_until_due": 10,
            "description": "Pro",
            "metadata": {"k": "v"},
        }
    )
    body = d(sub)
    assert_matches(body, "subscription")
    assert sub.id.startswith("sub_") and body["items"]["data"][0]["id"].startswith("si_")
    assert (sub.status, sub.currency, sub.collection_method, sub.days_until_due) == (
        "active",
        "usd",
        "send_invoice",
        10,
    )
    assert body["items"]["data"][0]["metadata"] == {"seat": "x"}
    assert body["items"]["data"][1]["quantity"] is None
    assert body["items"]["data"][0]["current_period_end"] == ts(2026, 6, 10, 8)
    assert d(client.v1.subscriptions.retrieve(sub.id)) == body
    inv = d(client.v1.invoices.retrieve(sub.latest_invoice))
    assert_matches(inv, "invoice")
    assert inv["number"] and inv["status"] == "open" and inv["amount_due"] == 9300
    assert inv["due_date"] == t0 + 10 * DAY
    assert inv["parent"]["subscription_details"]["subscription"] == sub.id
    # Expanding latest_invoice gives the invoice itself.
    exp = client.v1.subscriptions.retrieve(sub.id, {"expand": ["latest_invoice"]})
    assert d(exp)["latest_invoice"]["id"] == inv["id"]
    exp = d(client.v1.subscriptions.retrieve(sub.id, {"expand": ["customer", "test_clock"]}))
    assert exp["customer"]["id"] == cus.id and exp["test_clock"]["id"] == clock.id
    assert_matches(exp, "subscription")
    exp = d(client.v1.invoices.retrieve(inv["id"], {"expand": ["customer"]}))
    assert exp["customer"]["id"] == cus.id
    exp = d(client.v1.customers.retrieve(cus.id, {"expand": ["test_clock"]}))
    assert exp["test_clock"]["frozen_time"] == t0
    items = d(client.v1.subscription_items.list({"subscription": sub.id}))
    assert_list_of(items, "subscription_item", "/v1/subscription_items")
    assert [i["id"] for i in items["data"]] == [i["id"] for i in body["items"]["data"]]
    one = d(client.v1.subscription_items.retrieve(items["data"][1]["id"]))
    assert_matches(one, "subscription_item")
    listed = d(client.v1.subscriptions.list({"customer": cus.id}))
    assert_list_of(listed, "subscription", "/v1/subscriptions")
    assert [s["id"] for s in listed["data"]] == [sub.id]
    assert [s.id for s in client.v1.subscriptions.list({"test_clock": clock.id}).data] == [sub.id]
    assert [
        s.id
        for s in client.v1.subscriptions.list({"price": ids["metered"], "customer": cus.id}).data
    ] == [sub.id]
    assert client.v1.subscriptions.list({"customer": cus.id, "status": "trialing"}).data == []
    # created: a value or a range, on subscriptions and on invoices
    t = sub.created
    by = client.v1.subscriptions.list
    assert [s.id for s in by({"customer": cus.id, "created": t}).data] == [sub.id]
    assert by({"customer": cus.id, "created": {"gt": t}}).data == []
    assert [s.id for s in by({"customer": cus.id, "created": {"gte": t, "lt": t + 1}}).data] == [
        sub.id
    ]
    first = client.v1.invoices.list({"subscription": sub.id, "created": {"lte": t}}).data
    assert [i.id for i in first] == [sub.latest_invoice]
    assert client.v1.invoices.list({"subscription": sub.id, "created": {"lt": t}}).data == []


def test_trials_and_a_future_anchor(acct):
    _, client, _, ids = acct
    t0 = ts(2026, 1, 10, 12)
    clock, cus = on_clock(client, t0)
    # trial_from_plan takes the price's 14 days; the trial invoice is 0 and paid.
    sub = client.v1.subscriptions.create(
        {"customer": cus.id, "items": [{"price": ids["monthly"]}], "trial_from_plan": True}
    )
    assert (sub.status, sub.trial_start, sub.trial_end) == ("trialing", t0, t0 + 14 * DAY)
    assert sub.billing_cycle_anchor == t0 + 14 * DAY
    first = d(client.v1.invoices.retrieve(sub.latest_invoice))
    assert (first["amount_due"], first["status"]) == (0, "paid")
    assert first["lines"]["data"][0]["description"].startswith("Trial period")
    # trial_period_days with an anchor on the 1st: the trial, then a prorated part to the anchor.
    anchor = ts(2026, 2, 1)
    sub2 = client.v1.subscriptions.create(
        {
            "customer": cus.id,
            "items": [{"price": ids["monthly"]}],
            "trial_period_days": 5,
            "billing_cycle_anchor": anchor,
        }
    )
    assert sub2.trial_end == t0 + 5 * DAY and sub2.billing_cycle_anchor == anchor
    advance(client, clock.id, t0 + 5 * DAY + 2 * HOUR)
    sub2 = client.v1.subscriptions.retrieve(sub2.id)
    assert sub2.status == "active"
    item = d(sub2)["items"]["data"][0]
    assert (item["current_period_start"], item["current_period_end"]) == (t0 + 5 * DAY, anchor)
    inv = d(client.v1.invoices.retrieve(sub2.latest_invoice))
    (line,) = inv["lines"]["data"]
    part, whole = anchor - (t0 + 5 * DAY), anchor - ts(2026, 1, 1)
    # 3100 x part / whole, rounded half-up once.
    expected = (3100 * part * 2 + whole) // (2 * whole)
    assert line["amount"] == expected and line["parent"]["subscription_item_details"]["proration"]
    assert inv["status"] == "paid" if expected == 0 else inv["status"] == "open"
    # Without a trial, an anchor ahead also prorates the first invoice.
    sub3 = client.v1.subscriptions.create(
        {
            "customer": cus.id,
            "items": [{"price": ids["monthly"], "quantity": 2}],
            "billing_cycle_anchor": anchor,
        }
    )
    now = t0 + 5 * DAY + 2 * HOUR
    inv3 = d(client.v1.invoices.retrieve(sub3.latest_invoice))
    part3 = anchor - now
    assert inv3["lines"]["data"][0]["amount"] == (6200 * part3 * 2 + whole) // (2 * whole)


def test_cancel_at_period_end_and_cancel_now(acct):
    _, client, meter, ids = acct
    t0 = ts(2026, 2, 1)
    clock, cus = on_clock(client, t0)
    sub = client.v1.subscriptions.create(
        {"customer": cus.id, "items": [{"price": ids["metered"]}, {"price": ids["monthly"]}]}
    )
    upd = client.v1.subscriptions.update(
        sub.id, {"cancel_at_period_end": True, "metadata": {"why": "budget"}}
    )
    assert upd.cancel_at_period_end and upd.cancel_at == ts(2026, 3, 1)
    assert upd.canceled_at == t0 and d(upd)["metadata"] == {"why": "budget"}
    assert d(upd)["cancellation_details"]["reason"] == "cancellation_requested"
    client.v1.billing.meter_events.create(
        {
            "event_name": meter.event_name,
            "payload": {"stripe_customer_id": cus.id, "value": "50"},
            "timestamp": t0 + 60,
        }
    )
    advance(client, clock.id, ts(2026, 3, 1, 2))
    ended = client.v1.subscriptions.retrieve(sub.id)
    assert (ended.status, ended.ended_at) == ("canceled", ts(2026, 3, 1))
    last = d(client.v1.invoices.retrieve(ended.latest_invoice))
    # The final invoice bills the usage in arrears and nothing in advance.
    assert [(ln["amount"], ln["quantity"]) for ln in last["lines"]["data"]] == [(100, 50)]
    assert last["status"] == "open"
    # The default list leaves canceled subscriptions out; status=all and ended show them.
    assert client.v1.subscriptions.list({"customer": cus.id}).data == []
    assert [
        s.id for s in client.v1.subscriptions.list({"customer": cus.id, "status": "all"}).data
    ] == [sub.id]
    assert [
        s.id for s in client.v1.subscriptions.list({"customer": cus.id, "status": "ended"}).data
    ] == [sub.id]
    refused(lambda: client.v1.subscriptions.cancel(sub.id), 400, "subscription_exposed_id")
    refused(
        lambda: client.v1.subscriptions.update(sub.id, {"cancel_at_period_end": False}),
        400,
        "cancel_at_period_end",
    )
    # Cancel now with invoice_now: a final draft for the usage so far.
    sub2 = client.v1.subscriptions.create(
        {"customer": cus.id, "items": [{"price": ids["metered"]}]}
    )
    client.v1.billing.meter_events.create(
        {
            "event_name": meter.event_name,
            "payload": {"stripe_customer_id": cus.id, "value": "7"},
            "timestamp": ts(2026, 3, 1, 2) + 60,
        }
    )
    advance(client, clock.id, ts(2026, 3, 1, 3))
    gone = client.v1.subscriptions.cancel(
        sub2.id, {"invoice_now": True, "cancellation_details": {"feedback": "too_expensive"}}
    )
    assert_matches(d(gone), "subscription")
    assert gone.status == "canceled" and gone.ended_at == ts(2026, 3, 1, 3)
    assert d(gone)["cancellation_details"]["feedback"] == "too_expensive"
    final = d(client.v1.invoices.retrieve(gone.latest_invoice))
    assert final["status"] == "draft" and final["billing_reason"] == "subscription_update"
    assert final["lines"]["data"][0]["amount"] == 14
    fin = d(client.v1.invoices.finalize_invoice(final["id"]))
    assert fin["status"] == "open" and fin["amount_due"] == 14
    refused(
        lambda: client.v1.invoices.finalize_invoice(final["id"]),
        400,
        "invoice",
        "invoice_not_editable",
    )


def test_refusals_name_their_param_and_write_nothing(acct, server):
    _, client, _, ids = acct
    t0 = ts(2026, 4, 1)
    clock, cus = on_clock(client, t0)

    def create(**kw):
        p = {"customer": cus.id, "items": [{"price": ids["monthly"]}]}
        p.update(kw)
        return lambda: client.v1.subscriptions.create(p)

    cases = [
        (create(customer="cus_nope"), 404, "customer"),
        (create(items=[]), 400, "items"),
        (create(items=[{"price": "price_nope"}]), 404, "items[0][price]"),
        (create(items=[{"plan": "plan_nope"}]), 404, "items[0][plan]"),
        (create(items=[{"quantity": 2}]), 400, "items[0][price]"),
        (create(items=[{"price": ids["once"]}]), 400, "items[0][price]"),
        (create(items=[{"price": ids["inactive"]}]), 400, "items[0][price]"),
        (create(items=[{"price": ids["metered"], "quantity": 2}]), 400, "items[0][quantity]"),
        (
            create(items=[{"price": ids["monthly"]}, {"price": ids["yearly"]}]),
            400,
            "items[1][price]",
        ),
        (create(items=[{"price": ids["monthly"]}, {"price": ids["eur"]}]), 400, "items[1][price]"),
        (
            create(items=[{"price": ids["monthly"]}, {"price": ids["monthly"]}]),
            400,
            "items[1][price]",
        ),
        (create(items=[{"price": ids["monthly"], "quantity": -1}]), 400, "items[0][quantity]"),
        (create(billing_cycle_anchor=t0 - 10), 400, "billing_cycle_anchor"),
        (create(billing_cycle_anchor=t0 + 90 * DAY), 400, "billing_cycle_anchor"),
        (create(trial_period_days=731), 400, "trial_period_days"),
        (create(trial_end=t0 - 1), 400, "trial_end"),
        (create(trial_from_plan=True, trial_period_days=3), 400, "trial_from_plan"),
        (create(days_until_due=3), 400, "days_until_due"),
        (create(collection_method="cash"), 400, "collection_method"),
        (create(coupon="x"), 400, "coupon"),
    ]
    for fn, status, param in cases:
        refused(fn, status, param)
    assert client.v1.subscriptions.list({"customer": cus.id, "status": "all"}).data == []
    assert client.v1.invoices.list({"customer": cus.id}).data == []
    refused(lambda: client.v1.subscriptions.retrieve("sub_nope"), 404, "subscription_exposed_id")
    refused(lambda: client.v1.invoices.retrieve("in_nope"), 404, "invoice")
    refused(lambda: client.v1.subscriptions.list({"status": "gone"}), 400, "status")
    refused(lambda: client.v1.invoices.create_preview({}), 400, "customer")
    refused(
        lambda: client.v1.invoices.create_preview({"customer": cus.id}),
        400,
        "customer",
        "invoice_upcoming_none",
    )
    # Another account sees none of this account's subscriptions or invoices.
    sub = client.v1.subscriptions.create({"customer": cus.id, "items": [{"price": ids["monthly"]}]})
    other = server.client(server.new_key(new_account=True))
    refused(lambda: other.v1.subscriptions.retrieve(sub.id), 404, "subscription_exposed_id")
    refused(lambda: other.v1.invoices.retrieve(sub.latest_invoice), 404, "invoice")
    assert other.v1.subscriptions.list().data == [] and other.v1.invoices.list().data == []
    refused(
        lambda: other.v1.subscriptions.create(
            {"customer": cus.id, "items": [{"price": ids["monthly"]}]}
        ),
        404,
        "customer",
    )
    # Pay needs paid_out_of_band; a draft cannot be paid or voided.
    refused(lambda: client.v1.invoices.pay(sub.latest_invoice), 400, "paid_out_of_band")
    client.v1.invoices.pay(sub.latest_invoice, {"paid_out_of_band": True})
    refused(
        lambda: client.v1.invoices.void_invoice(sub.latest_invoice),
        400,
        "invoice",
        "invoice_not_editable",
    )


def test_the_wall_clock_billing_job_renews_and_finalizes_once(acct, server, caplog):
    """A wall-clock subscription: `bill_due` at virtual future times (as the job in every worker
    would run then) makes the cycle's draft once, finalizes it an hour later with credits, and
    two runs racing do each step once."""
    import threading

    from meterline.services import due_work
    from meterline.store.db import Database

    _, client, meter, ids = acct
    cus = client.v1.customers.create({"name": "wall"})
    client.v1.billing.credit_grants.create(
        {
            "customer": cus.id,
            "amount": {"type": "monetary", "monetary": {"currency": "usd", "value": 50}},
            "applicability_config": {"scope": {"price_type": "metered"}},
        }
    )
    sub = client.v1.subscriptions.create({"customer": cus.id, "items": [{"price": ids["metered"]}]})
    client.v1.billing.meter_events.create(
        {"event_name": meter.event_name, "payload": {"stripe_customer_id": cus.id, "value": "40"}}
    )
    end = d(sub)["items"]["data"][0]["current_period_end"]
    db = Database(server.database_url)
    try:
        assert due_work.bill_due(db, end - 1) == 0
        runs = []
        threads = [
            threading.Thread(target=lambda: runs.append(due_work.bill_due(db, end + 10)))
            for _ in range(2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        drafts = client.v1.invoices.list({"subscription": sub.id, "status": "draft"}).data
        assert len(drafts) == 1 and drafts[0].created == end
        assert drafts[0].automatically_finalizes_at == end + 3600
        assert due_work.bill_due(db, end + 3599) == 0
        assert due_work.bill_due(db, end + 3600) == 1
        assert due_work.bill_due(db, end + 3600) == 0
    finally:
        db.dispose()
    # Every step ran in its chunk's transaction: nothing fell back to one step at a time.
    assert not [r for r in caplog.records if r.name == "meterline.jobs"], caplog.text
    inv = d(client.v1.invoices.retrieve(drafts[0].id))
    assert inv["status"] == "open" and inv["status_transitions"]["finalized_at"] == end + 3600
    assert (inv["subtotal"], inv["amount_due"]) == (80, 30)
    assert [c["amount"] for c in inv["total_pretax_credit_amounts"]] == [50]
    sub = client.v1.subscriptions.retrieve(sub.id)
    assert d(sub)["items"]["data"][0]["current_period_start"] == end
    assert sum(runs) == 1


def test_preview_shows_the_credits_it_would_apply_and_writes_nothing(acct):
    _, client, meter, ids = acct
    t0 = ts(2026, 6, 1)
    clock, cus = on_clock(client, t0)
    client.v1.billing.credit_grants.create(
        {
            "customer": cus.id,
            "amount": {"type": "monetary", "monetary": {"currency": "usd", "value": 150}},
            "applicability_config": {"scope": {"price_type": "metered"}},
        }
    )
    sub = client.v1.subscriptions.create(
        {"customer": cus.id, "items": [{"price": ids["metered"]}, {"price": ids["monthly"]}]}
    )
    client.v1.billing.meter_events.create(
        {
            "event_name": meter.event_name,
            "payload": {"stripe_customer_id": cus.id, "value": "100"},
            "timestamp": t0 + 60,
        }
    )
    before = [
        t.id for t in client.v1.billing.credit_balance_transactions.list({"customer": cus.id}).data
    ]
    for params in ({"customer": cus.id}, {"subscription": sub.id}):
        pv = d(client.v1.invoices.create_preview(params))
        assert_matches(pv, "invoice")
        assert pv["billing_reason"] == "upcoming" and pv["created"] == ts(2026, 7, 1)
        lines = pv["lines"]["data"]
        assert [(ln["amount"], ln["period"]["start"]) for ln in lines] == [
            (200, t0),
            (3100, ts(2026, 7, 1)),
        ]
        assert [c["amount"] for c in lines[0]["pretax_credit_amounts"]] == [150]
        assert (pv["subtotal"], pv["amount_due"]) == (3300, 3150)
    after = [
        t.id for t in client.v1.billing.credit_balance_transactions.list({"customer": cus.id}).data
    ]
    assert after == before
    assert (
        client.v1.invoices.list({"customer": cus.id}).data[0].billing_reason
        == "subscription_create"
    )


def test_deleting_the_customer_or_its_clock_ends_its_subscriptions(acct):
    _, client, _, ids = acct
    t0 = ts(2026, 7, 1)
    clock, cus = on_clock(client, t0)
    sub = client.v1.subscriptions.create({"customer": cus.id, "items": [{"price": ids["monthly"]}]})
    advance(client, clock.id, t0 + DAY)
    client.v1.customers.delete(cus.id)
    gone = client.v1.subscriptions.retrieve(sub.id)
    assert (gone.status, gone.ended_at) == ("canceled", t0 + DAY)
    clock2, cus2 = on_clock(client, t0)
    sub2 = client.v1.subscriptions.create(
        {"customer": cus2.id, "items": [{"price": ids["monthly"]}]}
    )
    client.v1.test_helpers.test_clocks.delete(clock2.id)
    assert client.v1.subscriptions.retrieve(sub2.id).status == "canceled"
    # Nothing renews for them any more.
    assert len(client.v1.invoices.list({"subscription": sub.id}).data) == 1


def test_metered_lines_use_transform_tiers_decimals_and_bill_negatives_as_zero(acct):
    """One meter per price, over a test clock month: graduated tiers, volume tiers, a decimal
    unit amount with transform_quantity (divide_by 1000, round up), and a negative total."""
    _, client, _, _ = acct
    t0 = ts(2026, 8, 1)
    clock, cus = on_clock(client, t0)
    prod = client.v1.products.create({"name": "Mixed"})

    def meter():
        return client.v1.billing.meters.create(
            {
                "display_name": "m",
                "event_name": f"m_{uuid.uuid4().hex[:8]}",
                "default_aggregation": {"formula": "sum"},
            }
        )

    meters = [meter() for _ in range(4)]
    tiers = [
        {"up_to": 100, "unit_amount": 10},
        {"up_to": 1000, "unit_amount_decimal": "2.5", "flat_amount": 500},
        {"up_to": "inf", "unit_amount": 1},
    ]

    def price(m, **kw):
        p = {
            "product": prod.id,
            "currency": "usd",
            "recurring": {"interval": "month", "usage_type": "metered", "meter": m.id},
        }
        p.update(kw)
        return client.v1.prices.create(p).id

    prices = [
        price(meters[0], billing_scheme="tiered", tiers_mode="graduated", tiers=tiers),
        price(meters[1], billing_scheme="tiered", tiers_mode="volume", tiers=tiers),
        price(
            meters[2],
            unit_amount_decimal="0.35",
            transform_quantity={"divide_by": 1000, "round": "up"},
        ),
        price(meters[3], unit_amount=7),
    ]
    sub = client.v1.subscriptions.create(
        {"customer": cus.id, "items": [{"price": p} for p in prices]}
    )
    for m, value in zip(meters, ["1234.5", "1234.5", "2500001", "-3"], strict=True):
        client.v1.billing.meter_events.create(
            {
                "event_name": m.event_name,
                "payload": {"stripe_customer_id": cus.id, "value": value},
                "timestamp": t0 + 60,
            }
        )
    advance(client, clock.id, ts(2026, 9, 1, 2))
    inv = d(client.v1.invoices.list({"subscription": sub.id, "limit": 1}).data[0])
    got = [(ln["quantity_decimal"], ln["amount"]) for ln in inv["lines"]["data"]]
    # graduated: 100 x 10 + 900 x 2.5 + 500 + 234.5 x 1 = 3984.5 -> 3985 (half-up once)
    # volume: 1234.5 x 1 = 1234.5 -> 1235; transform: ceil(2500.001) = 2501 x 0.35 = 875.35 -> 875
    # negative: billed as 0
    assert got == [("1234.5", 3985), ("1234.5", 1235), ("2501", 875), ("0", 0)]
    assert [ln["quantity"] for ln in inv["lines"]["data"]] == [None, None, 2501, 0]
    assert inv["subtotal"] == 3985 + 1235 + 875


def test_a_failing_billing_step_is_left_for_later_and_the_others_go_on(acct, server):
    """A subscription whose item names a price that is gone (broken here with SQL) cannot renew:
    the run logs it and leaves it due, and renews the subscriptions sharing its transaction."""
    import sqlalchemy as sa

    from meterline.services import due_work
    from meterline.store.db import Database

    _, client, _, ids = acct
    cus = client.v1.customers.create({"name": "chunk"})
    subs = [
        client.v1.subscriptions.create({"customer": cus.id, "items": [{"price": ids["monthly"]}]})
        for _ in range(3)
    ]
    end = d(subs[0])["items"]["data"][0]["current_period_end"]
    broken = subs[1]
    db = Database(server.database_url)
    try:
        with db.write() as conn:
            conn.execute(
                sa.text(
                    "UPDATE subscription_items SET price = 'price_gone' WHERE subscription = :s"
                ),
                {"s": broken.id},
            )
        ran = due_work.bill_due(
            db, max(d(s)["items"]["data"][0]["current_period_end"] for s in subs) + 5
        )
    finally:
        db.dispose()
    assert ran == 2
    assert len(client.v1.invoices.list({"subscription": broken.id}).data) == 1
    for s in subs:
        if s.id != broken.id:
            got = d(client.v1.subscriptions.retrieve(s.id))["items"]["data"][0]
            assert got["current_period_start"] >= end - 5
            assert len(client.v1.invoices.list({"subscription": s.id}).data) == 2


def test_a_run_catching_up_renews_and_finalizes_in_one_step(acct, server):
    """A run that comes after the draft's hour (a worker was down) renews and finalizes at once,
    at the draft's own due time, with the same amounts and credits as two runs would give."""
    from meterline.services import due_work
    from meterline.store.db import Database

    _, client, meter, ids = acct
    cus = client.v1.customers.create({"name": "late"})
    client.v1.billing.credit_grants.create(
        {
            "customer": cus.id,
            "amount": {"type": "monetary", "monetary": {"currency": "usd", "value": 25}},
            "applicability_config": {"scope": {"price_type": "metered"}},
        }
    )
    sub = client.v1.subscriptions.create({"customer": cus.id, "items": [{"price": ids["metered"]}]})
    client.v1.billing.meter_events.create(
        {"event_name": meter.event_name, "payload": {"stripe_customer_id": cus.id, "value": "30"}}
    )
    end = d(sub)["items"]["data"][0]["current_period_end"]
    db = Database(server.database_url)
    try:
        # (Other tests' wall-clock subscriptions may fall due in the same run.)
        assert due_work.bill_due(db, end + 5 * 3600) >= 2
        assert due_work.bill_due(db, end + 5 * 3600) == 0
    finally:
        db.dispose()
    (inv,) = [
        d(i)
        for i in client.v1.invoices.list({"subscription": sub.id}).data
        if i.billing_reason == "subscription_cycle"
    ]
    assert_matches(inv, "invoice")
    assert inv["status"] == "open" and inv["status_transitions"]["finalized_at"] == end + 3600
    assert (inv["subtotal"], inv["amount_due"]) == (60, 35)
    assert inv["lines"]["data"][0]["pretax_credit_amounts"][0]["amount"] == 25


def test_a_run_on_several_connections_bills_each_customer_in_time_order(acct, server):
    """`bill_due` on 4 lanes (PostgreSQL bills customers on several connections at once; SQLite
    runs them in one): every customer has two subscriptions falling due a day apart and one grant
    that covers only part of both invoices, so the earlier invoice must take the credit first,
    whichever lane the customer lands on; every step runs once."""
    from meterline.services import due_work
    from meterline.store.db import Database

    _, client, meter, ids = acct
    start = None
    expect = {}
    for k in range(8):
        cus = client.v1.customers.create({"name": f"lanes {k}"})
        client.v1.billing.credit_grants.create(
            {
                "customer": cus.id,
                "amount": {"type": "monetary", "monetary": {"currency": "usd", "value": 50}},
                "applicability_config": {"scope": {"price_type": "metered"}},
            }
        )
        start = start or client.v1.customers.retrieve(cus.id).created
        subs = [
            client.v1.subscriptions.create(
                {
                    "customer": cus.id,
                    "items": [{"price": ids["metered"]}],
                    "billing_cycle_anchor": start + (days + k % 3) * 86_400,
                }
            )
            for days in (2, 1)  # the later one first: creation order must not decide
        ]
        client.v1.billing.meter_events.create(  # after the periods start: counted in both
            {
                "event_name": meter.event_name,
                "payload": {"stripe_customer_id": cus.id, "value": str(20 + k)},
            }
        )
        expect[cus.id] = (subs[1].id, subs[0].id, 2 * (20 + k))
    db = Database(server.database_url)
    try:
        ran = due_work.bill_due(db, start + 6 * 86_400, lanes=4)
        assert ran >= 2 * 2 * len(expect)  # (other tests' subscriptions may fall due too)
        assert due_work.bill_due(db, start + 6 * 86_400, lanes=4) == 0
    finally:
        db.dispose()
    for cus, (early, late, subtotal) in expect.items():
        got = {}
        for sid in (early, late):
            (inv,) = [
                d(i)
                for i in client.v1.invoices.list({"subscription": sid}).data
                if i.billing_reason == "subscription_cycle"
            ]
            credited = sum(c["amount"] for c in inv["total_pretax_credit_amounts"])
            assert inv["subtotal"] == subtotal and inv["amount_due"] == subtotal - credited
            assert inv["status"] == ("paid" if credited == subtotal else "open")
            got[sid] = credited
        assert got[early] == min(subtotal, 50), (cus, got)
        assert got[late] == min(subtotal, 50 - got[early]), (cus, got)
