"""Credit grants, the ledger and the balance summary through the official SDK.

Create with every setting and validate against the spec; every validation error with its param;
scope by metered prices (refusing licensed or meterless prices and other currencies); the ledger
writes `credits_granted` when a grant becomes effective (on a test clock, when the clock gets
there), `credits_expired` / `credits_voided` for what remains; the summary per currency and per
filter; update of expires_at (cleared with ''), metadata; isolation between accounts.
"""

from __future__ import annotations

import time
import uuid

import pytest
import stripe

from openapi_check import assert_error, assert_matches
from sdk_helpers import advance

DAY = 86_400


def d(obj):
    return obj._to_dict_recursive()


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
    product = client.v1.products.create({"name": "api"})
    metered = client.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": 2,
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )
    licensed = client.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": 1000,
            "recurring": {"interval": "month"},
        }
    )
    euro = client.v1.prices.create(
        {
            "product": product.id,
            "currency": "eur",
            "unit_amount": 2,
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )
    return server, key, client, {"metered": metered.id, "licensed": licensed.id, "eur": euro.id}


def grant_params(customer_id, **kw):
    p = {
        "customer": customer_id,
        "amount": {"type": "monetary", "monetary": {"currency": "usd", "value": 1000}},
        "applicability_config": {"scope": {"price_type": "metered"}},
    }
    p.update(kw)
    return p


def summary(client, customer, **flt):
    f = flt or {"type": "applicability_scope", "applicability_scope": {"price_type": "metered"}}
    return d(client.v1.billing.credit_balance_summary.retrieve({"customer": customer, "filter": f}))


def ledger(client, customer, **kw):
    return [
        d(t)
        for t in client.v1.billing.credit_balance_transactions.list(
            {"customer": customer, "limit": 100, **kw}
        ).data
    ]


def test_create_every_setting_and_ledger(acct):
    _, _, client, prices = acct
    cus = client.v1.customers.create({"name": "credits"})
    now = int(time.time())
    g = client.v1.billing.credit_grants.create(
        grant_params(
            cus.id,
            category="promotional",
            priority=7,
            name="welcome",
            expires_at=now + 30 * DAY,
            metadata={"campaign": "w"},
            applicability_config={"scope": {"prices": [{"id": prices["metered"]}]}},
        )
    )
    body = d(g)
    assert_matches(body, "billing.credit_grant")
    assert g.id.startswith("credgr_")
    assert (g.category, g.priority, g.name, g.expires_at) == (
        "promotional",
        7,
        "welcome",
        now + 30 * DAY,
    )
    assert body["applicability_config"]["scope"] == {
        "price_type": None,
        "prices": [{"id": prices["metered"]}],
    }
    assert now - 5 <= g.effective_at <= int(time.time()) + 1
    got = client.v1.billing.credit_grants.retrieve(g.id)
    assert d(got) == body
    txns = ledger(client, cus.id)
    assert len(txns) == 1
    assert_matches(txns[0], "billing.credit_balance_transaction")
    assert txns[0]["type"] == "credit" and txns[0]["credit"]["type"] == "credits_granted"
    assert txns[0]["credit"]["amount"]["monetary"] == {"currency": "usd", "value": 1000}
    one = client.v1.billing.credit_balance_transactions.retrieve(txns[0]["id"])
    assert d(one) == txns[0]
    s = summary(
        client,
        cus.id,
        type="applicability_scope",
        applicability_scope={"prices": [{"id": prices["metered"]}]},
    )
    assert_matches(s, "billing.credit_balance_summary")
    assert s["balances"] == [
        {
            "available_balance": {
                "type": "monetary",
                "monetary": {"currency": "usd", "value": 1000},
            },
            "ledger_balance": {"type": "monetary", "monetary": {"currency": "usd", "value": 1000}},
        }
    ]
    # The metered-type scope holds none of it: that grant is price-scoped.
    assert summary(client, cus.id)["balances"] == []
    # Update: clear the expiry, change metadata.
    u = client.v1.billing.credit_grants.update(
        g.id, {"expires_at": "", "metadata": {"campaign": ""}}
    )
    assert u.expires_at is None and d(u)["metadata"] == {}
    # Void: the remaining 1000 leave with a credits_voided debit.
    v = client.v1.billing.credit_grants.void_grant(g.id)
    assert v.voided_at is not None
    txns = ledger(client, cus.id, credit_grant=g.id)
    assert sorted((t["type"], (t["credit"] or t["debit"])["type"]) for t in txns) == [
        ("credit", "credits_granted"),
        ("debit", "credits_voided"),
    ]
    s = summary(client, cus.id, type="credit_grant", credit_grant=g.id)
    assert s["balances"][0]["ledger_balance"]["monetary"]["value"] == 0
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.billing.credit_grants.expire(g.id)
    assert ei.value.http_status == 400


def test_grants_on_a_test_clock_become_effective_and_expire_with_it(acct):
    _, _, client, _ = acct
    frozen = int(time.time()) - 100 * DAY
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": frozen})
    cus = client.v1.customers.create({"test_clock": clock.id})
    g = client.v1.billing.credit_grants.create(
        grant_params(cus.id, effective_at=frozen + DAY, expires_at=frozen + 3 * DAY)
    )
    assert g.test_clock == clock.id
    assert ledger(client, cus.id) == []
    # A currency with a matching grant has an entry, at 0 until the grant is effective.
    assert summary(client, cus.id)["balances"][0]["ledger_balance"]["monetary"] == {
        "currency": "usd",
        "value": 0,
    }
    advance(client, clock.id, frozen + 2 * DAY)
    txns = ledger(client, cus.id)
    assert [(t["credit"]["type"], t["effective_at"]) for t in txns] == [
        ("credits_granted", frozen + DAY)
    ]
    assert summary(client, cus.id)["balances"][0]["available_balance"]["monetary"]["value"] == 1000
    advance(client, clock.id, frozen + 4 * DAY)
    txns = ledger(client, cus.id)
    assert sorted(((t["credit"] or t["debit"])["type"], t["effective_at"]) for t in txns) == [
        ("credits_expired", frozen + 3 * DAY),
        ("credits_granted", frozen + DAY),
    ]
    assert summary(client, cus.id)["balances"][0]["ledger_balance"]["monetary"]["value"] == 0
    # The summary is written once: reading again adds nothing.
    assert len(ledger(client, cus.id)) == 2


@pytest.mark.parametrize(
    ("change", "status", "param"),
    [
        ({"customer": "cus_nope"}, 404, "customer"),
        (
            {"amount": {"type": "monetary", "monetary": {"currency": "usd", "value": 0}}},
            400,
            "amount[monetary][value]",
        ),
        (
            {"amount": {"type": "monetary", "monetary": {"currency": "xyz", "value": 5}}},
            400,
            "amount[monetary][currency]",
        ),
        (
            {"amount": {"type": "other", "monetary": {"currency": "usd", "value": 5}}},
            400,
            "amount[type]",
        ),
        (
            {
                "applicability_config": {
                    "scope": {"price_type": "metered", "prices": [{"id": "price_x"}]}
                }
            },
            400,
            "applicability_config[scope]",
        ),
        ({"applicability_config": {"scope": {}}}, 400, "applicability_config"),
        ({"priority": 101}, 400, "priority"),
        ({"category": "free"}, 400, "category"),
        ({"effective_at": 2_000_000_000, "expires_at": 1_999_999_999}, 400, "expires_at"),
        ({"name": "x" * 101}, 400, "name"),
    ],
)
def test_validation(acct, change, status, param):
    _, _, client, _ = acct
    cus = client.v1.customers.create({})
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.billing.credit_grants.create(grant_params(cus.id, **change))
    assert ei.value.http_status == status and ei.value.param == param
    assert_error(ei.value.json_body, "invalid_request_error", param=param)
    assert client.v1.billing.credit_grants.list({"customer": cus.id}).data == []


@pytest.mark.parametrize("which", ["licensed", "eur", "missing"])
def test_price_scope_needs_metered_prices_of_the_currency(acct, which):
    _, _, client, prices = acct
    cus = client.v1.customers.create({})
    pid = prices.get(which, "price_missing")
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.billing.credit_grants.create(
            grant_params(cus.id, applicability_config={"scope": {"prices": [{"id": pid}]}})
        )
    assert ei.value.param == "applicability_config[scope][prices][0][id]"
    assert ei.value.http_status == (404 if which == "missing" else 400)


def test_isolation(acct, server):
    _, _, client, _ = acct
    cus = client.v1.customers.create({})
    g = client.v1.billing.credit_grants.create(grant_params(cus.id))
    other = server.client(server.new_key(new_account=True))
    with pytest.raises(stripe.InvalidRequestError) as ei:
        other.v1.billing.credit_grants.retrieve(g.id)
    assert ei.value.http_status == 404
    with pytest.raises(stripe.InvalidRequestError) as ei:
        other.v1.billing.credit_balance_transactions.list({"customer": cus.id})
    assert ei.value.http_status == 404
    assert g.id not in [x.id for x in other.v1.billing.credit_grants.list().data]


def test_a_background_job_writes_entries_that_fall_due(acct):
    """Wall-clock grants: the job writes `credits_granted` and `credits_expired` at their
    effective times without anyone reading the ledger, exactly once however often it runs."""
    import sqlalchemy as sa

    from meterline.services import due_work
    from meterline.store.db import Database
    from meterline.store.tables import credit_balance_transactions as txns

    server, _, client, _ = acct
    cus = client.v1.customers.create({})
    now = int(time.time())
    g = client.v1.billing.credit_grants.create(
        grant_params(cus.id, effective_at=now + 60, expires_at=now + 120)
    )
    db = Database(server.database_url)
    try:

        def stored():
            with db.read() as conn:
                return sorted(
                    (r.type, r.effective_at)
                    for r in conn.execute(sa.select(txns).where(txns.c.credit_grant == g.id))
                )

        assert stored() == []
        # Times ahead of the wall clock, so the server's own job (on real time) stays out of it.
        assert due_work.settle_due_grants(db, now + 59) >= 0
        assert stored() == []
        due_work.settle_due_grants(db, now + 61)
        assert stored() == [("credits_granted", now + 60)]
        for _ in range(2):
            due_work.settle_due_grants(db, now + 121)
        assert stored() == [("credits_expired", now + 120), ("credits_granted", now + 60)]
    finally:
        db.dispose()


def test_concurrent_readers_write_each_entry_once(acct):
    """20 clients over 2 workers read the ledger of a customer whose grant has just ended: the
    expiry is written once (unique entry keys), and the balance is 0, not negative."""
    from concurrent.futures import ThreadPoolExecutor

    server, key, client, _ = acct
    frozen = int(time.time()) - 50 * DAY
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": frozen})
    cus = client.v1.customers.create({"test_clock": clock.id})
    client.v1.billing.credit_grants.create(
        grant_params(cus.id, effective_at=frozen - DAY, expires_at=frozen + DAY)
    )
    # Move the clock row only (no settling): then let 20 readers race to settle.
    import sqlalchemy as sa

    from meterline.services import test_clocks
    from meterline.store.db import Database
    from meterline.store.repo import Repo, Scope

    db = Database(server.database_url)
    try:
        with db.write() as conn:
            acct_id = conn.execute(
                sa.text("SELECT account_id FROM customers WHERE id = :c"), {"c": cus.id}
            ).scalar_one()
            test_clocks.move(Repo(conn, Scope(acct_id, False)), clock.id, frozen + 2 * DAY)
    finally:
        db.dispose()

    def read(_):
        with server.http(key) as http:
            r = http.get("/v1/billing/credit_balance_transactions", params={"customer": cus.id})
            assert r.status_code == 200, r.text
            return len(r.json()["data"])

    with ThreadPoolExecutor(20) as pool:
        counts = list(pool.map(read, range(20)))
    assert set(counts) == {2}
    txns = ledger(client, cus.id)
    assert sorted((t["credit"] or t["debit"])["type"] for t in txns) == [
        "credits_expired",
        "credits_granted",
    ]
    assert summary(client, cus.id)["balances"][0]["ledger_balance"]["monetary"]["value"] == 0


def test_every_grant_response_matches_the_schema_and_refusals_change_nothing(acct):
    from openapi_check import assert_list_of

    _, _, client, _ = acct
    cus = client.v1.customers.create({})
    g = client.v1.billing.credit_grants.create(
        grant_params(cus.id, expires_at=int(time.time()) + DAY)
    )
    for obj in (
        client.v1.billing.credit_grants.update(g.id, {"metadata": {"k": "v"}}),
        client.v1.billing.credit_grants.expire(g.id),
    ):
        assert_matches(d(obj), "billing.credit_grant")
    g2 = client.v1.billing.credit_grants.create(grant_params(cus.id))
    assert_matches(d(client.v1.billing.credit_grants.void_grant(g2.id)), "billing.credit_grant")
    assert_list_of(
        d(client.v1.billing.credit_grants.list({"customer": cus.id})), "billing.credit_grant"
    )
    assert_list_of(
        d(client.v1.billing.credit_balance_transactions.list({"customer": cus.id})),
        "billing.credit_balance_transaction",
    )
    before = (
        [d(x) for x in client.v1.billing.credit_grants.list({"customer": cus.id}).data],
        ledger(client, cus.id),
    )
    for call in (
        lambda: client.v1.billing.credit_grants.void_grant(g.id),  # expired already
        lambda: client.v1.billing.credit_grants.expire(g2.id),  # voided already
        lambda: client.v1.billing.credit_grants.update(g.id, {"expires_at": 5}),
        lambda: client.v1.billing.credit_grants.update(g.id, {"priority": 3}),
    ):
        with pytest.raises(stripe.InvalidRequestError) as ei:
            call()
        assert ei.value.http_status == 400
        assert_error(ei.value.json_body, "invalid_request_error")
    for flt, param in (
        ({"type": "credit_grant"}, "filter[credit_grant]"),
        ({"type": "other"}, "filter[type]"),
        (
            {
                "type": "applicability_scope",
                "applicability_scope": {"prices": [{"id": "p"}], "price_type": "metered"},
            },
            "filter[applicability_scope]",
        ),
    ):
        with pytest.raises(stripe.InvalidRequestError) as ei:
            client.v1.billing.credit_balance_summary.retrieve({"customer": cus.id, "filter": flt})
        assert ei.value.param == param
    after = (
        [d(x) for x in client.v1.billing.credit_grants.list({"customer": cus.id}).data],
        ledger(client, cus.id),
    )
    assert after == before
