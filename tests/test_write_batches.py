"""Concurrent writes share one transaction, and each request stays all-or-nothing.

The pipeline runs the write requests that arrive together as one batch (one commit). These tests
drive a batch directly on a real database: a request that fails, before or after writing,
leaves nothing, the others commit, and idempotency keys behave inside a batch as across them.
"""

from __future__ import annotations

import orjson
import pytest

from inprocess import fresh_app
from meterline.api.app import MeterlineApp
from meterline.services import accounts
from meterline.services.customers import create as create_customer
from meterline.store.repo import Scope
from meterline.wire.errors import StripeError

CALLS = {"n": 0}


def _write_then_boom(call):
    CALLS["n"] += 1
    call.params.read.update(call.params.data)
    create_customer(call.repo, {"name": call.params.data.get("name")}, {})
    raise RuntimeError("boom after a write")


@pytest.fixture(scope="module")
def app_and_scope(db_kind, tmp_path_factory):
    app, key, drop = fresh_app(db_kind, tmp_path_factory.mktemp("batch"))
    app.router.add("POST", "/v1/test_write_then_boom", _write_then_boom)
    acct, livemode = accounts.resolve_key(app.db, key)
    yield app, Scope(acct, livemode)
    app._writer.shutdown()
    app.db.dispose()
    drop()


def _job(app: MeterlineApp, scope: Scope, path: str, body: bytes, key: str | None = None):
    route, params, _ = app.router.match("POST", path)
    headers = {"content-type": "application/x-www-form-urlencoded"}
    if key:
        headers["idempotency-key"] = key
    return app._prepare(route, params, scope, "POST", path, b"", body, headers, "req_test", "v")


def _names(app: MeterlineApp, scope: Scope) -> list[str]:
    route, params, _ = app.router.match("GET", "/v1/customers")
    _, body, _ = app._execute(
        route, params, scope, "GET", "/v1/customers", b"limit=100", b"", {}, "req_t", "v"
    )
    return [c["name"] for c in orjson.loads(body)["data"]]


def test_a_failure_after_a_write_leaves_nothing_and_the_rest_commit(app_and_scope):
    app, scope = app_and_scope
    before = CALLS["n"]
    results = app._write_batch(
        [
            _job(app, scope, "/v1/customers", b"name=batch-a"),
            _job(app, scope, "/v1/test_write_then_boom", b"name=batch-b"),
            _job(app, scope, "/v1/customers", b"name=batch-c"),
        ]
    )
    assert results[0][0] == 200 and results[2][0] == 200
    assert getattr(results[1], "status", None) == 500
    assert CALLS["n"] == before + 1  # the failed request ran once, not once per attempt
    names = _names(app, scope)
    assert "batch-a" in names and "batch-c" in names and "batch-b" not in names


def test_a_refused_request_leaves_the_others(app_and_scope):
    app, scope = app_and_scope
    results = app._write_batch(
        [
            _job(app, scope, "/v1/customers", b"name=refused-a"),
            _job(app, scope, "/v1/customers", b"name=refused-b&bogus=1"),
            _job(app, scope, "/v1/customers", b"name=refused-c"),
        ]
    )
    assert isinstance(results[1], StripeError) and results[1].param == "bogus"
    names = _names(app, scope)
    assert "refused-a" in names and "refused-c" in names and "refused-b" not in names


def test_one_key_twice_in_a_batch_runs_once(app_and_scope):
    app, scope = app_and_scope
    results = app._write_batch(
        [
            _job(app, scope, "/v1/customers", b"name=twice", key="k-twice"),
            _job(app, scope, "/v1/customers", b"name=twice", key="k-twice"),
            _job(app, scope, "/v1/customers", b"name=other", key="k-twice"),
        ]
    )
    assert results[0][1] == results[1][1]
    assert dict(results[1][2])[b"idempotent-replayed"] == b"true"
    assert isinstance(results[2], StripeError) and results[2].type == "idempotency_error"
    assert _names(app, scope).count("twice") == 1
    # and in a later batch, the stored response replays
    later = app._write_batch([_job(app, scope, "/v1/customers", b"name=twice", key="k-twice")])
    assert later[0][1] == results[0][1]
    assert _names(app, scope).count("twice") == 1


def test_creates_of_a_batch_are_stored_and_replay(app_and_scope):
    """On PostgreSQL the customers of consecutive creates go in one held-back statement."""
    app, scope = app_and_scope
    jobs = [
        _job(app, scope, "/v1/customers", f"name=many-{i}".encode(), key=f"k-many-{i}")
        for i in range(5)
    ]
    results = app._write_batch(jobs)
    assert all(r[0] == 200 for r in results)
    ids = [orjson.loads(r[1])["id"] for r in results]
    assert len(set(ids)) == 5
    names = _names(app, scope)
    assert all(f"many-{i}" in names for i in range(5))
    again = app._write_batch(
        [
            _job(app, scope, "/v1/customers", f"name=many-{i}".encode(), key=f"k-many-{i}")
            for i in range(5)
        ]
    )
    assert [r[1] for r in again] == [r[1] for r in results]
    assert _names(app, scope).count("many-0") == 1


