"""The stream's group commit: the events of every stream request in a write batch go into the
stream's landing log (`meter_event_inbox`) in one statement before the batch commits, validated
beforehand outside the write transaction, and a drain moves them into `meter_events` in bulk.
These tests hold it to what one transaction per request promised:

- over HTTP on the two-worker server: concurrent requests are all stored, exactly once, and
  each request's events are in the landing log or in `meter_events` the moment its 200 arrives
  (acceptance is durable); once the drain has run, each is in `meter_events` exactly once;
- the same identifiers sent at once by concurrent requests (on both workers) are stored once;
- in a batch driven directly on a real database: invalid events go to their own request's
  report while the valid ones are stored; a request of the wrong shape fails alone; a change
  made earlier in the same batch (a meter deactivated, a customer deleted) is seen by the
  stream request after it, although its validation ran before the transaction; a database
  failure of the shared insert leaves every other request of the batch whole and the failing
  one without any event.
"""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
import orjson
import pytest
import sqlalchemy as sa

from inprocess import fresh_app
from meterline.api.app import MeterlineApp
from meterline.services import accounts
from meterline.services import meter_event_stream as stream_svc
from meterline.store.db import Database
from meterline.store.repo import Scope
from meterline.wire.errors import StripeError


def uid(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def rfc3339(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def event(customer: str, value: str, identifier: str | None = None, **extra) -> dict:
    ev = {"event_name": "gc_calls", "payload": {"stripe_customer_id": customer, "value": value}}
    if identifier is not None:
        ev["identifier"] = identifier
    return ev | extra


# --------------------------------------------------------------------------- over HTTP


@pytest.fixture(scope="module")
def streaming(server):
    """A fresh account with a sum meter `gc_calls`, 20 customers and a session token."""
    key = server.new_key(new_account=True)
    client = server.client(key)
    client.v1.billing.meters.create(
        {"display_name": "GC", "event_name": "gc_calls", "default_aggregation": {"formula": "sum"}}
    )
    customers = [client.v1.customers.create({"name": f"gc{i}"}).id for i in range(20)]
    token = client.v2.billing.meter_event_session.create().authentication_token
    db = Database(server.database_url)
    yield server, customers, token, db
    db.dispose()


def post_stream(server, token: str, events: list[dict]) -> httpx.Response:
    # A new connection per request: uvicorn's two workers share the socket, so requests land
    # on both.
    return httpx.post(
        server.base_url + "/v2/billing/meter_event_stream",
        headers={"Authorization": f"Bearer {token}"},
        json={"events": events},
        timeout=60,
    )


def stored_rows(
    db: Database, ids: list[str], table: str = "meter_events"
) -> list[tuple[str, Decimal]]:
    out = []
    with db.read() as conn:
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            out += [
                (r[0], Decimal(str(r[1])))
                for r in conn.execute(
                    sa.text(f"SELECT id, value FROM {table} WHERE id IN :ids").bindparams(
                        sa.bindparam("ids", expanding=True)
                    ),
                    {"ids": part},
                )
            ]
    return out


def accepted_rows(db: Database, ids: list[str]) -> list[tuple[str, Decimal]]:
    """The events of these ids that are durably accepted: in `meter_events` or still in the
    landing log. One read unit, so that an event the drain moves meanwhile is seen once."""
    with db.read() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT id, value FROM meter_events WHERE id IN :ids UNION ALL "
                "SELECT id, value FROM meter_event_inbox WHERE id IN :ids"
            ).bindparams(sa.bindparam("ids", expanding=True)),
            {"ids": ids},
        ).all()
    return [(r[0], Decimal(str(r[1]))) for r in rows]


