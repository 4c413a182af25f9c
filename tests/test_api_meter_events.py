"""Meter events (v1 and v2) and cancel adjustments through the official SDK: every validation
error with its code and param, identifier de-duplication (also under a race of 20 clients), and
cancellation rules."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import sqlalchemy as sa
import stripe

from meterline.store.db import Database
from openapi_check import assert_error, assert_matches


def uid(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def setup(server):
    """A fresh account with a customer and a sum meter declaring a `model` dimension."""
    key = server.new_key(new_account=True)
    client = server.client(key)
    customer = client.v1.customers.create({"name": "metered"})
    meter = client.v1.billing.meters.create(
        {
            "display_name": "Tokens",
            "event_name": "tokens",
            "default_aggregation": {"formula": "sum"},
            "dimension_payload_keys": ["model"],
        }
    )
    return client, customer.id, meter.id, key


def stored(server, identifier: str) -> list:
    db = Database(server.database_url)
    try:
        with db.read() as conn:
            return conn.execute(
                sa.text("SELECT value, cancelled_at FROM meter_events WHERE id = :i"),
                {"i": identifier},
            ).all()
    finally:
        db.dispose()


def refused(fn, status, code, param):
    with pytest.raises(stripe.StripeError) as e:
        fn()
    assert e.value.http_status == status, e.value.json_body
    assert_error(e.value.json_body, "invalid_request_error", code=code, param=param)
    return e.value.json_body["error"]["message"]


def test_v1_event_is_stored_exactly(setup, server):
    client, cus, _, _ = setup
    ident = uid("ev")
    now = int(time.time())
    ev = client.v1.billing.meter_events.create(
        {
            "event_name": "tokens",
            "payload": {"stripe_customer_id": cus, "value": "1234.5678", "model": "gpt"},
            "identifier": ident,
            "timestamp": now - 60,
        }
    )
    assert_matches(ev._to_dict_recursive(), "billing.meter_event")
    assert (ev.identifier, ev.timestamp, ev.payload["value"]) == (ident, now - 60, "1234.5678")
    ((value, cancelled),) = stored(server, ident)
    assert str(value) in ("1234.5678", "1234.56780000") and cancelled is None


def test_defaults_identifier_and_timestamp(setup):
    client, cus, _, _ = setup
    before = int(time.time())
    ev = client.v1.billing.meter_events.create(
        {
            "event_name": "tokens",
            "payload": {"stripe_customer_id": cus, "value": "-3", "model": "gpt"},
        }
    )
    assert ev.identifier and before - 1 <= ev.timestamp <= int(time.time()) + 1


def test_duplicate_identifier_is_refused_and_counted_once(setup, server):
    client, cus, _, _ = setup
    ident = uid("dup")
    payload = {"stripe_customer_id": cus, "value": "5", "model": "gpt"}
    client.v1.billing.meter_events.create(
        {"event_name": "tokens", "payload": payload, "identifier": ident}
    )
    refused(
        lambda: client.v1.billing.meter_events.create(
            {"event_name": "tokens", "payload": payload, "identifier": ident}
        ),
        400,
        "resource_already_exists",
        "identifier",
    )
    assert len(stored(server, ident)) == 1


def test_validation_errors(setup, server):
    client, cus, meter_id, _ = setup
    create = client.v1.billing.meter_events.create
    ok = {"stripe_customer_id": cus, "value": "1", "model": "gpt"}
    now = int(time.time())
    refused(lambda: create({"event_name": "nothing", "payload": ok}), 400, "no_meter", "event_name")
    refused(
        lambda: create({"event_name": "tokens", "payload": {"value": "1", "model": "m"}}),
        400,
        "meter_event_no_customer_defined",
        "payload[stripe_customer_id]",
    )
    refused(
        lambda: create(
            {"event_name": "tokens", "payload": {**ok, "stripe_customer_id": "cus_nobody"}}
        ),
        400,
        "meter_event_customer_not_found",
        "payload[stripe_customer_id]",
    )
    other_customer = (
        server.client().v1.customers.create({"name": "elsewhere"}).id
    )  # another account's customer
    refused(
        lambda: create(
            {"event_name": "tokens", "payload": {**ok, "stripe_customer_id": other_customer}}
        ),
        400,
        "meter_event_customer_not_found",
        "payload[stripe_customer_id]",
    )
    for bad in ("abc", "", "1,5", "NaN", "1e"):
        refused(
            lambda bad=bad: create({"event_name": "tokens", "payload": {**ok, "value": bad}}),
            400,
            "meter_event_invalid_value",
            "payload[value]",
        )
    refused(
        lambda: create(
            {"event_name": "tokens", "payload": {k: v for k, v in ok.items() if k != "value"}}
        ),
        400,
        "meter_event_invalid_value",
        "payload[value]",
    )
    refused(
        lambda: create({"event_name": "tokens", "payload": {**ok, "value": "1234567890.123456"}}),
        400,
        "meter_event_value_too_many_digits",
        "payload[value]",
    )
    create(
        {"event_name": "tokens", "payload": {**ok, "value": "12345678901234.5"}}
    )  # 15 digits are fine
    refused(
        lambda: create(
            {"event_name": "tokens", "payload": ok, "timestamp": now - 35 * 86400 - 120}
        ),
        400,
        "timestamp_too_far_in_past",
        "timestamp",
    )
    refused(
        lambda: create({"event_name": "tokens", "payload": ok, "timestamp": now + 6 * 60}),
        400,
        "timestamp_in_future",
        "timestamp",
    )
    create({"event_name": "tokens", "payload": ok, "timestamp": now - 34 * 86400})
    create({"event_name": "tokens", "payload": ok, "timestamp": now + 4 * 60})
    refused(
        lambda: create(
            {"event_name": "tokens", "payload": {k: v for k, v in ok.items() if k != "model"}}
        ),
        400,
        "missing_dimension_payload_keys",
        "payload[model]",
    )
    refused(
        lambda: create(
            {"event_name": "tokens", "payload": {**ok, **{f"k{i}": "x" for i in range(10)}}}
        ),
        400,
        "meter_event_dimension_count_too_high",
        "payload",
    )
    refused(
        lambda: create({"event_name": "tokens", "payload": ok, "identifier": "i" * 101}),
        400,
        "parameter_invalid_string",
        "identifier",
    )


def test_inactive_meter_accepts_nothing(server):
    client = server.client(server.new_key(new_account=True))
    cus = client.v1.customers.create({}).id
    m = client.v1.billing.meters.create(
        {"display_name": "x", "event_name": "off", "default_aggregation": {"formula": "count"}}
    )
    client.v1.billing.meter_events.create(
        {"event_name": "off", "payload": {"stripe_customer_id": cus}}
    )  # count needs no value
    client.v1.billing.meters.deactivate(m.id)
    refused(
        lambda: client.v1.billing.meter_events.create(
            {"event_name": "off", "payload": {"stripe_customer_id": cus}}
        ),
        400,
        "archived_meter",
        "event_name",
    )


def test_v2_event_through_the_sdk(setup, server):
    _, cus, _, key = setup
    client = server.client(key)
    ident = uid("v2")
    ev = client.v2.billing.meter_events.create(
        {
            "event_name": "tokens",
            "payload": {"stripe_customer_id": cus, "value": "7", "model": "x"},
            "identifier": ident,
        }
    )
    body = ev._to_dict_recursive()
    assert_matches(body, "v2.billing.meter_event")
    assert body["identifier"] == ident and body["timestamp"].endswith("Z")
    with pytest.raises(stripe.StripeError) as e:
        client.v2.billing.meter_events.create(
            {
                "event_name": "tokens",
                "payload": {"stripe_customer_id": cus, "value": "7", "model": "x"},
                "identifier": ident,
            }
        )
    assert e.value.http_status == 400
    assert len(stored(server, ident)) == 1


def test_v2_timestamps_are_rfc3339(setup, server):
    _, cus, _, key = setup
    with server.http(key) as h:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() - 3600))
        r = h.post(
            "/v2/billing/meter_events",
            json={
                "event_name": "tokens",
                "payload": {"stripe_customer_id": cus, "value": "1", "model": "x"},
                "timestamp": ts,
            },
        )
        assert r.status_code == 200, r.text
        r = h.post(
            "/v2/billing/meter_events",
            json={
                "event_name": "tokens",
                "payload": {"stripe_customer_id": cus, "value": "1", "model": "x"},
                "timestamp": "yesterday",
            },
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "timestamp"
        # Unix seconds are v1's form: the refusal says what v2 takes instead.
        r = h.post(
            "/v2/billing/meter_events",
            json={
                "event_name": "tokens",
                "payload": {"stripe_customer_id": cus, "value": "1", "model": "x"},
                "timestamp": int(time.time()) - 60,
            },
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "timestamp"
        assert "RFC 3339" in r.json()["error"]["message"]
        r = h.post(
            "/v2/billing/meter_events",
            json={
                "event_name": "tokens",
                "payload": {"stripe_customer_id": cus, "value": "1", "model": "x"},
                "identifier": 12,
            },
        )
        err = r.json()["error"]
        assert r.status_code == 400 and err["param"] == "identifier"
        assert "expected a string, not the JSON number 12" in err["message"]
        r = h.post(
            "/v2/billing/meter_events",
            json={
                "event_name": "tokens",
                "payload": {"stripe_customer_id": cus, "value": 1, "model": "x"},
            },
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "payload[value]"


def test_cancel(setup, server):
    client, cus, _, key = setup
    ident = uid("c")
    client.v1.billing.meter_events.create(
        {
            "event_name": "tokens",
            "payload": {"stripe_customer_id": cus, "value": "9", "model": "x"},
            "identifier": ident,
        }
    )
    adj = client.v1.billing.meter_event_adjustments.create(
        {"event_name": "tokens", "type": "cancel", "cancel": {"identifier": ident}}
    )
    assert_matches(adj._to_dict_recursive(), "billing.meter_event_adjustment")
    assert (adj.status, adj.cancel.identifier) == ("complete", ident)
    assert stored(server, ident)[0][1] is not None
    refused(
        lambda: client.v1.billing.meter_event_adjustments.create(
            {"event_name": "tokens", "type": "cancel", "cancel": {"identifier": ident}}
        ),
        400,
        "parameter_invalid",
        "cancel[identifier]",
    )
    refused(
        lambda: client.v1.billing.meter_event_adjustments.create(
            {"event_name": "tokens", "type": "cancel", "cancel": {"identifier": "nope"}}
        ),
        404,
        "resource_missing",
        "cancel[identifier]",
    )
    # v2, and the 24-hour limit
    old = uid("old")
    client.v1.billing.meter_events.create(
        {
            "event_name": "tokens",
            "payload": {"stripe_customer_id": cus, "value": "9", "model": "x"},
            "identifier": old,
        }
    )
    db = Database(server.database_url)
    try:
        with db.write() as conn:
            conn.execute(
                sa.text("UPDATE meter_events SET created = created - 86401 WHERE id = :i"),
                {"i": old},
            )
    finally:
        db.dispose()
    v2 = server.client(key).v2.billing.meter_event_adjustments
    with pytest.raises(stripe.StripeError) as e:
        v2.create({"event_name": "tokens", "type": "cancel", "cancel": {"identifier": old}})
    assert e.value.http_status == 400 and "24 hours" in e.value.json_body["error"]["message"]
    fresh = uid("v2c")
    client.v1.billing.meter_events.create(
        {
            "event_name": "tokens",
            "payload": {"stripe_customer_id": cus, "value": "9", "model": "x"},
            "identifier": fresh,
        }
    )
    got = v2.create({"event_name": "tokens", "type": "cancel", "cancel": {"identifier": fresh}})
    assert_matches(got._to_dict_recursive(), "v2.billing.meter_event_adjustment")


def test_same_identifier_from_20_clients_at_once_is_stored_once(setup, server):
    _, cus, _, key = setup
    ident = uid("race")
    barrier = threading.Barrier(20)
    statuses: list[int] = []
    lock = threading.Lock()

    def send() -> None:
        with server.http(key) as h:
            barrier.wait()
            r = h.post(
                "/v1/billing/meter_events",
                data={
                    "event_name": "tokens",
                    "payload[stripe_customer_id]": cus,
                    "payload[value]": "1",
                    "payload[model]": "x",
                    "identifier": ident,
                },
            )
            with lock:
                statuses.append(r.status_code)

    threads = [threading.Thread(target=send) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] + [400] * 19
    assert len(stored(server, ident)) == 1
