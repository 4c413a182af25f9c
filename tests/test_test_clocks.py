"""Test clocks through the official SDK: create, retrieve, list, advance (forward only),
delete (with the customers on the clock), isolation between accounts; and customers on a clock
living at its time: the meter event window, the default timestamp and the cancel window.
"""

from __future__ import annotations

import time
import uuid

import pytest
import stripe

from openapi_check import assert_deleted, assert_error, assert_matches
from sdk_helpers import advance

DAY = 86_400


@pytest.fixture(scope="module")
def acct(server):
    key = server.new_key(new_account=True)
    return server, key, server.client(key)


def test_lifecycle(acct):
    _, _, client = acct
    frozen = int(time.time()) - 60 * DAY
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": frozen, "name": "sim"})
    assert_matches(clock._to_dict_recursive(), "test_helpers.test_clock")
    assert (clock.frozen_time, clock.status, clock.name) == (frozen, "ready", "sim")
    assert clock.id.startswith("clock_")
    got = client.v1.test_helpers.test_clocks.retrieve(clock.id)
    assert got.frozen_time == frozen
    listed = client.v1.test_helpers.test_clocks.list({"limit": 100})
    assert clock.id in [c.id for c in listed.data]
    moved = advance(client, clock.id, frozen + DAY)
    assert (moved.frozen_time, moved.status) == (frozen + DAY, "ready")
    with pytest.raises(stripe.InvalidRequestError) as ei:
        advance(client, clock.id, frozen)
    assert ei.value.http_status == 400 and ei.value.param == "frozen_time"
    assert_error(ei.value.json_body, "invalid_request_error", param="frozen_time")
    assert client.v1.test_helpers.test_clocks.retrieve(clock.id).frozen_time == frozen + DAY
    cus = client.v1.customers.create({"name": "on the clock", "test_clock": clock.id})
    assert cus.test_clock == clock.id
    deleted = client.v1.test_helpers.test_clocks.delete(clock.id)
    assert_deleted(deleted._to_dict_recursive(), "test_helpers.test_clock")
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.test_helpers.test_clocks.retrieve(clock.id)
    assert ei.value.http_status == 404
    assert client.v1.customers.retrieve(cus.id).to_dict().get("deleted") is True


def test_validation_and_isolation(acct, server):
    _, key, client = acct
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.test_helpers.test_clocks.create({})
    assert ei.value.param == "frozen_time"
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.test_helpers.test_clocks.create({"frozen_time": "soon"})
    assert ei.value.param == "frozen_time"
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": int(time.time())})
    other = server.client(server.new_key(new_account=True))
    with pytest.raises(stripe.InvalidRequestError) as ei:
        other.v1.test_helpers.test_clocks.retrieve(clock.id)
    assert ei.value.http_status == 404
    with pytest.raises(stripe.InvalidRequestError) as ei:
        other.v1.customers.create({"test_clock": clock.id})
    assert ei.value.http_status == 404 and ei.value.param == "test_clock"
    assert clock.id not in [c.id for c in other.v1.test_helpers.test_clocks.list().data]


def test_meter_events_of_a_customer_on_a_clock_follow_its_time(acct):
    server, key, client = acct
    frozen = (int(time.time()) - 90 * DAY) // 60 * 60
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": frozen})
    cus = client.v1.customers.create({"test_clock": clock.id})
    meter = client.v1.billing.meters.create(
        {
            "display_name": "sim",
            "event_name": f"sim_{uuid.uuid4().hex[:8]}",
            "default_aggregation": {"formula": "sum"},
        }
    )
    name = meter.event_name
    # 90 days before the wall clock, one day before the clock: accepted.
    ev = client.v1.billing.meter_events.create(
        {
            "event_name": name,
            "payload": {"stripe_customer_id": cus.id, "value": "5"},
            "timestamp": frozen - DAY,
        }
    )
    assert ev.timestamp == frozen - DAY
    # Without a timestamp, the event happens at the clock's time.
    ev2 = client.v1.billing.meter_events.create(
        {"event_name": name, "payload": {"stripe_customer_id": cus.id, "value": "2"}}
    )
    assert ev2.timestamp == frozen
    # The wall clock's now is 90 days in the clock's future.
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.billing.meter_events.create(
            {
                "event_name": name,
                "payload": {"stripe_customer_id": cus.id, "value": "1"},
                "timestamp": int(time.time()),
            }
        )
    assert ei.value.code == "timestamp_in_future"
    with server.http(key) as http:
        r = http.get(
            "/v1/billing/analytics/meter_usage",
            params={
                "customer": cus.id,
                "start_time": frozen - 2 * DAY,
                "end_time": frozen + 60,
                "meters[0][meter_id]": meter.id,
            },
        )
        assert r.status_code == 200, r.text
        assert [x["bucket_value"] for x in r.json()["data"]] == [7]
    # The cancel window (24 hours from receipt) follows the clock too.
    advance(client, clock.id, frozen + 25 * 3600)
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.billing.meter_event_adjustments.create(
            {"event_name": name, "type": "cancel", "cancel": {"identifier": ev.identifier}}
        )
    assert ei.value.http_status == 400


