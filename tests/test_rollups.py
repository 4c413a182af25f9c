"""Usage rollups: folded cells answer like raw events, cancels reach folded cells at once, and
`meterline rollups rebuild` gives back the very same cells.

A dense customer (an event every 20 seconds for two days, two models) on a sum meter: after the
builder folds it, the quarter-hour and hour cells hold what the raw events say; the analytics
answer (which then reads cells, raw edges and the raw tail) equals the brute-force oracle; a
cancel of a folded event is reflected before the builder runs and after; and a rebuild from
nothing, through the command line with its progress output, reproduces the cells row for row.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import time
import uuid
from decimal import Decimal

import httpx
import pytest
import sqlalchemy as sa

from conftest import MELINE
from meterline.api.analytics import number
from meterline.engine.aggregate import Event, usage_rows
from meterline.services import rollups
from meterline.store.db import Database
from meterline.store.tables import meter_event_cancels, meter_usage_rollups

NOW = (int(time.time()) // 3600) * 3600
STEP = 20
SPAN = 2 * 86_400


@pytest.fixture(scope="module")
def db(server):
    d = Database(server.database_url)
    yield d
    d.dispose()


@pytest.fixture(scope="module")
def dense(server, db):
    """A new account with a sum meter and a customer with an event every 20 s for two days."""
    key = server.new_key(new_account=True)
    with server.http(key) as http:
        meter = http.post(
            "/v1/billing/meters",
            data={
                "display_name": "tokens",
                "event_name": "tokens",
                "default_aggregation[formula]": "sum",
                "dimension_payload_keys[0]": "model",
            },
        ).json()["id"]
        cus = http.post("/v1/customers", data={"name": "dense"}).json()["id"]
        session = http.post("/v2/billing/meter_event_session", json={}).json()
        token = session["authentication_token"]
    events: list[Event] = []
    body: list[dict] = []
    start = NOW - SPAN - 3600
    with httpx.Client(base_url=server.base_url, timeout=30) as h:
        for i, ts in enumerate(range(start, start + SPAN, STEP)):
            value = Decimal(i % 7) - Decimal("1.5")
            model = "a" if i % 3 else "b"
            ident = f"d_{uuid.uuid4().hex}"
            iso = dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")
            body.append(
                {
                    "event_name": "tokens",
                    "identifier": ident,
                    "timestamp": iso,
                    "payload": {"stripe_customer_id": cus, "value": str(value), "model": model},
                }
            )
            events.append(
                Event(
                    ts,
                    value,
                    i,
                    {"model": model},
                )
            )
            if len(body) == 100:
                r = h.post(
                    "/v2/billing/meter_event_stream",
                    json={"events": body},
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert r.status_code == 200, r.text
                body = []
        if body:
            r = h.post(
                "/v2/billing/meter_event_stream",
                json={"events": body},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert r.status_code == 200, r.text
    server.wait_drained()  # the stream's events reach meter_events a moment after their 200
    return server, key, meter, cus, events, start


def cells(db: Database, customer: str) -> list[tuple]:
    t = meter_usage_rollups.c
    with db.read() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                sa.select(meter_usage_rollups)
                .where(t.customer == customer)
                .order_by(t.meter, t.resolution, t.bucket, t.dims)
            )
        ]


def analytics(server, key, meter, cus, start, end, window, tz):
    with server.http(key) as http:
        r = http.get(
            "/v1/billing/analytics/meter_usage",
            params={
                "customer": cus,
                "start_time": start,
                "end_time": end,
                "value_grouping_window": window,
                "timezone": tz,
                "meters[0][meter_id]": meter,
                "meters[0][dimension_group_by_keys][0]": "model",
            },
        )
    assert r.status_code == 200, r.text
    return [
        (x["bucket_start_time"], x["bucket_end_time"], x["bucket_value"], x["dimensions"])
        for x in r.json()["data"]
    ]


def oracle(events, meter, start, end, window, tz):
    rows = usage_rows({meter: events}, {meter: "sum"}, start, end, window, tz, {meter: ["model"]})
    return [
        (w.bucket_start_time, w.bucket_end_time, number(w.bucket_value), w.dimensions) for w in rows
    ]


QUERIES = [
    ("hour", "Asia/Kolkata", 7 * 60, 17 * 60),
    ("day", "America/New_York", 0, 0),
    ("hour", "Asia/Kathmandu", 60, 3 * 60),
    ("day", "UTC", 13 * 60, 29 * 60),
]


def test_folded_cells_answer_like_raw_events(dense, db):
    server, key, meter, cus, events, start = dense
    rollups.catch_up(db)
    stored = cells(db, cus)
    hours = {r[5] for r in stored if r[4] == 3600}
    quarters = {r[5] for r in stored if r[4] == 900}
    assert len(hours) == SPAN // 3600 and len(quarters) == SPAN // 900
    # Each hour cell holds the partial of exactly its raw events, per model.
    for row in stored:
        _, _, _, _, res, bucket, dims, s, count, last_ts, _, last_value = row
        model = dims.strip('[]"')
        inside = [
            e
            for e in events
            if bucket <= e.timestamp < bucket + res and e.dimensions["model"] == model
        ]
        assert count == len(inside) and Decimal(s) == sum(e.value for e in inside)
        assert last_ts == max(e.timestamp for e in inside)
        assert Decimal(last_value) == max(inside, key=lambda e: e.timestamp).value
    for window, tz, head, tail in QUERIES:
        s, e = start + head, start + SPAN - tail
        assert analytics(server, key, meter, cus, s, e, window, tz) == oracle(
            events, meter, s, e, window, tz
        )


def test_a_cancel_reaches_folded_cells_at_once(dense, db):
    server, key, meter, cus, events, start = dense
    rollups.catch_up(db)
    victim_ts = start + 5 * 3600 + 7 * 60 + 40  # inside an hour and a quarter cell
    victim = next(e for e in events if e.timestamp == victim_ts)
    with db.read() as conn:
        ident = conn.execute(
            sa.text("SELECT id FROM meter_events WHERE customer = :c AND timestamp = :t"),
            {"c": cus, "t": victim_ts},
        ).scalar_one()
    # No folding from the server during the check below would change its outcome (answers are
    # exact either way); this makes the cancelled event a folded one.
    with server.http(key) as http:
        r = http.post(
            "/v1/billing/meter_event_adjustments",
            data={"event_name": "tokens", "type": "cancel", "cancel[identifier]": ident},
        )
        assert r.status_code == 200, r.text
    kept = [e for e in events if e is not victim]
    s, e = start, start + SPAN
    want = oracle(kept, meter, s, e, "hour", "Asia/Kolkata")
    assert analytics(server, key, meter, cus, s, e, "hour", "Asia/Kolkata") == want
    rollups.catch_up(db)
    with db.read() as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(meter_event_cancels)).scalar() == 0
        )
    assert analytics(server, key, meter, cus, s, e, "hour", "Asia/Kolkata") == want
    dense[4][:] = kept


def test_rebuild_gives_the_same_cells(dense, db):
    server, key, meter, cus, events, start = dense
    rollups.catch_up(db)
    before = cells(db, cus)
    with db.write() as conn:
        conn.execute(meter_usage_rollups.delete())
    assert cells(db, cus) == []
    s, e = start, start + SPAN
    # Without cells (and a watermark saying they are there), answers would be wrong: the
    # rebuild restores them.
    out = subprocess.run(
        [*MELINE, "rollups", "rebuild", "--database-url", server.database_url],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "Rebuilt the rollups from" in out.stdout
    assert cells(db, cus) == before
    for window, tz, head, tail in QUERIES:
        s, e = start + head, start + SPAN - tail
        assert analytics(server, key, meter, cus, s, e, window, tz) == oracle(
            events, meter, s, e, window, tz
        )


def test_pre_aggregated_meter_counts_the_latest_event_of_a_window_cut_by_the_range(server):
    key = server.new_key(new_account=True)
    hour = NOW - 5 * 3600
    with server.http(key) as http:
        r = http.post(
            "/v1/billing/meters",
            data={
                "display_name": "gauge",
                "event_name": "gauge",
                "default_aggregation[formula]": "sum",
                "event_time_window": "hour",
            },
        )
        assert r.status_code == 200, r.text
        cus = http.post("/v1/customers", data={"name": "g"}).json()["id"]
        for offset, value in ((600, "7"), (3000, "9")):
            r = http.post(
                "/v1/billing/meter_events",
                data={
                    "event_name": "gauge",
                    "payload[stripe_customer_id]": cus,
                    "payload[value]": value,
                    "timestamp": hour + offset,
                },
            )
            assert r.status_code == 200, r.text

        def usage(s, e):
            r = http.get(
                "/v1/billing/analytics/meter_usage",
                params={"customer": cus, "start_time": s, "end_time": e},
            )
            assert r.status_code == 200, r.text
            return [x["bucket_value"] for x in r.json()["data"]]

        # The event at :10 was superseded by the one at :50, even for a range that ends at :30.
        assert usage(hour, hour + 1800) == []
        assert usage(hour + 1800, hour + 3600) == [9]
        assert usage(hour, hour + 3600) == [9]