def test_concurrent_stream_requests_are_all_stored_once_and_durable_at_the_200(streaming):
    server, customers, token, db = streaming
    run = uid("gc")
    requests = [
        [
            event(customers[(r * 7 + i) % len(customers)], str(r + i), f"{run}-{r}-{i}")
            for i in range(50)
        ]
        for r in range(48)
    ]

    def send(events: list[dict]) -> tuple[int, int]:
        resp = post_stream(server, token, events)
        assert resp.status_code == 200, resp.text
        assert resp.json() == {}
        # Acceptance is durable: every event of the request is stored (in the landing log or
        # already moved) when its 200 arrives.
        seen = accepted_rows(db, [ev["identifier"] for ev in events])
        return len({ident for ident, _ in seen}), len(events)

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(send, requests))
    assert all(found == sent for found, sent in results)
    server.wait_drained()
    every = [ev for events in requests for ev in events]
    rows = stored_rows(db, [ev["identifier"] for ev in every])
    assert len(rows) == len(every) == 48 * 50
    assert dict(rows) == {ev["identifier"]: Decimal(ev["payload"]["value"]) for ev in every}


def test_one_identifier_sent_at_once_by_many_requests_is_stored_once(streaming):
    server, customers, token, db = streaming
    run = uid("same")
    shared = [f"{run}-{i}" for i in range(40)]
    # 24 requests at once, each carrying all 40 identifiers (in its own order, with its own
    # values), on new connections spread over both workers.
    requests = [
        [
            event(customers[i % len(customers)], str(100 * r + i), shared[(i + r) % 40])
            for i in range(40)
        ]
        for r in range(24)
    ]
    with ThreadPoolExecutor(24) as pool:
        statuses = list(pool.map(lambda evs: post_stream(server, token, evs).status_code, requests))
    assert statuses == [200] * 24
    server.wait_drained()
    rows = stored_rows(db, shared)
    assert sorted(ident for ident, _ in rows) == sorted(shared)  # each exactly once
    sent = {(ev["identifier"], Decimal(ev["payload"]["value"])) for evs in requests for ev in evs}
    assert all(row in sent for row in rows)  # one of the values sent with it
    with db.read() as conn:
        (n,) = conn.execute(
            sa.text("SELECT count(*) FROM meter_events WHERE id LIKE :p"), {"p": f"{run}-%"}
        ).one()
    assert n == 40


# --------------------------------------------------------------------------- in a batch


@pytest.fixture(scope="module")
def batch_app(db_kind, tmp_path_factory):
    app, key, drop = fresh_app(db_kind, tmp_path_factory.mktemp("group"))
    acct, livemode = accounts.resolve_key(app.db, key)
    scope = Scope(acct, livemode)
    yield app, scope
    app._writer.shutdown()
    app.db.dispose()
    drop()


def _job(app: MeterlineApp, scope: Scope, path: str, body: bytes, rid: str, json_body=False):
    route, params, _ = app.router.match("POST", path)
    ctype = "application/json" if json_body else "application/x-www-form-urlencoded"
    return app._prepare(
        route, params, scope, "POST", path, b"", body, {"content-type": ctype}, rid, "v"
    )


def _stream_job(app: MeterlineApp, scope: Scope, events: list[dict], rid: str):
    body = orjson.dumps({"events": events})
    return _job(app, scope, "/v2/billing/meter_event_stream", body, rid, json_body=True)


def _one(app: MeterlineApp, scope: Scope, path: str, body: bytes) -> dict:
    (result,) = app._write_batch([_job(app, scope, path, body, "req_setup")])
    assert not isinstance(result, Exception), result
    return orjson.loads(result[1])


def _fetch(app: MeterlineApp, query: str, **params) -> list:
    with app.db.read() as conn:
        rows = conn.execute(sa.text(query), params).all()
    return [tuple(r) for r in rows]


def _values(app: MeterlineApp, customer: str) -> dict[str, Decimal]:
    stream_svc.drain(app.db)  # this app runs no drain thread (no lifespan)
    rows = _fetch(app, "SELECT id, value FROM meter_events WHERE customer = :c", c=customer)
    return {ident: Decimal(str(v)) for ident, v in rows}


def _reports(app: MeterlineApp, rid: str) -> dict:
    out = {}
    for meter, counts in _fetch(
        app,
        "SELECT meter, counts FROM meter_event_error_reports WHERE request_id = :r",
        r=rid,
    ):
        out[meter] = json.loads(counts) if isinstance(counts, str) else counts
    return out


