"""GET /v1/billing/meters/{id}/event_summaries: alignment rules, windows, formulas, cancels and
pagination, through the official SDK."""

from __future__ import annotations

import time

import pytest
import stripe

from openapi_check import assert_error, assert_list_of

HOUR, DAY = 3600, 86400
NOW = int(time.time())
TODAY = NOW - NOW % DAY


@pytest.fixture(scope="module")
def setup(server):
    key = server.new_key(new_account=True)
    client = server.client(key)
    cus = client.v1.customers.create({"name": "s"}).id
    meter = client.v1.billing.meters.create(
        {"display_name": "s", "event_name": "s", "default_aggregation": {"formula": "sum"}}
    ).id
    last = client.v1.billing.meters.create(
        {"display_name": "l", "event_name": "l", "default_aggregation": {"formula": "last"}}
    ).id
    base = TODAY - 2 * DAY  # two UTC days ago, 00:00
    for i, (offset, value) in enumerate(
        [(10, "5"), (HOUR + 5, "2.5"), (DAY + 7, "-1"), (DAY + HOUR, "4")]
    ):
        client.v1.billing.meter_events.create(
            {
                "event_name": "s",
                "payload": {"stripe_customer_id": cus, "value": value},
                "timestamp": base + offset,
                "identifier": f"s{i}",
            }
        )
        client.v1.billing.meter_events.create(
            {
                "event_name": "l",
                "payload": {"stripe_customer_id": cus, "value": value},
                "timestamp": base + offset,
                "identifier": f"l{i}",
            }
        )
    client.v1.billing.meter_event_adjustments.create(
        {"event_name": "s", "type": "cancel", "cancel": {"identifier": "s3"}}
    )
    return client, cus, meter, last, base


def test_one_summary_for_the_range(setup):
    client, cus, meter, last, base = setup
    page = client.v1.billing.meters.event_summaries.list(
        meter, {"customer": cus, "start_time": base, "end_time": base + 2 * DAY}
    )
    assert_list_of(
        page._to_dict_recursive(),
        "billing.meter_event_summary",
        url=f"/v1/billing/meters/{meter}/event_summaries",
    )
    assert [(s.start_time, s.end_time, s.aggregated_value) for s in page.data] == [
        (base, base + 2 * DAY, 6.5)
    ]
    got = client.v1.billing.meters.event_summaries.list(
        last, {"customer": cus, "start_time": base, "end_time": base + 2 * DAY}
    )
    assert got.data[0].aggregated_value == 4


def test_daily_and_hourly_windows_newest_first_with_paging(setup):
    client, cus, meter, _, base = setup
    days = client.v1.billing.meters.event_summaries.list(
        meter,
        {
            "customer": cus,
            "start_time": base,
            "end_time": base + 2 * DAY,
            "value_grouping_window": "day",
        },
    )
    assert [(s.start_time, s.aggregated_value) for s in days.data] == [
        (base + DAY, -1),
        (base, 7.5),
    ]
    hours = client.v1.billing.meters.event_summaries.list(
        meter,
        {
            "customer": cus,
            "start_time": base,
            "end_time": base + 3 * HOUR,
            "value_grouping_window": "hour",
            "limit": 2,
        },
    )
    assert [(s.start_time, s.aggregated_value) for s in hours.data] == [
        (base + 2 * HOUR, 0),
        (base + HOUR, 2.5),
    ] and hours.has_more
    walked = list(hours.auto_paging_iter())
    assert [s.start_time for s in walked] == [base + 2 * HOUR, base + HOUR, base]


def test_alignment_and_errors(setup):
    client, cus, meter, _, base = setup
    summaries = client.v1.billing.meters.event_summaries

    def refused(params, status, param, code=None):
        with pytest.raises(stripe.StripeError) as e:
            summaries.list(meter, params)
        assert e.value.http_status == status
        assert_error(e.value.json_body, "invalid_request_error", code=code, param=param)

    refused({"customer": cus, "start_time": base + 1, "end_time": base + DAY}, 400, "start_time")
    refused(
        {
            "customer": cus,
            "start_time": base + 60,
            "end_time": base + DAY,
            "value_grouping_window": "hour",
        },
        400,
        "start_time",
    )
    refused(
        {
            "customer": cus,
            "start_time": base + HOUR,
            "end_time": base + DAY,
            "value_grouping_window": "day",
        },
        400,
        "start_time",
    )
    refused({"customer": cus, "start_time": base, "end_time": base}, 400, "end_time")
    refused(
        {"customer": "cus_nobody", "start_time": base, "end_time": base + DAY},
        404,
        "customer",
        "resource_missing",
    )
    refused({"start_time": base, "end_time": base + DAY}, 400, "customer", "parameter_missing")
    with pytest.raises(stripe.StripeError) as e:
        client.v1.billing.meters.event_summaries.list(
            "mtr_nobody", {"customer": cus, "start_time": base, "end_time": base + DAY}
        )
    assert e.value.http_status == 404
