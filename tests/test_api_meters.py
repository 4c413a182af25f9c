"""Billing meters through the official SDK: create, retrieve, update, list, deactivate,
reactivate, and meters on prices and plans."""

from __future__ import annotations

import uuid

import pytest
import stripe

from openapi_check import assert_error, assert_list_of, assert_matches


def uid(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def checked(meter) -> dict:
    d = meter._to_dict_recursive()
    body = {
        k: v for k, v in d.items() if k != "dimension_payload_keys"
    }  # ours, not in Stripe's schema
    assert_matches(body, "billing.meter")
    return d


def test_create_with_defaults(client):
    name = uid("tokens")
    m = checked(
        client.v1.billing.meters.create(
            {
                "display_name": "Tokens",
                "event_name": name,
                "default_aggregation": {"formula": "sum"},
            }
        )
    )
    assert m["id"].startswith("mtr_")
    assert m["customer_mapping"] == {"event_payload_key": "stripe_customer_id", "type": "by_id"}
    assert m["value_settings"] == {"event_payload_key": "value"}
    assert (m["status"], m["status_transitions"]["deactivated_at"], m["event_time_window"]) == (
        "active",
        None,
        None,
    )
    assert m["dimension_payload_keys"] == []
    assert checked(client.v1.billing.meters.retrieve(m["id"])) == m


def test_create_with_every_setting(client):
    m = checked(
        client.v1.billing.meters.create(
            {
                "display_name": "GPU minutes",
                "event_name": uid("gpu"),
                "default_aggregation": {"formula": "last"},
                "customer_mapping": {"event_payload_key": "customer", "type": "by_id"},
                "value_settings": {"event_payload_key": "minutes"},
                "event_time_window": "hour",
                "dimension_payload_keys": ["model", "region"],
            }
        )
    )
    assert m["customer_mapping"]["event_payload_key"] == "customer"
    assert m["value_settings"]["event_payload_key"] == "minutes"
    assert (m["default_aggregation"]["formula"], m["event_time_window"]) == ("last", "hour")
    assert m["dimension_payload_keys"] == ["model", "region"]


def _refused(fn, status, code, param):
    with pytest.raises(stripe.StripeError) as e:
        fn()
    assert e.value.http_status == status, e.value.json_body
    assert_error(e.value.json_body, "invalid_request_error", code=code, param=param)
    return e.value.json_body["error"]


def test_validation(client, http):
    meters = client.v1.billing.meters
    name = uid("dup")
    meters.create(
        {"display_name": "A", "event_name": name, "default_aggregation": {"formula": "sum"}}
    )
    _refused(
        lambda: meters.create(
            {"display_name": "B", "event_name": name, "default_aggregation": {"formula": "sum"}}
        ),
        400,
        "resource_already_exists",
        "event_name",
    )
    _refused(
        lambda: meters.create({"event_name": uid("x"), "default_aggregation": {"formula": "sum"}}),
        400,
        "parameter_missing",
        "display_name",
    )
    _refused(
        lambda: meters.create({"display_name": "x", "event_name": uid("x")}),
        400,
        "parameter_missing",
        "default_aggregation",
    )
    _refused(
        lambda: meters.create(
            {"display_name": "x", "event_name": uid("x"), "default_aggregation": {"formula": "avg"}}
        ),
        400,
        "parameter_invalid_enum",
        "default_aggregation[formula]",
    )
    _refused(
        lambda: meters.create(
            {
                "display_name": "x",
                "event_name": "e" * 101,
                "default_aggregation": {"formula": "sum"},
            }
        ),
        400,
        "parameter_invalid_string",
        "event_name",
    )
    _refused(
        lambda: meters.create(
            {
                "display_name": "x",
                "event_name": uid("x"),
                "default_aggregation": {"formula": "sum"},
                "event_time_window": "week",
            }
        ),
        400,
        "parameter_invalid_enum",
        "event_time_window",
    )
    r = http.post(
        "/v1/billing/meters",
        data={
            "display_name": "x",
            "event_name": uid("x"),
            "default_aggregation[formula]": "sum",
            **{f"dimension_payload_keys[{i}]": f"k{i}" for i in range(11)},
        },
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "dimension_payload_keys"
    r = http.post(
        "/v1/billing/meters",
        data={
            "display_name": "x",
            "event_name": uid("x"),
            "default_aggregation[formula]": "sum",
            "dimension_payload_keys[0]": "value",
        },
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "dimension_payload_keys[0]"


def test_update_only_display_name(client, http):
    m = client.v1.billing.meters.create(
        {"display_name": "Old", "event_name": uid("u"), "default_aggregation": {"formula": "count"}}
    )
    assert client.v1.billing.meters.update(m.id, {"display_name": "New"}).display_name == "New"
    r = http.post(f"/v1/billing/meters/{m.id}", data={"event_name": "other"})
    assert r.status_code == 400
    assert_error(r.json(), "invalid_request_error", code="parameter_unknown", param="event_name")
    assert client.v1.billing.meters.retrieve(m.id).event_name == m.event_name
    _refused(
        lambda: client.v1.billing.meters.retrieve("mtr_missing"), 404, "resource_missing", "id"
    )


def test_deactivate_and_reactivate(client):
    m = client.v1.billing.meters.create(
        {"display_name": "D", "event_name": uid("d"), "default_aggregation": {"formula": "sum"}}
    )
    off = checked(client.v1.billing.meters.deactivate(m.id))
    assert off["status"] == "inactive" and isinstance(
        off["status_transitions"]["deactivated_at"], int
    )
    _refused(lambda: client.v1.billing.meters.deactivate(m.id), 400, "parameter_invalid", "id")
    on = checked(client.v1.billing.meters.reactivate(m.id))
    assert on["status"] == "active" and on["status_transitions"]["deactivated_at"] is None


def test_list_by_status(server):
    c = server.client(server.new_key(new_account=True))
    a = c.v1.billing.meters.create(
        {"display_name": "A", "event_name": "a", "default_aggregation": {"formula": "sum"}}
    )
    b = c.v1.billing.meters.create(
        {"display_name": "B", "event_name": "b", "default_aggregation": {"formula": "sum"}}
    )
    c.v1.billing.meters.deactivate(a.id)
    listed = c.v1.billing.meters.list()
    assert_list_of(
        {
            **listed._to_dict_recursive(),
            "data": [
                {k: v for k, v in m.items() if k != "dimension_payload_keys"}
                for m in listed._to_dict_recursive()["data"]
            ],
        },
        "billing.meter",
        url="/v1/billing/meters",
    )
    assert [m.id for m in listed.data] == [b.id, a.id]
    assert [m.id for m in c.v1.billing.meters.list({"status": "active"}).data] == [b.id]
    assert [m.id for m in c.v1.billing.meters.list({"status": "inactive"}).data] == [a.id]


def test_prices_and_plans_take_active_meters(client, server):
    meter = client.v1.billing.meters.create(
        {"display_name": "M", "event_name": uid("m"), "default_aggregation": {"formula": "sum"}}
    )
    product = client.v1.products.create({"name": "Metered"})
    price = client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount": 2,
            "product": product.id,
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )
    assert price.recurring.meter == meter.id
    plan = client.v1.plans.create(
        {
            "currency": "usd",
            "amount": 2,
            "interval": "month",
            "usage_type": "metered",
            "meter": meter.id,
            "product": product.id,
        }
    )
    assert plan.meter == meter.id
    client.v1.billing.meters.deactivate(meter.id)
    _refused(
        lambda: client.v1.prices.create(
            {
                "currency": "usd",
                "unit_amount": 2,
                "product": product.id,
                "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
            }
        ),
        400,
        "archived_meter",
        "recurring[meter]",
    )
    _refused(
        lambda: client.v1.plans.create(
            {
                "currency": "usd",
                "amount": 2,
                "interval": "month",
                "usage_type": "metered",
                "meter": meter.id,
                "product": product.id,
            }
        ),
        400,
        "archived_meter",
        "meter",
    )
    _refused(
        lambda: client.v1.prices.create(
            {
                "currency": "usd",
                "unit_amount": 2,
                "product": product.id,
                "recurring": {"interval": "month", "usage_type": "metered", "meter": "mtr_nope"},
            }
        ),
        404,
        "resource_missing",
        "recurring[meter]",
    )
    # another account cannot see or use the meter
    other = server.client(server.new_key(new_account=True))
    _refused(lambda: other.v1.billing.meters.retrieve(meter.id), 404, "resource_missing", "id")
    p2 = other.v1.products.create({"name": "x"})
    _refused(
        lambda: other.v1.prices.create(
            {
                "currency": "usd",
                "unit_amount": 2,
                "product": p2.id,
                "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
            }
        ),
        404,
        "resource_missing",
        "recurring[meter]",
    )
