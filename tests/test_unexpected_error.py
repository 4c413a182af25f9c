"""An unexpected exception in a handler: a 500 `api_error` that names the request id and leaks
nothing, a server-side log record with that request id and the traceback, a rolled-back
transaction, and (with an Idempotency-Key) a stored 500 that is replayed byte for byte.

The real application is built in this process with a route of our own that fails, and served
by a real uvicorn server on a thread."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator

import pytest

from inprocess import Running, fresh_app, serve
from meterline.services import customers as customers_service

SECRET = "s3cret-detail-" + secrets.token_hex(4)


class KaboomFailure(RuntimeError):
    pass


CALLS: dict[str, int] = {"boom": 0, "write_then_boom": 0}


def boom(call):
    CALLS["boom"] += 1
    raise KaboomFailure(f"database password is {SECRET}")


def write_then_boom(call):
    CALLS["write_then_boom"] += 1
    name = call.params.str("name")
    customers_service.create(call.repo, {"name": name}, {})
    return {"object": "x", "oops": 1 / 0}


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def about(self, request_id: str) -> list[logging.LogRecord]:
        return [r for r in self.records if request_id in r.getMessage()]


@pytest.fixture(scope="module")
def running(db_kind, tmp_path_factory) -> Iterator[Running]:
    app, key, drop = fresh_app(db_kind, tmp_path_factory.mktemp("boom"))
    app.router.add("GET", "/v1/test_boom", boom)
    app.router.add("POST", "/v1/test_boom", boom)
    app.router.add("POST", "/v1/test_boom/{id}", boom, offload=True)
    app.router.add("POST", "/v1/test_write_then_boom", write_then_boom)
    with serve(app, key) as r:
        yield r
    drop()


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger("meterline")
    logger.addHandler(handler)
    old = logger.level
    if logger.getEffectiveLevel() > logging.ERROR:
        logger.setLevel(logging.ERROR)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def assert_safe_500(r) -> str:
    assert r.status_code == 500, r.text
    assert r.headers["content-type"].startswith("application/json")
    rid = r.headers["request-id"]
    assert rid.startswith("req_")
    body = r.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert err["type"] == "api_error"
    assert rid in err["message"]
    for leak in (
        "Traceback",
        'File "',
        "KaboomFailure",
        "ZeroDivisionError",
        "division by zero",
        SECRET,
        "database password",
        "meterline/",
        ".py",
    ):
        assert leak not in r.text, leak
    return rid


def assert_logged(records: Records, rid: str, exc_type: type[BaseException]) -> None:
    found = records.about(rid)
    assert found, [r.getMessage() for r in records.records]
    rec = found[0]
    assert rec.name.startswith("meterline")
    assert rec.levelno >= logging.ERROR
    assert rec.exc_info is not None and rec.exc_info[0] is exc_type  # the traceback is in the log


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_unexpected_error_is_a_safe_500(running, records, method):
    with running.http() as c:
        r = c.request(method, "/v1/test_boom")
    rid = assert_safe_500(r)
    assert_logged(records, rid, KaboomFailure)


def test_unexpected_error_on_a_worker_thread(running, records):
    with running.http() as c:
        r = c.post("/v1/test_boom/abc")
    rid = assert_safe_500(r)
    assert_logged(records, rid, KaboomFailure)


def test_each_500_names_its_own_request_id(running, records):
    with running.http() as c:
        a, b = c.get("/v1/test_boom"), c.get("/v1/test_boom")
    ra, rb = assert_safe_500(a), assert_safe_500(b)
    assert ra != rb
    assert rb not in a.text and ra not in b.text


def test_the_transaction_is_rolled_back(running, records):
    name = "rolled-back-" + secrets.token_hex(4)
    with running.http() as c:
        rid = assert_safe_500(c.post("/v1/test_write_then_boom", data={"name": name}))
        assert_logged(records, rid, ZeroDivisionError)
        listed = c.get("/v1/customers", params={"limit": 100}).json()["data"]
    assert name not in [cus["name"] for cus in listed]


def test_idempotent_500_is_stored_and_replayed(running, records):
    key = "idem-" + secrets.token_hex(8)
    before = CALLS["boom"]
    with running.http() as c:
        first = c.post("/v1/test_boom", data={"a": "1"}, headers={"Idempotency-Key": key})
        rid = assert_safe_500(first)
        assert_logged(records, rid, KaboomFailure)
        assert CALLS["boom"] == before + 1

        again = c.post("/v1/test_boom", data={"a": "1"}, headers={"Idempotency-Key": key})
        assert again.status_code == 500
        assert again.content == first.content  # byte for byte, naming the first request's id
        assert again.headers["idempotent-replayed"] == "true"
        assert again.headers["original-request"] == rid
        assert again.headers["request-id"] != rid
        assert CALLS["boom"] == before + 1  # the handler did not run again

        other = c.post("/v1/test_boom", data={"a": "2"}, headers={"Idempotency-Key": key})
        assert other.status_code == 400, other.text
        assert other.json()["error"]["type"] == "idempotency_error"
        assert CALLS["boom"] == before + 1

        fresh = c.post("/v1/test_boom", data={"a": "1"}, headers={"Idempotency-Key": key + "-2"})
        assert_safe_500(fresh)
        assert fresh.content != first.content
        assert CALLS["boom"] == before + 2


def test_idempotent_500_after_a_write_replays_and_keeps_nothing(running, records):
    key = "idem-" + secrets.token_hex(8)
    name = "idem-rolled-back-" + secrets.token_hex(4)
    before = CALLS["write_then_boom"]
    with running.http() as c:
        first = c.post(
            "/v1/test_write_then_boom", data={"name": name}, headers={"Idempotency-Key": key}
        )
        assert_safe_500(first)
        again = c.post(
            "/v1/test_write_then_boom", data={"name": name}, headers={"Idempotency-Key": key}
        )
        assert (again.status_code, again.content) == (500, first.content)
        assert CALLS["write_then_boom"] == before + 1
        listed = c.get("/v1/customers", params={"limit": 100}).json()["data"]
    assert name not in [cus["name"] for cus in listed]