@pytest.fixture
def setup(batch_app):
    """Two customers and a fresh sum meter (its own event name) in the batch app's account."""
    app, scope = batch_app
    name = uid("gcm")
    meter = _one(
        app,
        scope,
        "/v1/billing/meters",
        f"display_name=GC&event_name={name}&default_aggregation[formula]=sum".encode(),
    )["id"]
    a = _one(app, scope, "/v1/customers", b"name=gc-a")["id"]
    b = _one(app, scope, "/v1/customers", b"name=gc-b")["id"]
    return app, scope, name, meter, a, b


def ev(name: str, customer: str, value: str, identifier: str, **extra) -> dict:
    return {
        "event_name": name,
        "payload": {"stripe_customer_id": customer, "value": value},
        "identifier": identifier,
    } | extra


def test_invalid_events_go_to_their_own_requests_report_and_the_valid_ones_are_stored(setup):
    app, scope, name, meter, a, b = setup
    now = int(time.time())
    r1, r2, r3 = uid("req"), uid("req"), uid("req")
    jobs = [
        _stream_job(
            app,
            scope,
            [
                ev(name, a, "1", uid("ok")),
                ev(name, a, "abc", uid("bad")),
                ev(name, "cus_nope", "1", uid("bad")),
            ],
            r1,
        ),
        _stream_job(app, scope, [ev(name, b, "2", uid("ok")), ev(name, b, "3", uid("ok"))], r2),
        _stream_job(
            app,
            scope,
            [
                ev(name, b, "4", uid("ok")),
                ev(name, b, "5", uid("bad"), timestamp=rfc3339(now - 40 * 86400)),
                {"event_name": uid("nothing"), "payload": {"stripe_customer_id": b}},
            ],
            r3,
        ),
    ]
    results = app._write_batch(jobs)
    assert [r[0] for r in results] == [200, 200, 200]
    assert sorted(_values(app, a).values()) == [1]
    assert sorted(_values(app, b).values()) == [2, 3, 4]
    assert _reports(app, r1) == {
        meter: {"meter_event_invalid_value": 1, "meter_event_customer_not_found": 1}
    }
    assert _reports(app, r2) == {}
    assert _reports(app, r3) == {meter: {"timestamp_too_far_in_past": 1}, None: {"no_meter": 1}}


def test_changes_earlier_in_the_batch_are_seen_although_validation_ran_before_it(setup):
    app, scope, name, meter, a, b = setup
    r_meter, r_customer = uid("req"), uid("req")
    jobs = [
        _job(app, scope, f"/v1/billing/meters/{meter}/deactivate", b"", "req_deactivate"),
        _stream_job(app, scope, [ev(name, a, "7", uid("late"))], r_meter),
    ]
    # The validation before the batch saw the meter active.
    results = app._write_batch(jobs)
    assert [r[0] for r in results] == [200, 200]
    assert _values(app, a) == {}
    assert _reports(app, r_meter) == {meter: {"archived_meter": 1}}

    _one(app, scope, f"/v1/billing/meters/{meter}/reactivate", b"")
    route, params, _ = app.router.match("DELETE", f"/v1/customers/{b}")
    delete = app._prepare(
        route, params, scope, "DELETE", f"/v1/customers/{b}", b"", b"", {}, "req_del", "v"
    )
    kept = uid("kept")
    results = app._write_batch(
        [
            _stream_job(app, scope, [ev(name, b, "8", kept)], uid("req")),
            delete,
            _stream_job(app, scope, [ev(name, b, "9", uid("gone"))], r_customer),
        ]
    )
    assert [r[0] for r in results] == [200, 200, 200]
    assert _values(app, b) == {kept: Decimal(8)}  # stored before the delete, in batch order
    assert _reports(app, r_customer) == {meter: {"meter_event_customer_not_found": 1}}


