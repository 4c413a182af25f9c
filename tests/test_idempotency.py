"""Idempotency-Key: replay byte for byte, mismatch, validation failures not stored, scoping,
expiry after 24 hours, and concurrent duplicates across two worker processes."""

from __future__ import annotations

import threading
import uuid

import sqlalchemy as sa

from meterline.store.db import Database
from openapi_check import assert_error, assert_matches


def _count(http, email: str) -> int:
    return len(http.get("/v1/customers", params={"email": email, "limit": 100}).json()["data"])


def test_replay_is_byte_for_byte_and_creates_once(http):
    key, email = str(uuid.uuid4()), f"{uuid.uuid4().hex}@ex.com"
    first = http.post(
        "/v1/customers", data={"email": email, "name": "A"}, headers={"Idempotency-Key": key}
    )
    assert first.status_code == 200
    assert_matches(first.json(), "customer")
    again = http.post(
        "/v1/customers", data={"email": email, "name": "A"}, headers={"Idempotency-Key": key}
    )
    assert again.status_code == 200
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["original-request"] == first.headers["request-id"]
    assert again.headers["request-id"] != first.headers["request-id"]
    assert _count(http, email) == 1


def test_same_parameters_in_another_order_replay(http):
    key, email = str(uuid.uuid4()), f"{uuid.uuid4().hex}@ex.com"
    a = http.post(
        "/v1/customers",
        content=f"email={email}&name=B".encode(),
        headers={"Idempotency-Key": key, "Content-Type": "application/x-www-form-urlencoded"},
    )
    b = http.post(
        "/v1/customers",
        content=f"name=B&email={email}".encode(),
        headers={"Idempotency-Key": key, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert a.status_code == b.status_code == 200 and a.content == b.content
    assert _count(http, email) == 1


def test_reuse_with_other_parameters_is_refused(http):
    key, email = str(uuid.uuid4()), f"{uuid.uuid4().hex}@ex.com"
    assert (
        http.post(
            "/v1/customers", data={"email": email}, headers={"Idempotency-Key": key}
        ).status_code
        == 200
    )
    r = http.post(
        "/v1/customers", data={"email": email, "name": "other"}, headers={"Idempotency-Key": key}
    )
    assert r.status_code == 400
    assert_error(r.json(), "idempotency_error")
    assert key in r.json()["error"]["message"]
    # and on another path
    r = http.post("/v1/products", data={"name": "p"}, headers={"Idempotency-Key": key})
    assert r.status_code == 400 and r.json()["error"]["type"] == "idempotency_error"
    assert _count(http, email) == 1


def test_validation_failure_is_not_stored(http):
    key, email = str(uuid.uuid4()), f"{uuid.uuid4().hex}@ex.com"
    bad = http.post(
        "/v1/customers", data={"email": email, "bogus": "1"}, headers={"Idempotency-Key": key}
    )
    assert bad.status_code == 400
    assert_error(bad.json(), "invalid_request_error", code="parameter_unknown", param="bogus")
    assert _count(http, email) == 0
    good = http.post("/v1/customers", data={"email": email}, headers={"Idempotency-Key": key})
    assert good.status_code == 200
    assert _count(http, email) == 1


def test_key_too_long(http):
    r = http.post("/v1/customers", data={"name": "x"}, headers={"Idempotency-Key": "k" * 256})
    assert r.status_code == 400
    assert_error(r.json(), "invalid_request_error", param="Idempotency-Key")


def test_keys_are_scoped_to_the_account(server):
    key, email = str(uuid.uuid4()), f"{uuid.uuid4().hex}@ex.com"
    other = server.new_key(new_account=True)
    with server.http() as mine, server.http(other) as theirs:
        a = mine.post("/v1/customers", data={"email": email}, headers={"Idempotency-Key": key})
        b = theirs.post("/v1/customers", data={"email": email}, headers={"Idempotency-Key": key})
        assert a.status_code == b.status_code == 200
        assert a.json()["id"] != b.json()["id"]
        assert _count(mine, email) == 1 and _count(theirs, email) == 1


def test_sdk_retry_with_the_same_key_replays(client):
    key = str(uuid.uuid4())
    a = client.v1.customers.create({"name": "sdk"}, {"idempotency_key": key})
    b = client.v1.customers.create({"name": "sdk"}, {"idempotency_key": key})
    assert a.id == b.id


def test_key_expires_after_24_hours(server, http):
    key, email = str(uuid.uuid4()), f"{uuid.uuid4().hex}@ex.com"
    assert (
        http.post(
            "/v1/customers", data={"email": email}, headers={"Idempotency-Key": key}
        ).status_code
        == 200
    )
    db = Database(server.database_url)
    try:
        with db.write() as conn:
            conn.execute(
                sa.text("UPDATE idempotency_keys SET created = created - 86401 WHERE key = :k"),
                {"k": key},
            )
    finally:
        db.dispose()
    r = http.post(
        "/v1/customers", data={"email": email, "name": "new"}, headers={"Idempotency-Key": key}
    )
    assert r.status_code == 200 and r.json()["name"] == "new"
    assert _count(http, email) == 2


def test_concurrent_duplicates_execute_once(server, db_kind):
    """20 clients send the same request with one key at once, over the server's 2 workers."""
    key, email = str(uuid.uuid4()), f"{uuid.uuid4().hex}@ex.com"
    results: list[tuple[int, dict]] = []
    barrier = threading.Barrier(20)
    lock = threading.Lock()

    def send() -> None:
        with server.http() as c:
            barrier.wait()
            r = c.post(
                "/v1/customers",
                data={"email": email, "name": "race"},
                headers={"Idempotency-Key": key},
            )
            with lock:
                results.append((r.status_code, r.json()))

    threads = [threading.Thread(target=send) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(s for s, _ in results)
    assert set(statuses) <= {200, 409}, statuses
    ids = {body["id"] for s, body in results if s == 200}
    assert len(ids) == 1  # every success is the one customer (original or replay)
    for s, body in results:
        if s == 409:
            assert_error(body, "idempotency_error", code="idempotency_key_in_use")
    with server.http() as c:
        assert _count(c, email) == 1


def test_in_progress_key_gets_409_on_postgresql(server, http, db_kind):
    """While another transaction holds a key (a request still running on another worker),
    a duplicate gets 409 at once. On SQLite writers are serialized, so a duplicate waits for
    the first and replays it instead (test_concurrent_duplicates_execute_once)."""
    if db_kind != "postgresql":
        import pytest

        pytest.skip(
            "the in-progress state is only observable on PostgreSQL; SQLite serializes writers"
        )
    from meterline.store import idempotency as idem
    from meterline.store.accounts import key_digest
    from meterline.store.repo import Scope

    key, email = str(uuid.uuid4()), f"{uuid.uuid4().hex}@ex.com"
    db = Database(server.database_url)
    try:
        with db.read() as conn:
            acct = conn.execute(
                sa.text("SELECT account_id FROM api_keys WHERE key_hash = :h"),
                {"h": key_digest(server.key)},
            ).scalar_one()
        with db.write() as conn:
            assert idem.lock(conn, Scope(acct, False), key)
            r = http.post("/v1/customers", data={"email": email}, headers={"Idempotency-Key": key})
            assert r.status_code == 409
            assert_error(r.json(), "idempotency_error", code="idempotency_key_in_use")
        r = http.post("/v1/customers", data={"email": email}, headers={"Idempotency-Key": key})
        assert r.status_code == 200
    finally:
        db.dispose()
    assert _count(http, email) == 1
