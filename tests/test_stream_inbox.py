"""The stream's landing log (`meter_event_inbox`), on a real database, with write batches driven
directly (this app runs no drain thread, so what waits in the inbox stays there until a test
moves it):

- a stream request's events wait in the inbox, `data_refreshed_at` says so, and a drain moves
  them into `meter_events` and empties the inbox;
- work that must see every received event moves the inbox first: a cancel of an event still in
  it, a test clock advance, a billing run;
- an identifier stored already (by v1) is not stored again when the stream's copy is moved;
- one customer's events keep their arrival order in `meter_events.seq` (the latest received
  wins for pre-aggregated meters), though a move sorts by customer;
- a customer deleted, or a meter created, by another transaction between a stream request's
  validation and its write transaction is seen (SQLite: the validation epoch moved, or
  validation met a missing meter; PostgreSQL: the re-read);
- two drains at once move every event exactly once.
"""

from __future__ import annotations

import threading
import time
import uuid
from decimal import Decimal

import orjson
import pytest
import sqlalchemy as sa

from inprocess import fresh_app
from meterline import clock
from meterline.api.app import MeterlineApp
from meterline.services import accounts, due_work, usage
from meterline.services import meter_event_stream as stream_svc
from meterline.store import inbox
from meterline.store.repo import Repo, Scope


