"""The meter usage analytics endpoint against the brute-force oracle, and its errors.

Property: for random events (values with decimals and negatives, a `model` dimension, random
cancels), random minute-aligned ranges, every window, the three formulas, group-by and filters,
and zones including DST zones of both hemispheres, Asia/Kolkata, Asia/Kathmandu and
Australia/Lord_Howe, the endpoint's rows equal `engine.aggregate.usage_rows` over the raw events.
The rollups are folded at a random point of the ingestion (so answers mix rollup cells, raw
edges and the raw tail), some cancels come after the fold (cells read raw until recomputed), and
sometimes the rollups are rebuilt from nothing: the answer never changes.
"""

from __future__ import annotations

import time
import uuid
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterline.api.analytics import number
from meterline.engine.aggregate import Event, usage_rows
from meterline.services import rollups
from meterline.store.db import Database
from openapi_check import assert_error, assert_matches

ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Sydney",
    "America/Santiago",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
]
FORMULAS = ["sum", "count", "last"]
MODELS = ["gpt-4", "gpt-5", "claude", "llama"]
NOW = (int(time.time()) // 60) * 60
DAY = 86400


@pytest.fixture(scope="module")
def db(server):
    """The server's database, opened here to run the rollup builder at chosen moments (the
    server's workers run it too, every second)."""
    d = Database(server.database_url)
    yield d
    d.dispose()


@pytest.fixture(scope="module")
def acct(server):
    key = server.new_key(new_account=True)
    client = server.client(key)
    meters = {
        f: client.v1.billing.meters.create(
            {
                "display_name": f,
                "event_name": f"ev_{f}",
                "default_aggregation": {"formula": f},
                "dimension_payload_keys": ["model"],
            }
        ).id
        for f in FORMULAS
    }
    return server, key, meters


def query(http, params: list[tuple[str, str]]):
    return http.get("/v1/billing/analytics/meter_usage", params=params)


events_strategy = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=29 * DAY),  # seconds before NOW - 60
        st.decimals(
            min_value=Decimal("-50"),
            max_value=Decimal("1000"),
            places=2,
            allow_nan=False,
            allow_infinity=False,
        ),
        st.sampled_from(MODELS),
        st.sampled_from(FORMULAS),
        st.sampled_from([None, None, "early", "late"]),  # cancelled before or after the fold?
    ),
    min_size=1,
    max_size=25,
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    events=events_strategy,
    window=st.sampled_from([None, "hour", "day", "week", "month"]),
    tz=st.sampled_from(ZONES),
    span=st.tuples(st.integers(0, 30 * 24 * 60), st.integers(1, 30 * 24 * 60)),
    group=st.booleans(),
    filt=st.one_of(
        st.none(),
        st.sampled_from(MODELS),
        st.lists(st.sampled_from(MODELS), min_size=1, max_size=2),
    ),
    all_meters=st.booleans(),
    fold_at=st.integers(0, 25),
    rebuild=st.integers(0, 4),
)
def test_endpoint_equals_oracle(
    acct, db, events, window, tz, span, group, filt, all_meters, fold_at, rebuild
):
    server, key, meters = acct

    def cancel_event(http, formula, ident):
        a = http.post(
            "/v1/billing/meter_event_adjustments",
            data={"event_name": f"ev_{formula}", "type": "cancel", "cancel[identifier]": ident},
        )
        assert a.status_code == 200, a.text

    late = []
    with server.http(key) as http:
        cus = http.post("/v1/customers", data={"name": "prop"}).json()["id"]
        raw: dict[str, list[Event]] = {m: [] for m in meters.values()}
        for i, (ago, value, model, formula, cancel) in enumerate(events):
            if i == fold_at:
                rollups.catch_up(db)
            ident = f"p_{uuid.uuid4().hex}"
            ts = NOW - 60 - ago
            r = http.post(
                "/v1/billing/meter_events",
                data={
                    "event_name": f"ev_{formula}",
                    "payload[stripe_customer_id]": cus,
                    "payload[value]": str(value),
                    "payload[model]": model,
                    "identifier": ident,
                    "timestamp": ts,
                },
            )
            assert r.status_code == 200, r.text
            if cancel == "early":
                cancel_event(http, formula, ident)
            elif cancel == "late":
                late.append((formula, ident))
            else:
                raw[meters[formula]].append(
                    Event(
                        ts,
                        value,
                        i,
                        {"model": model, "stripe_customer_id": cus, "value": str(value)},
                    )
                )
        start = NOW - 31 * DAY + span[0] * 60
        end = min(start + span[1] * 60, NOW + 60)
        if end <= start:
            end = start + 60
        params = [
            ("customer", cus),
            ("start_time", str(start)),
            ("end_time", str(end)),
            ("timezone", tz),
        ]
        if window:
            params.append(("value_grouping_window", window))
        group_by = {m: ["model"] for m in meters.values()} if group else {}
        filters = {}
        if not all_meters:
            for i, m in enumerate(meters.values()):
                params.append((f"meters[{i}][meter_id]", m))
                if group:
                    params.append((f"meters[{i}][dimension_group_by_keys][0]", "model"))
                if isinstance(filt, str):
                    params.append((f"meters[{i}][dimension_filters][model]", filt))
                    filters[m] = {"model": filt}
                elif isinstance(filt, list):
                    for j, v in enumerate(filt):
                        params.append((f"meters[{i}][dimension_filters][model][{j}]", v))
                    filters[m] = {"model": filt}
        else:
            group_by = {}
        if fold_at >= len(events):
            rollups.catch_up(db)
        for formula, ident in late:
            cancel_event(http, formula, ident)
        r = query(http, params)
        assert r.status_code == 200, r.text
        body = r.json()
        if rebuild == 0:  # drop the rollups and build them again: the same answer
            rollups.rebuild(db)
            again = query(http, params)
            assert again.status_code == 200 and again.json()["data"] == body["data"]
    expected_meters = (
        raw
        if not all_meters
        else {m: ev for m, ev in raw.items() if any(start <= e.timestamp < end for e in ev)}
    )
    formulas = {m: f for f, m in meters.items()}
    want = usage_rows(expected_meters, formulas, start, end, window, tz, group_by, filters)
    got = body["data"]
    assert [
        (
            x["meter_id"],
            x["bucket_start_time"],
            x["bucket_end_time"],
            x["bucket_value"],
            x["dimensions"],
        )
        for x in got
    ] == [
        (w.meter_id, w.bucket_start_time, w.bucket_end_time, number(w.bucket_value), w.dimensions)
        for w in want
    ]
    assert body["object"] == "billing.analytics.meter_usage" and body["livemode"] is False
    assert NOW - 120 <= body["data_refreshed_at"] <= int(time.time()) + 5


