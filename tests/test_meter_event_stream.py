"""The v2 meter event stream through the official SDK: sessions (shape, 15 minutes, token kept
only as a digest), session-token auth (expired, unknown, secret keys refused on the stream and
tokens refused elsewhere), the synchronous shape checks, and the asynchronous-style validation:
valid events are stored, invalid ones are left out and counted in error reports."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from datetime import datetime
from decimal import Decimal

import httpx
import pytest
import sqlalchemy as sa
import stripe

from meterline.store.db import Database
from openapi_check import assert_error, assert_matches

DAY = 86400


def uid(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def rfc3339(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def sql(server, query: str, **params) -> list:
    db = Database(server.database_url)
    try:
        with db.write() as conn:
            result = conn.execute(sa.text(query), params)
            return result.all() if result.returns_rows else []
    finally:
        db.dispose()


@pytest.fixture
def acct(server):
    """A fresh account: a customer, a sum meter, an inactive meter, and the key's client."""
    key = server.new_key(new_account=True)
    client = server.client(key)
    customer = client.v1.customers.create({"name": "streamed"}).id
    meter = client.v1.billing.meters.create(
        {"display_name": "Calls", "event_name": "calls", "default_aggregation": {"formula": "sum"}}
    ).id
    old = client.v1.billing.meters.create(
        {
            "display_name": "Old",
            "event_name": "old_calls",
            "default_aggregation": {"formula": "sum"},
        }
    ).id
    client.v1.billing.meters.deactivate(old)
    return key, client, customer, meter, old


def streamer(server, token: str) -> stripe.StripeClient:
    return stripe.StripeClient(
        token,
        base_addresses={"api": server.base_url, "meter_events": server.base_url},
        max_network_retries=0,
    )


def send(server, client, events: list[dict]) -> None:
    session = client.v2.billing.meter_event_session.create()
    assert (
        streamer(server, session.authentication_token).v2.billing.meter_event_stream.create(
            {"events": events}
        )
        is None
    )


def stored(server, customer: str) -> dict[str, Decimal]:
    server.wait_drained()
    rows = sql(server, "SELECT id, value FROM meter_events WHERE customer = :c", c=customer)
    return {ident: Decimal(str(value)) for ident, value in rows}


def reports(server, account: str) -> dict[str | None, tuple]:
    rows = sql(
        server,
        "SELECT meter, counts, samples, validation_start, validation_end, request_id "
        "FROM meter_event_error_reports WHERE account_id = :a",
        a=account,
    )
    out = {}
    for meter, counts, samples, start, end, rid in rows:
        if isinstance(counts, str):  # SQLite hands JSON back as text through sa.text
            counts, samples = json.loads(counts), json.loads(samples)
        out[meter] = (counts, samples, start, end, rid)
    return out


def account_of(server, customer: str) -> str:
    ((account,),) = sql(server, "SELECT account_id FROM customers WHERE id = :c", c=customer)
    return account


def test_session_shape_lifetime_and_token_digest(server, acct):
    key, client, *_ = acct
    before = int(time.time())
    session = client.v2.billing.meter_event_session.create()
    assert_matches(session._to_dict_recursive(), "v2.billing.meter_event_session")
    assert session.id.startswith("mes_") and session.livemode is False
    created = datetime.fromisoformat(session.created.replace("Z", "+00:00")).timestamp()
    expires = datetime.fromisoformat(session.expires_at.replace("Z", "+00:00")).timestamp()
    assert before - 1 <= created <= time.time() + 1
    assert expires - created == 15 * 60
    token = session.authentication_token
    ((digest, expires_at),) = sql(
        server,
        "SELECT token_hash, expires_at FROM meter_event_sessions WHERE id = :i",
        i=session.id,
    )
    assert digest == hashlib.sha256(token.encode()).hexdigest() and expires_at == expires
    # The SDK sent an Idempotency-Key; the response (with the token) was not stored for replay.
    ((account,),) = sql(
        server, "SELECT account_id FROM meter_event_sessions WHERE id = :i", i=session.id
    )
    responses = sql(
        server,
        "SELECT response FROM idempotency_keys WHERE account_id = :a AND response IS NOT NULL",
        a=account,
    )
    assert not any(token.encode() in bytes(r) for (r,) in responses)
    # Two sessions, two tokens, even under one Idempotency-Key.
    with server.http(key) as http:
        h = {"Idempotency-Key": uid("k")}
        a = http.post("/v2/billing/meter_event_session", headers=h)
        b = http.post("/v2/billing/meter_event_session", headers=h)
    assert a.status_code == b.status_code == 200
    assert a.json()["authentication_token"] != b.json()["authentication_token"]
    assert "idempotent-replayed" not in b.headers