def test_a_database_failure_of_the_shared_insert_fails_only_its_request(setup, db_kind):
    app, scope, name, meter, a, b = setup
    poison = uid("poison")
    with app.db.write() as conn:
        if db_kind == "sqlite":
            conn.exec_driver_sql(
                "CREATE TRIGGER gc_poison BEFORE INSERT ON meter_event_inbox "
                f"WHEN NEW.id = '{poison}' BEGIN SELECT RAISE(ABORT, 'poisoned event'); END"
            )
        else:
            conn.exec_driver_sql(
                "CREATE FUNCTION gc_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF NEW.id = '{poison}' THEN RAISE EXCEPTION 'poisoned event'; END IF; "
                "RETURN NEW; END $$"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER gc_poison BEFORE INSERT ON meter_event_inbox "
                "FOR EACH ROW EXECUTE FUNCTION gc_poison()"
            )
    try:
        first = [ev(name, a, "1", uid("first")), ev(name, b, "2", uid("first"))]
        bad = [ev(name, a, "3", uid("bad")), ev(name, b, "4", poison)]
        last = [ev(name, b, "5", uid("last"))]
        results = app._write_batch(
            [
                _stream_job(app, scope, first, uid("req")),
                _stream_job(app, scope, bad, uid("req")),
                _stream_job(app, scope, last, uid("req")),
            ]
        )
        assert results[0][0] == 200 and results[2][0] == 200
        assert getattr(results[1], "status", None) == 500
        stored = {**_values(app, a), **_values(app, b)}
        assert set(stored) == {e["identifier"] for e in first + last}  # none of the failed one
    finally:
        with app.db.write() as conn:
            conn.exec_driver_sql(
                "DROP TRIGGER gc_poison" + (" ON meter_event_inbox" if db_kind != "sqlite" else "")
            )
            if db_kind != "sqlite":
                conn.exec_driver_sql("DROP FUNCTION gc_poison()")


def test_a_customer_on_a_test_clock_is_validated_at_the_clocks_time(setup):
    app, scope, name, meter, a, b = setup
    frozen = int(time.time()) - 50 * 86400
    clock = _one(app, scope, "/v1/test_helpers/test_clocks", f"frozen_time={frozen}".encode())
    cus = _one(app, scope, "/v1/customers", f"name=clocked&test_clock={clock['id']}".encode())
    on_time, too_new = uid("clock"), uid("clock")
    rid = uid("req")
    results = app._write_batch(
        [
            _stream_job(
                app,
                scope,
                [
                    # within the window at the clock's time, 50 days before the wall clock's
                    ev(name, cus["id"], "1", on_time, timestamp=rfc3339(frozen - 60)),
                    # in the clock's future, though in the wall clock's past
                    ev(name, cus["id"], "2", too_new, timestamp=rfc3339(frozen + 86400)),
                ],
                rid,
            )
        ]
    )
    assert results[0][0] == 200
    assert _values(app, cus["id"]) == {on_time: Decimal(1)}
    assert _reports(app, rid) == {meter: {"timestamp_in_future": 1}}
    ((created,),) = _fetch(app, "SELECT created FROM meter_events WHERE id = :i", i=on_time)
    assert created == frozen


def test_a_shape_error_fails_only_its_request_and_stores_nothing(setup):
    app, scope, name, meter, a, b = setup
    kept = uid("kept")
    results = app._write_batch(
        [
            _stream_job(app, scope, [{"event_name": name, "payload": "nope"}], uid("req")),
            _stream_job(app, scope, [ev(name, a, "1", kept)], uid("req")),
            _stream_job(app, scope, [ev(name, b, "2", uid("gone"))] * 101, uid("req")),
        ]
    )
    assert isinstance(results[0], StripeError) and results[0].status == 400
    assert results[0].param == "events[0][payload]"
    assert results[1][0] == 200
    assert isinstance(results[2], StripeError) and results[2].param == "events"
    assert stream_svc.MAX_EVENTS == 100
    assert _values(app, a) == {kept: Decimal(1)} and _values(app, b) == {}