def test_errors(acct):
    server, key, meters = acct
    m = meters["sum"]
    with server.http(key) as http:
        cus = http.post("/v1/customers", data={"name": "err"}).json()["id"]
        base = [("customer", cus), ("start_time", str(NOW - DAY)), ("end_time", str(NOW))]

        def err(params, status, param, code=None):
            r = query(http, params)
            assert r.status_code == status, r.text
            assert_error(r.json(), "invalid_request_error", code=code, param=param)

        err(
            [("start_time", str(NOW - DAY)), ("end_time", str(NOW))],
            400,
            "customer",
            "parameter_missing",
        )
        err([("customer", cus), ("end_time", str(NOW))], 400, "start_time", "parameter_missing")
        err(
            [("customer", cus), ("start_time", str(NOW - DAY + 1)), ("end_time", str(NOW))],
            400,
            "start_time",
        )
        err(
            [("customer", cus), ("start_time", str(NOW - DAY)), ("end_time", str(NOW + 30))],
            400,
            "end_time",
        )
        err([("customer", cus), ("start_time", str(NOW)), ("end_time", str(NOW))], 400, "end_time")
        err(base + [("timezone", "Mars/Olympus")], 400, "timezone")
        err(base + [("value_grouping_window", "fortnight")], 400, "value_grouping_window")
        err(
            [
                ("customer", cus),
                ("start_time", str(NOW - 3000 * DAY)),
                ("end_time", str(NOW)),
                ("value_grouping_window", "hour"),
            ],
            400,
            "value_grouping_window",
        )
        err(
            base
            + [("meters[0][meter_id]", m), ("meters[0][dimension_group_by_keys][0]", "region")],
            400,
            "meters[0][dimension_group_by_keys][0]",
        )
        err(
            base + [("meters[0][meter_id]", m), ("meters[0][dimension_filters][region]", "eu")],
            400,
            "meters[0][dimension_filters][region]",
        )
        err(
            [("customer", "cus_nobody"), ("start_time", str(NOW - DAY)), ("end_time", str(NOW))],
            404,
            "customer",
            "resource_missing",
        )
        err(
            base + [("meters[0][meter_id]", "mtr_nobody")],
            404,
            "meters[0][meter_id]",
            "resource_missing",
        )
        err(base + [("meters[0][meter]", m)], 400, "meters[0][meter_id]", "parameter_missing")


def test_preview_shape_through_the_sdk_raw_request(acct):
    """The SDK sends its pinned version (2026-10-28.endive, later than 2025-09-30.preview), so it
    gets Stripe's renamed shape; the seed's names are refused with a pointer to the new ones."""
    server, key, meters = acct
    client = server.client(key)
    cus = client.v1.customers.create({"name": "sdk"}).id
    client.v1.billing.meter_events.create(
        {
            "event_name": "ev_sum",
            "payload": {"stripe_customer_id": cus, "value": "1500", "model": "gpt-4"},
            "timestamp": NOW - 3600,
        }
    )
    resp = client.raw_request(
        "get",
        "/v1/billing/analytics/meter_usage",
        customer=cus,
        starts_at=NOW - DAY,
        ends_at=NOW,
        value_grouping_window="day",
        timezone="America/New_York",
        meters=[{"meter": meters["sum"], "dimension_group_by_keys": ["model"]}],
    )
    body = client.deserialize(resp, api_mode="V1")._to_dict_recursive()
    assert_matches(body, "billing.analytics.meter_usage", spec="preview")
    rows = body["rows"]["data"]
    assert sum(r["value"] for r in rows) == 1500
    assert all(r["dimensions"] == {"model": "gpt-4"} and r["meter"] == meters["sum"] for r in rows)
    assert (
        body["rows"]["url"] == "/v1/billing/analytics/meter_usage"
        and body["rows"]["has_more"] is False
    )
    with server.http(key) as http:
        r = http.get(
            "/v1/billing/analytics/meter_usage",
            params={"customer": cus, "start_time": NOW - DAY, "end_time": NOW},
            headers={"Stripe-Version": "2025-09-30.preview"},
        )
        assert r.status_code == 400
        assert_error(r.json(), "invalid_request_error", code="parameter_missing", param="starts_at")
        seed = http.get(
            "/v1/billing/analytics/meter_usage",
            params={
                "customer": cus,
                "start_time": NOW - DAY,
                "end_time": NOW,
                "meters[0][meter_id]": meters["sum"],
            },
            headers={"Stripe-Version": "2025-03-31.basil"},
        )
        assert seed.status_code == 200 and seed.json()["data"][0]["bucket_value"] == 1500