def test_mixed_batch_stores_the_valid_events_and_reports_the_rest(server, acct):
    key, client, cus, meter, old = acct
    now = int(time.time())
    ok = [
        {"event_name": "calls", "payload": {"stripe_customer_id": cus, "value": v}}
        | ({"identifier": f"ok{i}_{uid('e')}"})
        | ({"timestamp": rfc3339(now - 120 - i)} if i else {})
        for i, v in enumerate(["1", "2.5", "-0.25", "10"])
    ]
    bad = [
        ("no_meter", {"event_name": "nothing", "payload": {"stripe_customer_id": cus}}),
        ("no_meter", {"event_name": "nothing", "payload": {"stripe_customer_id": cus}}),
        ("archived_meter", {"event_name": "old_calls", "payload": {"stripe_customer_id": cus}}),
        ("meter_event_no_customer_defined", {"event_name": "calls", "payload": {"value": "1"}}),
        (
            "meter_event_customer_not_found",
            {"event_name": "calls", "payload": {"stripe_customer_id": "cus_nope", "value": "1"}},
        ),
        (
            "meter_event_value_too_many_digits",
            {"event_name": "calls", "payload": {"stripe_customer_id": cus, "value": "1" * 16}},
        ),
        (
            "timestamp_too_far_in_past",
            {
                "event_name": "calls",
                "payload": {"stripe_customer_id": cus, "value": "1"},
                "timestamp": rfc3339(now - 36 * DAY),
            },
        ),
        (
            "timestamp_in_future",
            {
                "event_name": "calls",
                "payload": {"stripe_customer_id": cus, "value": "1"},
                "timestamp": rfc3339(now + 3600),
            },
        ),
    ] + [
        (
            "meter_event_invalid_value",
            {
                "event_name": "calls",
                "payload": {"stripe_customer_id": cus, "value": v},
                "identifier": f"bad{i}_{uid('e')}",
            },
        )
        for i, v in enumerate(["abc", "1,5", "", "1e", "--1", "NaN", "0x10"])
    ]
    events = []
    for i in range(max(len(ok), len(bad))):  # interleaved: no event depends on its neighbours
        events += ok[i : i + 1] + [ev for _, ev in bad[i : i + 1]]
    assert len(events) == 19
    send(server, client, events)

    got = stored(server, cus)
    assert got == {ev["identifier"]: Decimal(ev["payload"]["value"]) for ev in ok}

    start = (now // 60) * 60 - 3600
    with server.http(key) as http:
        usage = http.get(
            "/v1/billing/analytics/meter_usage",
            params={"customer": cus, "start_time": start, "end_time": start + 7200},
        )
    assert usage.status_code == 200, usage.text
    (row,) = usage.json()["data"]
    assert row["meter_id"] == meter and Decimal(str(row["bucket_value"])) == Decimal("13.25")

    found = reports(server, account_of(server, cus))
    assert set(found) == {meter, old, None}
    counts, samples, vstart, vend, rid = found[meter]
    assert counts == {
        "meter_event_no_customer_defined": 1,
        "meter_event_customer_not_found": 1,
        "meter_event_value_too_many_digits": 1,
        "timestamp_too_far_in_past": 1,
        "timestamp_in_future": 1,
        "meter_event_invalid_value": 7,
    }
    assert len(samples["meter_event_invalid_value"]) == 5  # at most 5 samples per code
    assert [s["identifier"] for s in samples["meter_event_invalid_value"]] == [
        ev["identifier"] for _, ev in bad[8:13]
    ]
    assert all(s["error_message"] for ss in samples.values() for s in ss)
    assert "cus_nope" in samples["meter_event_customer_not_found"][0]["error_message"]
    assert now - 5 <= vstart <= vend <= time.time() + 5 and rid.startswith("req_")
    assert found[old][0] == {"archived_meter": 1}
    assert found[None][0] == {"no_meter": 2} and len(found[None][1]["no_meter"]) == 2
    assert {r[4] for r in found.values()} == {rid}  # all from the one request


def test_a_batch_without_errors_writes_no_report(server, acct):
    _, client, cus, *_ = acct
    send(server, client, [])  # nothing to do, and no error
    send(
        server,
        client,
        [{"event_name": "calls", "payload": {"stripe_customer_id": cus, "value": "3"}}] * 3,
    )
    assert sorted(stored(server, cus).values()) == [3, 3, 3]  # generated identifiers, all kept
    assert reports(server, account_of(server, cus)) == {}


def test_duplicate_identifiers_are_stored_once(server, acct):
    _, client, cus, *_ = acct
    ident = uid("dup")
    events = [
        {
            "event_name": "calls",
            "payload": {"stripe_customer_id": cus, "value": v},
            "identifier": ident,
        }
        for v in ("4", "5", "6")
    ]
    send(server, client, events)
    send(server, client, events)  # a retried request adds nothing either
    assert stored(server, cus) == {ident: Decimal("4")}
    assert reports(server, account_of(server, cus)) == {}  # a duplicate is not an error


def test_expired_session(server, acct):
    _, client, cus, *_ = acct
    session = client.v2.billing.meter_event_session.create()
    sql(
        server,
        "UPDATE meter_event_sessions SET created = created - 901, expires_at = expires_at - 901 "
        "WHERE id = :i",
        i=session.id,
    )
    ev = {"event_name": "calls", "payload": {"stripe_customer_id": cus, "value": "1"}}
    with pytest.raises(stripe.TemporarySessionExpiredError) as e:
        streamer(server, session.authentication_token).v2.billing.meter_event_stream.create(
            {"events": [ev]}
        )
    assert e.value.http_status == 401 and e.value.code == "billing_meter_event_session_expired"
    err = e.value.json_body["error"]
    assert err["type"] == "temporary_session_expired" and "expired" in err["message"]
    assert stored(server, cus) == {}
    # A fresh session works again.
    send(server, client, [ev])
    assert len(stored(server, cus)) == 1


def test_auth_is_refused_across_kinds(server, acct):
    key, client, cus, *_ = acct
    ev = {"event_name": "calls", "payload": {"stripe_customer_id": cus, "value": "1"}}
    # A secret key on the stream.
    with pytest.raises(stripe.AuthenticationError) as e:
        streamer(server, key).v2.billing.meter_event_stream.create({"events": [ev]})
    assert e.value.http_status == 401 and "session" in e.value.json_body["error"]["message"]
    # An unknown token on the stream.
    with pytest.raises(stripe.AuthenticationError):
        streamer(server, "mes_token_" + "x" * 48).v2.billing.meter_event_stream.create(
            {"events": [ev]}
        )
    # A session token elsewhere (v1 and v2, reads and writes).
    token = client.v2.billing.meter_event_session.create().authentication_token
    other = streamer(server, token)
    for call in (
        lambda: other.v1.customers.list(),
        lambda: other.v2.billing.meter_events.create(ev),
        lambda: other.v2.billing.meter_event_session.create(),
    ):
        with pytest.raises(stripe.AuthenticationError) as e:
            call()
        assert e.value.http_status == 401
        assert_error(e.value.json_body, "invalid_request_error")
        assert "meter_event_stream" in e.value.json_body["error"]["message"]
    # No header at all.
    r = httpx.post(server.base_url + "/v2/billing/meter_event_stream", json={"events": [ev]})
    assert r.status_code == 401
    assert stored(server, cus) == {}


def test_shape_errors_are_synchronous_and_store_nothing(server, acct):
    _, client, cus, *_ = acct
    token = client.v2.billing.meter_event_session.create().authentication_token
    good = {"event_name": "calls", "payload": {"stripe_customer_id": cus, "value": "1"}}

    with pytest.raises(stripe.InvalidRequestError) as e:
        streamer(server, token).v2.billing.meter_event_stream.create({"events": [good] * 101})
    assert e.value.http_status == 400
    assert_error(e.value.json_body, "invalid_request_error", "parameter_invalid", "events")

    cases = [
        (b"[1, 2]", None),
        (b'{"event": []}', "events"),
        (b"{}", "events"),
        (b'{"events": "calls"}', "events"),
        (b'{"events": {"0": {}}}', "events"),
        (b'{"events": [GOOD, 7]}', "events[1]"),
        (b'{"events": [GOOD, {"payload": {}}]}', "events[1][event_name]"),
        (b'{"events": [GOOD, {"event_name": "calls", "payload": {"value": 1}}]}', None),
        (b'{"events": [GOOD, {"event_name": "calls", "payload": {}, "extra": 1}]}', None),
        (b'{"events": [GOOD, {"event_name": "calls", "payload": {}, "timestamp": "now"}]}', None),
        (
            b'{"events": [GOOD, {"event_name": "calls", "payload": {}, "timestamp": 1}]}',
            "events[1][timestamp]",
        ),
    ]
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        for body, param in cases:
            r = http.post(
                "/v2/billing/meter_event_stream",
                content=body.replace(b"GOOD", json.dumps(good).encode()),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            assert r.status_code == 400, (body, r.text)
            assert_error(r.json(), "invalid_request_error", param=param)
        ok = http.post(
            "/v2/billing/meter_event_stream",
            json={"events": [good]},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert (ok.status_code, ok.json()) == (200, {})
    assert len(stored(server, cus)) == 1  # only the last request's event
    assert reports(server, account_of(server, cus)) == {}


def test_a_customer_deleted_or_a_meter_deactivated_after_earlier_requests_refuses_events(
    server, acct
):
    """Workers remember the customers and meters that the stream's validation found (SQLite:
    while nothing was updated or deleted since); a deletion or a deactivation after many
    accepted requests, on both workers, is seen by the next request at once."""
    _, client, cus, meter, _ = acct

    def codes(server, customer: str) -> dict[str, int]:
        """Refusals per code over all the account's error reports."""
        rows = sql(
            server,
            "SELECT counts FROM meter_event_error_reports WHERE account_id = :a",
            a=account_of(server, customer),
        )
        out: dict[str, int] = {}
        for (counts,) in rows:
            for code, n in (json.loads(counts) if isinstance(counts, str) else counts).items():
                out[code] = out.get(code, 0) + n
        return out

    gone = client.v1.customers.create({"name": "to delete"}).id
    for _ in range(6):  # several requests: both workers validate (and remember) both customers
        send(
            server,
            client,
            [
                {"event_name": "calls", "payload": {"stripe_customer_id": c, "value": "1"}}
                for c in (cus, gone)
            ],
        )
    assert len(stored(server, gone)) == 6
    client.v1.customers.delete(gone)
    for _ in range(4):
        send(
            server,
            client,
            [{"event_name": "calls", "payload": {"stripe_customer_id": gone, "value": "1"}}],
        )
    assert len(stored(server, gone)) == 6  # nothing more
    assert codes(server, cus) == {"meter_event_customer_not_found": 4}

    client.v1.billing.meters.deactivate(meter)
    for _ in range(4):
        send(
            server,
            client,
            [{"event_name": "calls", "payload": {"stripe_customer_id": cus, "value": "1"}}],
        )
    assert len(stored(server, cus)) == 6
    assert codes(server, cus) == {"meter_event_customer_not_found": 4, "archived_meter": 4}