def test_every_response_matches_the_schema_and_bad_input_changes_nothing(acct):
    """Each test clock endpoint through the SDK, its body checked against the spec; refused
    calls leave the clocks as they were."""
    from openapi_check import assert_list_of

    server, key, client = acct
    frozen = int(time.time())
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": frozen})
    assert_matches(
        client.v1.test_helpers.test_clocks.retrieve(clock.id)._to_dict_recursive(),
        "test_helpers.test_clock",
    )
    advanced = advance(client, clock.id, frozen + 60)
    assert_matches(advanced._to_dict_recursive(), "test_helpers.test_clock")
    listed = client.v1.test_helpers.test_clocks.list({"limit": 3})
    assert_list_of(listed._to_dict_recursive(), "test_helpers.test_clock")

    def clocks():
        return [
            c._to_dict_recursive()
            for c in client.v1.test_helpers.test_clocks.list({"limit": 100}).data
        ]

    before = clocks()
    for params, param in (
        ({"frozen_time": -1}, "frozen_time"),
        ({"frozen_time": frozen, "name": "x" * 301}, "name"),
        ({"frozen_time": frozen, "colour": "blue"}, "colour"),
    ):
        with pytest.raises(stripe.InvalidRequestError) as ei:
            client.v1.test_helpers.test_clocks.create(params)
        assert ei.value.http_status == 400 and ei.value.param == param
        assert_error(ei.value.json_body, "invalid_request_error", param=param)
    with pytest.raises(stripe.InvalidRequestError) as ei:
        advance(client, clock.id, frozen + 30)
    assert "forward" in ei.value.user_message
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.test_helpers.test_clocks.advance("clock_missing", {"frozen_time": frozen})
    assert ei.value.http_status == 404 and ei.value.param == "test_clock"
    assert clocks() == before


def test_an_advance_runs_in_the_background_and_is_taken_over_after_a_crash(acct):
    """The advance answers `advancing` with its target, as Stripe does, and the clock turns
    `ready` at the target once what fell due has run. An advance left `advancing` with nobody
    running it (its worker died) is finished by the background job; while a clock advances, it
    cannot be advanced again."""
    import sqlalchemy as sa

    from meterline.services import due_work
    from meterline.store.db import Database

    server, _, client = acct
    frozen = int(time.time()) - 10 * DAY
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": frozen})
    started = client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": frozen + DAY})
    got = started._to_dict_recursive()
    assert_matches(got, "test_helpers.test_clock")
    assert got["status"] == "advancing" and got["frozen_time"] == frozen
    assert got["status_details"] == {"advancing": {"target_frozen_time": frozen + DAY}}
    for _ in range(6000):  # turns ready once the worker has run it
        now = client.v1.test_helpers.test_clocks.retrieve(clock.id)
        if now.status != "advancing":
            break
        time.sleep(0.01)
    assert (now.status, now.frozen_time) == ("ready", frozen + DAY)
    assert now._to_dict_recursive()["status_details"] == {}
    advance(client, clock.id, frozen + 2 * DAY)

    # A customer with a grant that becomes effective on the way: the crash case.
    cus = client.v1.customers.create({"test_clock": clock.id})
    client.v1.billing.credit_grants.create(
        {
            "customer": cus.id,
            "amount": {"type": "monetary", "monetary": {"currency": "usd", "value": 70}},
            "applicability_config": {"scope": {"price_type": "metered"}},
            "effective_at": frozen + 3 * DAY,
        }
    )
    db = Database(server.database_url)
    try:
        with db.write() as conn:  # a worker is running it (its claim holds for 5 minutes)
            conn.execute(
                sa.text(
                    "UPDATE test_clocks SET status = 'advancing', target_frozen_time = :t, "
                    "claimed_until = :u WHERE id = :c"
                ),
                {"t": frozen + 4 * DAY, "u": int(time.time()) + 300, "c": clock.id},
            )
        shown = client.v1.test_helpers.test_clocks.retrieve(clock.id)
        assert shown.status == "advancing" and shown.frozen_time == frozen + 2 * DAY
        assert shown._to_dict_recursive()["status_details"] == {
            "advancing": {"target_frozen_time": frozen + 4 * DAY}
        }
        with pytest.raises(stripe.InvalidRequestError) as ei:
            client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": frozen + 9 * DAY})
        assert ei.value.http_status == 400 and ei.value.code == "test_clock_advancing"
        assert_error(ei.value.json_body, "invalid_request_error", "test_clock_advancing")
        assert due_work.run_advances(db, int(time.time())) == 0  # held by its runner: left
        assert client.v1.test_helpers.test_clocks.retrieve(clock.id).status == "advancing"
        with db.write() as conn:  # ... whose worker died: the claim lapses
            conn.execute(
                sa.text("UPDATE test_clocks SET claimed_until = :u WHERE id = :c"),
                {"u": int(time.time()) - 1, "c": clock.id},
            )
        # The jobs take it over: the server's own (every 5 s) or this call, whichever is first.
        assert due_work.run_advances(db, int(time.time())) in (0, 1)
        for _ in range(3000):
            if client.v1.test_helpers.test_clocks.retrieve(clock.id).status != "advancing":
                break
            time.sleep(0.01)
        assert due_work.run_advances(db, int(time.time())) == 0
    finally:
        db.dispose()
    done = client.v1.test_helpers.test_clocks.retrieve(clock.id)
    assert (done.status, done.frozen_time) == ("ready", frozen + 4 * DAY)
    ledger = client.v1.billing.credit_balance_transactions.list({"customer": cus.id}).data
    assert [(t.type, t.effective_at) for t in ledger] == [("credit", frozen + 3 * DAY)]