def test_a_held_back_insert_that_fails_leaves_the_others(app_and_scope, monkeypatch):
    """Two creates that draw the same id: the second insert fails (at the batch's end where
    inserts are held back), the batch runs again one savepoint per request, the first stays."""
    app, scope = app_and_scope
    monkeypatch.setattr("meterline.services.customers.new_id", lambda prefix, n=24: "cus_samedrawn")
    results = app._write_batch(
        [
            _job(app, scope, "/v1/customers", b"name=drawn-a", key="k-drawn-a"),
            _job(app, scope, "/v1/customers", b"name=drawn-b", key="k-drawn-b"),
        ]
    )
    assert results[0][0] == 200 and orjson.loads(results[0][1])["id"] == "cus_samedrawn"
    assert getattr(results[1], "status", None) == 500
    names = _names(app, scope)
    assert "drawn-a" in names and "drawn-b" not in names


def test_a_meter_changed_inside_a_batch_is_seen_by_the_batch_s_later_events(app_and_scope):
    """Meters are looked up once per write transaction (every event of a batch needs its
    meter); a meter deactivated by an earlier request of the same batch refuses the later
    events, and one reactivated lets them in, also when a request that fails after writing
    makes the batch run again with a savepoint per request."""
    import secrets

    app, scope = app_and_scope
    name = f"tok_{secrets.token_hex(4)}"
    meter_body = f"display_name=t&event_name={name}&default_aggregation[formula]=sum".encode()
    (meter,) = app._write_batch([_job(app, scope, "/v1/billing/meters", meter_body)])
    mid = orjson.loads(meter[1])["id"]
    (cus,) = app._write_batch([_job(app, scope, "/v1/customers", b"name=m")])
    cid = orjson.loads(cus[1])["id"]

    def event(ident: str):
        body = f"event_name={name}&identifier={ident}&payload[stripe_customer_id]={cid}"
        return _job(app, scope, "/v1/billing/meter_events", body.encode() + b"&payload[value]=1")

    deactivate = _job(app, scope, f"/v1/billing/meters/{mid}/deactivate", b"")
    tag = secrets.token_hex(4)
    results = app._write_batch([event(f"a{tag}"), deactivate, event(f"b{tag}")])
    assert not isinstance(results[0], Exception) and not isinstance(results[1], Exception)
    assert isinstance(results[2], StripeError) and results[2].code == "archived_meter"

    # The last request fails after writing: the batch runs again, one savepoint each.
    reactivate = _job(app, scope, f"/v1/billing/meters/{mid}/reactivate", b"")
    boom = _job(app, scope, "/v1/test_write_then_boom", b"name=x")
    results = app._write_batch([event(f"c{tag}"), reactivate, event(f"d{tag}"), boom])
    assert isinstance(results[0], StripeError) and results[0].code == "archived_meter"
    assert not isinstance(results[1], Exception)
    assert not isinstance(results[2], Exception)  # active again after the reactivation
    assert isinstance(results[3], Exception)


def test_customers_prefetched_for_a_batch_s_events_are_read_again_after_other_requests(
    app_and_scope,
):
    """A batch's v1 events have their customers read in one statement before the batch runs
    (`meter_events.prefetch`); a customer deleted by an earlier request of the same batch
    refuses the later events, another account's customer is never found, and a malformed body
    gets its own refusal."""
    import secrets

    from meterline.services.customers import create as create_customer
    from meterline.store.repo import Repo

    app, scope = app_and_scope
    name = f"pf_{secrets.token_hex(4)}"
    meter_body = f"display_name=t&event_name={name}&default_aggregation[formula]=sum".encode()
    app._write_batch([_job(app, scope, "/v1/billing/meters", meter_body)])
    (cus,) = app._write_batch([_job(app, scope, "/v1/customers", b"name=gone")])
    cid = orjson.loads(cus[1])["id"]
    other_scope = Scope(accounts.create_key(app.db, new_account=True)[0], scope.livemode)
    with app.db.write() as conn:
        foreign = create_customer(Repo(conn, other_scope), {"name": "foreign"}, {})["id"]

    def event(ident: str, customer: str):
        body = f"event_name={name}&identifier={ident}&payload[stripe_customer_id]={customer}"
        return _job(app, scope, "/v1/billing/meter_events", body.encode() + b"&payload[value]=1")

    tag = secrets.token_hex(4)
    delete = app._prepare(
        *app.router.match("DELETE", f"/v1/customers/{cid}")[:2],
        scope, "DELETE", f"/v1/customers/{cid}", b"", b"", {}, "req_test", "v",
    )  # fmt: skip
    malformed = _job(
        app, scope, "/v1/billing/meter_events", f"event_name={name}&payload=x".encode()
    )
    results = app._write_batch(
        [
            event(f"a{tag}", cid),
            event(f"f{tag}", foreign),
            malformed,
            delete,
            event(f"b{tag}", cid),
        ]
    )
    assert not isinstance(results[0], Exception), results[0]
    assert isinstance(results[1], StripeError)
    assert results[1].code == "meter_event_customer_not_found"
    assert isinstance(results[2], StripeError) and results[2].param == "payload"
    assert not isinstance(results[3], Exception), results[3]
    assert isinstance(results[4], StripeError)
    assert results[4].code == "meter_event_customer_not_found"