def uid(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def inbox_app(db_kind, tmp_path_factory):
    app, key, drop = fresh_app(db_kind, tmp_path_factory.mktemp("inbox"))
    acct, livemode = accounts.resolve_key(app.db, key)
    yield app, Scope(acct, livemode)
    app._writer.shutdown()
    app.db.dispose()
    drop()


def _job(app: MeterlineApp, scope: Scope, method: str, path: str, body: bytes, json_body=False):
    route, params, _ = app.router.match(method, path)
    ctype = "application/json" if json_body else "application/x-www-form-urlencoded"
    return app._prepare(
        route, params, scope, method, path, b"", body, {"content-type": ctype}, uid("req"), "v"
    )


def _one(app: MeterlineApp, scope: Scope, path: str, body: bytes, method: str = "POST") -> dict:
    (result,) = app._write_batch([_job(app, scope, method, path, body)])
    assert not isinstance(result, Exception), result
    return orjson.loads(result[1])


def _stream(app: MeterlineApp, scope: Scope, events: list[dict]) -> None:
    job = _job(
        app,
        scope,
        "POST",
        "/v2/billing/meter_event_stream",
        orjson.dumps({"events": events}),
        json_body=True,
    )
    (result,) = app._write_batch([job])
    assert not isinstance(result, Exception) and result[0] == 200, result


def _fetch(app: MeterlineApp, query: str, **params) -> list[tuple]:
    with app.db.read() as conn:
        return [tuple(r) for r in conn.execute(sa.text(query), params).all()]


def ev(name: str, customer: str, value: str, identifier: str, **extra) -> dict:
    return {
        "event_name": name,
        "payload": {"stripe_customer_id": customer, "value": value},
        "identifier": identifier,
    } | extra


@pytest.fixture
def setup(inbox_app):
    """Two customers and a fresh sum meter (its own event name); the inbox starts empty."""
    app, scope = inbox_app
    stream_svc.drain(app.db)
    name = uid("ibx")
    meter = _one(
        app,
        scope,
        "/v1/billing/meters",
        f"display_name=Inbox&event_name={name}&default_aggregation[formula]=sum".encode(),
    )["id"]
    a = _one(app, scope, "/v1/customers", b"name=inbox-a")["id"]
    b = _one(app, scope, "/v1/customers", b"name=inbox-b")["id"]
    return app, scope, name, meter, a, b


def _stored(app: MeterlineApp, customer: str) -> dict[str, Decimal]:
    rows = _fetch(app, "SELECT id, value FROM meter_events WHERE customer = :c", c=customer)
    return {i: Decimal(str(v)) for i, v in rows}


def _pending(app: MeterlineApp) -> list[str]:
    return [r[0] for r in _fetch(app, "SELECT id FROM meter_event_inbox ORDER BY seq")]


def test_events_wait_in_the_inbox_and_the_drain_moves_them(setup):
    app, scope, name, meter, a, b = setup
    ids = [uid("e") for _ in range(3)]
    _stream(app, scope, [ev(name, a, "1", ids[0]), ev(name, b, "2", ids[1])])
    _stream(app, scope, [ev(name, a, "4", ids[2])])
    assert _pending(app) == ids
    assert _stored(app, a) == {} and _stored(app, b) == {}

    # data_refreshed_at: no later than the oldest pending event's receipt.
    with app.db.write() as conn:
        conn.execute(
            sa.text("UPDATE meter_event_inbox SET created = created - 100 WHERE id = :i"),
            {"i": ids[0]},
        )
    with app.db.read() as conn:
        (received,) = conn.execute(
            sa.text("SELECT created FROM meter_event_inbox WHERE id = :i"), {"i": ids[0]}
        ).one()
        assert usage.refreshed_at(Repo(conn, scope)) == received < clock.now()

    assert stream_svc.drain(app.db) == 3
    assert _pending(app) == []
    assert _stored(app, a) == {ids[0]: Decimal(1), ids[2]: Decimal(4)}
    assert _stored(app, b) == {ids[1]: Decimal(2)}
    with app.db.read() as conn:
        assert usage.refreshed_at(Repo(conn, scope)) >= clock.now() - 1
    assert stream_svc.drain(app.db) == 0


def test_a_cancel_finds_an_event_still_in_the_inbox(setup):
    app, scope, name, meter, a, b = setup
    ident = uid("c")
    _stream(app, scope, [ev(name, a, "5", ident)])
    assert _pending(app) == [ident]
    out = _one(
        app,
        scope,
        "/v1/billing/meter_event_adjustments",
        f"event_name={name}&cancel[identifier]={ident}&type=cancel".encode(),
    )
    assert out["status"] == "complete"
    assert _pending(app) == []
    ((cancelled,),) = _fetch(app, "SELECT cancelled_at FROM meter_events WHERE id = :i", i=ident)
    assert cancelled is not None


def test_a_test_clock_advance_and_a_billing_run_move_the_inbox_first(setup):
    app, scope, name, meter, a, b = setup
    frozen = int(time.time()) - 3600
    tc = _one(app, scope, "/v1/test_helpers/test_clocks", f"frozen_time={frozen}".encode())
    _stream(app, scope, [ev(name, a, "1", uid("t"))])
    assert len(_pending(app)) == 1
    out = _one(
        app,
        scope,
        f"/v1/test_helpers/test_clocks/{tc['id']}/advance",
        f"frozen_time={frozen + 60}".encode(),
    )
    assert out["status"] == "ready"  # no Advancer here: the advance ran in its request
    assert _pending(app) == [] and len(_stored(app, a)) == 1

    # A billing run with nothing due leaves the inbox to the drain (a move holds the write
    # lock); one with an invoice due moves it first, and the invoice counts the event.
    price = _one(
        app,
        scope,
        "/v1/prices",
        f"currency=usd&unit_amount=3&product_data[name]=inbox&recurring[interval]=month"
        f"&recurring[usage_type]=metered&recurring[meter]={meter}".encode(),
    )["id"]
    sub = _one(app, scope, "/v1/subscriptions", f"customer={b}&items[0][price]={price}".encode())
    _stream(app, scope, [ev(name, b, "2", uid("t"))])
    assert len(_pending(app)) == 1
    due_work.bill_due(app.db, clock.now())
    assert len(_pending(app)) == 1  # nothing was due
    end = sub["items"]["data"][0]["current_period_end"]
    due_work.bill_due(app.db, end + 7200)
    assert _pending(app) == [] and len(_stored(app, b)) == 1
    ((subtotal,),) = _fetch(
        app,
        "SELECT subtotal FROM invoices WHERE subscription = :s AND period_end = :e",
        s=sub["id"],
        e=end,
    )
    assert subtotal == 6  # the event's 2 units at 3 cents


def test_an_identifier_stored_by_v1_is_not_stored_again_by_the_move(setup):
    app, scope, name, meter, a, b = setup
    taken, fresh = uid("dup"), uid("new")
    _one(
        app,
        scope,
        "/v1/billing/meter_events",
        f"event_name={name}&payload[stripe_customer_id]={a}&payload[value]=3&identifier={taken}".encode(),
    )
    _stream(app, scope, [ev(name, a, "9", taken), ev(name, a, "1", fresh)])
    with app.db.write() as conn:
        assert inbox.move(conn) == (2, 1)  # both left the inbox, one was new
    assert _stored(app, a) == {taken: Decimal(3), fresh: Decimal(1)}


def test_one_customers_events_keep_their_arrival_order(setup):
    app, scope, name, meter, a, b = setup
    sent: dict[str, list[str]] = {a: [], b: []}
    for i in range(6):
        batch = []
        for cus in (b, a) if i % 2 else (a, b):
            ident = uid(f"o{i}")
            sent[cus].append(ident)
            batch.append(ev(name, cus, str(i), ident))
        _stream(app, scope, batch)
    stream_svc.drain(app.db)
    for cus in (a, b):
        rows = _fetch(app, "SELECT id FROM meter_events WHERE customer = :c ORDER BY seq", c=cus)
        assert [r[0] for r in rows] == sent[cus]
    # The move sorts by customer: one customer's events are neighbours in seq.
    seqs = _fetch(
        app,
        "SELECT customer FROM meter_events WHERE customer IN (:a, :b) ORDER BY seq",
        a=a,
        b=b,
    )
    customers_in_order = [r[0] for r in seqs]
    assert customers_in_order == sorted(customers_in_order)


def test_a_customer_deleted_after_validation_is_seen_by_the_write(setup):
    app, scope, name, meter, a, b = setup
    gone, kept = uid("gone"), uid("kept")
    job = _job(
        app,
        scope,
        "POST",
        "/v2/billing/meter_event_stream",
        orjson.dumps({"events": [ev(name, b, "1", gone), ev(name, a, "2", kept)]}),
        json_body=True,
    )
    app._precheck([job])
    assert isinstance(job.prepared, stream_svc.Checked)  # validated with b still there
    _one(app, scope, f"/v1/customers/{b}", b"", method="DELETE")  # its own transaction
    (result,) = app._write_batch([job])
    assert result[0] == 200
    stream_svc.drain(app.db)
    assert _stored(app, a) == {kept: Decimal(2)} and _stored(app, b) == {}
    reports = _fetch(
        app, "SELECT counts FROM meter_event_error_reports WHERE request_id = :r", r=job.rid
    )
    counts = [orjson.loads(c) if isinstance(c, (str, bytes)) else c for (c,) in reports]
    assert counts == [{"meter_event_customer_not_found": 1}]


def test_two_drains_at_once_move_every_event_once(setup):
    app, scope, name, meter, a, b = setup
    ids = [uid("p") for _ in range(1000)]
    for i in range(0, len(ids), 100):
        _stream(
            app, scope, [ev(name, (a, b)[j % 2], "1", x) for j, x in enumerate(ids[i : i + 100])]
        )
    moved: list[int] = []
    start = threading.Barrier(2)

    def run() -> None:
        start.wait()
        total = 0
        while True:  # PostgreSQL: a drain that finds the other moving returns 0 at once
            total += stream_svc.drain(app.db)
            with app.db.read() as conn:
                if not inbox.pending(conn):
                    break
        moved.append(total)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sum(moved) == len(ids)
    rows = _fetch(
        app,
        "SELECT count(*), count(DISTINCT id) FROM meter_events WHERE customer IN (:a, :b)",
        a=a,
        b=b,
    )
    assert rows == [(len(ids), len(ids))]
    assert _pending(app) == []


def test_a_meter_created_after_validation_is_seen_by_the_write(setup):
    """Inserts move no validation epoch: a request whose validation found no meter (or no
    customer) reads again in its transaction, where a meter created meanwhile accepts it."""
    app, scope, name, meter, a, b = setup
    later, ident = uid("later"), uid("l")
    job = _job(
        app,
        scope,
        "POST",
        "/v2/billing/meter_event_stream",
        orjson.dumps({"events": [ev(later, a, "3", ident)]}),
        json_body=True,
    )
    app._precheck([job])
    assert job.prepared.errors == 1  # no meter for `later` yet
    _one(
        app,
        scope,
        "/v1/billing/meters",
        f"display_name=Later&event_name={later}&default_aggregation[formula]=sum".encode(),
    )
    (result,) = app._write_batch([job])
    assert result[0] == 200
    stream_svc.drain(app.db)
    assert _stored(app, a) == {ident: Decimal(3)}
    assert _fetch(
        app, "SELECT count(*) FROM meter_event_error_reports WHERE request_id = :r", r=job.rid
    ) == [(0,)]
