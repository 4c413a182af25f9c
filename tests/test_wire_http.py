"""The HTTP layer every endpoint shares, against a real `meterline serve`: authentication,
routing errors, the body limit, content types, Request-Id and Stripe-Version, and how the
official SDK sees our errors."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa
import stripe

from inprocess import fresh_app, serve
from meterline.api.app import DEFAULT_API_VERSION, MAX_BODY


def envelope(r: httpx.Response, status: int, type_: str = "invalid_request_error") -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert err["type"] == type_, err
    assert isinstance(err["message"], str) and err["message"]
    assert r.headers["request-id"].startswith("req_")
    return err


@pytest.fixture
def bare(server) -> Iterator[httpx.Client]:
    """A client that sends no credentials unless a test sets the header itself."""
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        yield c


def basic(user: str, password: str = "") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# -- authentication -------------------------------------------------------------------------------


def test_bearer_auth(bare, server):
    r = bare.get("/v1/customers", headers={"Authorization": f"Bearer {server.key}"})
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "list"


def test_bearer_scheme_is_case_insensitive(bare, server):
    r = bare.get("/v1/customers", headers={"Authorization": f"bearer {server.key}"})
    assert r.status_code == 200, r.text


def test_basic_auth_with_key_as_user_name(bare, server):
    for header in (
        basic(server.key),
        basic(server.key, "ignored"),
        "Basic " + base64.b64encode(server.key.encode()).decode(),
    ):
        r = bare.get("/v1/customers", headers={"Authorization": header})
        assert r.status_code == 200, (header, r.text)


def test_missing_authorization_tells_how_to_authenticate(bare):
    r = bare.get("/v1/customers")
    err = envelope(r, 401)
    assert r.headers["www-authenticate"].startswith("Basic realm=")  # a 401 names its scheme
    assert "Authorization" in err["message"]
    assert "Bearer" in err["message"] and "Basic" in err["message"]
    err = envelope(bare.post("/v1/customers", data={"name": "x"}), 401)
    assert "Bearer" in err["message"]


def test_a_key_removed_from_the_database_stops_working(db_kind, tmp_path, monkeypatch):
    """A worker remembers the keys it resolved for a short time only (here: none)."""
    monkeypatch.setattr("meterline.api.app.KEY_CACHE_SECONDS", 0.0)
    app, key, drop = fresh_app(db_kind, tmp_path)
    try:
        with serve(app, key) as running, running.http() as c:
            assert c.get("/v1/customers").status_code == 200
            with app.db.write() as conn:
                conn.execute(sa.text("DELETE FROM api_keys"))
            envelope(c.get("/v1/customers"), 401)
    finally:
        app._writer.shutdown()
        app.db.dispose()
        drop()


def test_unknown_key_is_refused_without_echoing_it(bare):
    key = "sk_test_" + secrets.token_hex(16)
    for header in (f"Bearer {key}", basic(key)):
        r = bare.get("/v1/customers", headers={"Authorization": header})
        err = envelope(r, 401)
        assert r.headers["www-authenticate"].startswith("Basic realm=")
        assert key not in err["message"]
        assert key[8:-4] not in err["message"]
        assert "Invalid API Key" in err["message"]


def test_unknown_short_key_is_not_echoed(bare):
    err = envelope(bare.get("/v1/customers", headers={"Authorization": "Bearer sk_test_zz"}), 401)
    assert "sk_test_zz" not in err["message"]


@pytest.mark.parametrize(
    "header",
    [
        "Token sk_test_abc",
        "Bearer",
        "Basic",
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b":only-a-password").decode(),
        "sk_test_no_scheme_at_all",
        "Digest username=x",
    ],
)
def test_malformed_authorization_header(bare, header):
    r = bare.get("/v1/customers", headers={"Authorization": header})
    err = envelope(r, 401)
    assert "www-authenticate" in r.headers
    assert "Bearer" in err["message"]


def test_non_utf8_basic_credentials(bare):
    header = "Basic " + base64.b64encode(b"\xff\xfe:").decode()
    envelope(bare.get("/v1/customers", headers={"Authorization": header}), 401)


# -- routing --------------------------------------------------------------------------------------


def test_unknown_route_is_404_envelope(http):
    for path in ("/v1/nothing_here", "/v1/customers/cus_1/nothing", "/", "/v3/customers"):
        err = envelope(http.get(path), 404)
        assert path in err["message"]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/v1/customers", {"GET", "POST"}),
        ("DELETE", "/v1/customers", {"GET", "POST"}),
        ("PATCH", "/v1/customers/cus_123", {"GET", "POST", "DELETE"}),
        ("DELETE", "/v1/prices/price_x", {"GET", "POST"}),
        ("PUT", "/v1/products/prod_x", {"GET", "POST", "DELETE"}),
    ],
)
def test_wrong_method_is_405_with_allow(http, method, path, allowed):
    r = http.request(method, path)
    err = envelope(r, 405)
    assert {m.strip() for m in r.headers["allow"].split(",")} == allowed
    assert method in err["message"]


# -- bodies ---------------------------------------------------------------------------------------


def test_body_over_one_mib_with_content_length(http):
    body = b"name=" + b"x" * MAX_BODY
    r = http.post(
        "/v1/customers", content=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    err = envelope(r, 413)
    assert "1 MiB" in err["message"] or str(MAX_BODY) in err["message"]


def test_body_over_one_mib_chunked(http):
    def chunks() -> Iterator[bytes]:
        yield b"name="
        for _ in range(17):
            yield b"x" * 65536

    r = http.post(
        "/v1/customers",
        content=chunks(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert "content-length" not in {k.lower() for k in r.request.headers}
    envelope(r, 413)


def test_body_just_under_the_limit_is_read(http):
    # a large valid body is read and decoded (the description is too long, so it is refused by
    # the parameter check rather than by the body limit)
    body = b"description=" + b"x" * (MAX_BODY - 100)
    err = envelope(
        http.post(
            "/v1/customers",
            content=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ),
        400,
    )
    assert err["param"] == "description"


def test_chunked_form_body_is_read(http):
    def chunks() -> Iterator[bytes]:
        yield b"name=Chunky"
        yield b"&metadata[a]=1"

    r = http.post(
        "/v1/customers",
        content=chunks(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "Chunky" and r.json()["metadata"] == {"a": "1"}


def test_json_body_to_v1_is_refused(http):
    r = http.post("/v1/customers", json={"name": "Ada"})
    err = envelope(r, 400)
    assert "x-www-form-urlencoded" in err["message"]
    for ctype in (
        "Application/JSON",
        "application/json; charset=utf-8",
        "application/vnd.api+json",
    ):
        err = envelope(
            http.post("/v1/customers", content=b'{"name": "Ada"}', headers={"Content-Type": ctype}),
            400,
        )
        assert "x-www-form-urlencoded" in err["message"], ctype


def test_form_body_decoding_errors_are_400(http):
    err = envelope(
        http.post(
            "/v1/customers",
            content=b"a[b=1",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ),
        400,
    )
    assert err["param"] == "a[b"
    err = envelope(
        http.post(
            "/v1/customers",
            content=b"name=1&name[x]=2",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ),
        400,
    )
    assert err["param"] == "name"
    envelope(
        http.post(
            "/v1/customers",
            content=b"name=\xff",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ),
        400,
    )
    err = envelope(http.get("/v1/customers", params={"limit": "ten"}), 400)
    assert (err["param"], err["code"]) == ("limit", "parameter_invalid_integer")
    err = envelope(http.get("/v1/customers", params={"bogus": "1"}), 400)
    assert (err["param"], err["code"]) == ("bogus", "parameter_unknown")


# -- v2 JSON bodies (no v2 endpoint ships yet, so an echo route on the real application) ----------


def _echo(call):
    call.params.read.update(call.params.data)
    return {"object": "echo", "got": call.params.data}


@pytest.fixture(scope="module")
def v2(db_kind, tmp_path_factory) -> Iterator:
    app, key, drop = fresh_app(db_kind, tmp_path_factory.mktemp("v2"))
    app.router.add("POST", "/v2/test/echo", _echo)
    app.router.add("GET", "/v2/test/echo", _echo)
    with serve(app, key) as running:
        yield running
    drop()


def test_v2_invalid_json_is_400_envelope(v2):
    with v2.http() as c:
        for body in (b"{", b"{'a': 1}", b'{"a": 1,}', b"\xff", b"nope"):
            err = envelope(
                c.post("/v2/test/echo", content=body, headers={"Content-Type": "application/json"}),
                400,
            )
            assert "JSON" in err["message"]
        err = envelope(
            c.post(
                "/v2/test/echo", content=b"[1, 2]", headers={"Content-Type": "application/json"}
            ),
            400,
        )
        assert "JSON object" in err["message"]


def test_v2_json_body_and_query(v2):
    with v2.http() as c:
        r = c.post("/v2/test/echo", json={"events": [{"a": 1}], "flag": True})
        assert r.status_code == 200, r.text
        assert r.json()["got"] == {"events": [{"a": 1}], "flag": True}
        r = c.get("/v2/test/echo", params={"x": "1"})
        assert r.status_code == 200, r.text
        assert r.json()["got"] == {"x": "1"}


def test_v2_json_nested_too_deep_is_a_400_even_with_an_idempotency_key(v2):
    body = b'{"a": ' + b"[" * 300 + b"]" * 300 + b"}"
    with v2.http() as c:
        err = envelope(
            c.post(
                "/v2/test/echo",
                content=body,
                headers={"Content-Type": "application/json", "Idempotency-Key": "deep"},
            ),
            400,
        )
        assert "deeper" in err["message"]
        ok = c.post("/v2/test/echo", json={"a": [[[1]]]}, headers={"Idempotency-Key": "shallow"})
        assert ok.status_code == 200


# -- Request-Id and Stripe-Version ----------------------------------------------------------------


def test_every_response_has_a_distinct_request_id(http, bare):
    responses = [
        http.get("/v1/customers"),
        http.get("/v1/customers"),
        http.get("/v1/nothing"),
        http.put("/v1/customers"),
        http.get("/v1/customers", params={"limit": "0"}),
        http.get("/v1/customers/cus_missing"),
        bare.get("/v1/customers"),
        http.post("/v1/customers", content=b"x" * (MAX_BODY + 1)),
    ]
    assert [r.status_code for r in responses] == [200, 200, 404, 405, 400, 404, 401, 413]
    ids = [r.headers["request-id"] for r in responses]
    assert all(i.startswith("req_") and len(i) > 8 for i in ids)
    assert len(set(ids)) == len(ids)


def test_stripe_version_is_echoed(http, bare):
    for version in ("2024-06-20", "2025-09-30.preview", DEFAULT_API_VERSION):
        r = http.get("/v1/customers", headers={"Stripe-Version": version})
        assert r.status_code == 200
        assert r.headers["stripe-version"] == version
        r = bare.get("/v1/customers", headers={"Stripe-Version": version})  # errors too
        assert r.status_code == 401 and r.headers["stripe-version"] == version


def test_default_stripe_version_when_absent(http):
    r = http.get("/v1/customers")
    assert r.headers["stripe-version"] == DEFAULT_API_VERSION
    assert http.get("/v1/nothing").headers["stripe-version"] == DEFAULT_API_VERSION


# -- the official SDK's view ----------------------------------------------------------------------


def test_sdk_bad_key_raises_authentication_error(server):
    bad = server.client("sk_test_" + secrets.token_hex(12))
    with pytest.raises(stripe.AuthenticationError) as info:
        bad.v1.customers.list()
    assert info.value.http_status == 401
    assert info.value.request_id and info.value.request_id.startswith("req_")


def test_sdk_validation_error_has_param_and_code(client):
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.customers.list({"limit": 1000})
    assert (info.value.param, info.value.code, info.value.http_status) == (
        "limit",
        "parameter_invalid_integer",
        400,
    )

    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.customers.create({"nmae": "typo"})  # type: ignore[typeddict-unknown-key]
    assert (info.value.param, info.value.code) == ("nmae", "parameter_unknown")

    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.prices.create(
            {
                "currency": "usd",
                "product_data": {"name": "Tiered"},
                "recurring": {"interval": "month"},
                "billing_scheme": "tiered",
                "tiers_mode": "graduated",
                "tiers": [{"up_to": 10, "unit_amount": 5}, {"up_to": "ten", "unit_amount": 3}],  # type: ignore[typeddict-item]
            }
        )
    assert (info.value.param, info.value.code) == ("tiers[1][up_to]", "parameter_invalid_integer")


def test_sdk_missing_object_is_resource_missing(client):
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.customers.retrieve("cus_doesnotexist")
    assert (info.value.http_status, info.value.code, info.value.param) == (
        404,
        "resource_missing",
        "id",
    )  # as Stripe: the path's id
