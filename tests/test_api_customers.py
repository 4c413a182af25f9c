"""Customers over the wire: create, retrieve, update (clearing and metadata merge), delete,
list by email, an unknown `test_clock` refused, metadata limits and parameter errors.

Runs against the session's real server; every test makes its own data (unique emails)."""

from __future__ import annotations

import uuid

import pytest
import stripe

from openapi_check import assert_deleted, assert_error, assert_list_of, assert_matches


def _email(tag: str = "c") -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}@example.com"


def _d(obj) -> dict:
    return obj._to_dict_recursive()


def _count(http, email: str) -> int:
    r = http.get("/v1/customers", params={"email": email, "limit": 100})
    assert r.status_code == 200, r.text
    assert_list_of(r.json(), "customer", url="/v1/customers")
    return len(r.json()["data"])


FULL = {
    "name": "Ada Lovelace",
    "description": "first programmer",
    "phone": "+15555550100",
    "metadata": {"tier": "gold", "region": "eu"},
    "address": {
        "line1": "12 Analytical Way",
        "line2": "Floor 2",
        "city": "London",
        "state": "LDN",
        "postal_code": "N1 9GU",
        "country": "GB",
    },
    "preferred_locales": ["en-GB", "fr"],
}


# -- create / retrieve --------------------------------------------------------------------------
def test_create_with_every_field_and_retrieve(client):
    email = _email()
    c = client.v1.customers.create({**FULL, "email": email})
    created = _d(c)
    assert_matches(created, "customer")
    assert created["id"].startswith("cus_")
    assert created["object"] == "customer" and created["livemode"] is False
    assert isinstance(created["created"], int) and created["created"] > 1_600_000_000
    assert created["email"] == email
    for key in ("name", "description", "phone", "metadata", "address", "preferred_locales"):
        assert created[key] == FULL[key], key
    assert created["test_clock"] is None

    got = _d(client.v1.customers.retrieve(c.id))
    assert_matches(got, "customer")
    assert got == created


def test_create_minimal_renders_nulls(client):
    c = _d(client.v1.customers.create())
    assert_matches(c, "customer")
    for key in ("name", "email", "description", "phone", "address"):
        assert c[key] is None, key
    assert c["metadata"] == {}
    assert c["preferred_locales"] == []
    assert c["invoice_prefix"] and c["invoice_prefix"].isupper()


def test_retrieve_unknown_is_404(http):
    r = http.get("/v1/customers/cus_doesnotexist000")
    assert r.status_code == 404
    assert_error(r.json(), "invalid_request_error", code="resource_missing", param="id")


# -- update ---------------------------------------------------------------------------------------
def test_update_fields(client):
    c = client.v1.customers.create({**FULL, "email": _email()})
    new_email = _email("u")
    u = _d(
        client.v1.customers.update(
            c.id,
            {
                "name": "Grace Hopper",
                "email": new_email,
                "phone": "+15555550199",
                "address": {"city": "Arlington", "country": "US"},
                "preferred_locales": ["en-US"],
            },
        )
    )
    assert_matches(u, "customer")
    assert u["name"] == "Grace Hopper" and u["email"] == new_email and u["phone"] == "+15555550199"
    assert u["address"] == {
        "city": "Arlington",
        "country": "US",
        "line1": None,
        "line2": None,
        "postal_code": None,
        "state": None,
    }
    assert u["preferred_locales"] == ["en-US"]
    assert u["description"] == FULL["description"]  # untouched
    assert u["metadata"] == FULL["metadata"]  # untouched
    got = _d(client.v1.customers.retrieve(c.id))
    assert got == u


def test_update_empty_description_clears_to_null(client):
    c = client.v1.customers.create(
        {"email": _email(), "description": "to be cleared", "name": "Keep"}
    )
    u = _d(client.v1.customers.update(c.id, {"description": ""}))
    assert_matches(u, "customer")
    assert u["description"] is None and u["name"] == "Keep"
    assert client.v1.customers.retrieve(c.id).description is None


def test_update_empty_values_clear_other_fields(client):
    c = client.v1.customers.create({**FULL, "email": _email()})
    u = _d(
        client.v1.customers.update(
            c.id, {"phone": "", "address": "", "preferred_locales": "", "name": ""}
        )
    )
    assert_matches(u, "customer")
    assert u["phone"] is None and u["address"] is None and u["name"] is None
    assert u["preferred_locales"] == []
    assert u["description"] == FULL["description"] and u["metadata"] == FULL["metadata"]
    assert _d(client.v1.customers.retrieve(c.id)) == u


def test_update_metadata_merges_and_deletes_one_key(client):
    c = client.v1.customers.create({"email": _email(), "metadata": {"a": "1", "b": "2", "c": "3"}})
    u = _d(client.v1.customers.update(c.id, {"metadata": {"b": "", "c": "33", "d": "4"}}))
    assert_matches(u, "customer")
    assert u["metadata"] == {"a": "1", "c": "33", "d": "4"}
    assert _d(client.v1.customers.retrieve(c.id))["metadata"] == {"a": "1", "c": "33", "d": "4"}


def test_update_empty_metadata_clears_all(client):
    c = client.v1.customers.create({"email": _email(), "metadata": {"a": "1", "b": "2"}})
    u = _d(client.v1.customers.update(c.id, {"metadata": ""}))
    assert_matches(u, "customer")
    assert u["metadata"] == {}
    assert _d(client.v1.customers.retrieve(c.id))["metadata"] == {}


def test_update_metadata_over_50_keys_after_merge_is_refused_and_changes_nothing(client, http):
    c = client.v1.customers.create(
        {"email": _email(), "metadata": {f"k{i}": "v" for i in range(30)}}
    )
    r = http.post(
        f"/v1/customers/{c.id}", data={f"metadata[n{i}]": "x" for i in range(21)} | {"name": "nope"}
    )
    assert r.status_code == 400
    assert_error(r.json(), "invalid_request_error", param="metadata")
    got = _d(client.v1.customers.retrieve(c.id))
    assert got["metadata"] == {f"k{i}": "v" for i in range(30)} and got["name"] is None
    # 20 more keys reach exactly 50: allowed
    ok = _d(client.v1.customers.update(c.id, {"metadata": {f"n{i}": "x" for i in range(20)}}))
    assert len(ok["metadata"]) == 50


# -- delete ---------------------------------------------------------------------------------------
def test_delete_then_retrieve_returns_the_deleted_stub(client, http):
    email = _email()
    c = client.v1.customers.create({"email": email, "name": "Gone"})
    d = client.v1.customers.delete(c.id)
    assert_deleted(_d(d), "customer")
    assert d.id == c.id and d.deleted is True

    r = http.get(f"/v1/customers/{c.id}")
    assert r.status_code == 200
    assert r.json() == {"id": c.id, "object": "customer", "deleted": True}
    got = client.v1.customers.retrieve(c.id)
    assert got.deleted is True

    # gone from lists
    assert _count(http, email) == 0


def test_update_or_delete_of_deleted_customer_is_404(client, http):
    c = client.v1.customers.create({"email": _email()})
    client.v1.customers.delete(c.id)
    r = http.post(f"/v1/customers/{c.id}", data={"name": "zombie"})
    assert r.status_code == 404
    assert_error(r.json(), "invalid_request_error", code="resource_missing")
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.customers.update(c.id, {"name": "zombie"})
    assert ei.value.http_status == 404 and ei.value.code == "resource_missing"
    r = http.delete(f"/v1/customers/{c.id}")
    assert r.status_code == 404
    assert_error(r.json(), "invalid_request_error", code="resource_missing")
    assert http.get(f"/v1/customers/{c.id}").json() == {
        "id": c.id,
        "object": "customer",
        "deleted": True,
    }


def test_delete_unknown_is_404(http):
    r = http.delete("/v1/customers/cus_neverexisted00")
    assert r.status_code == 404
    assert_error(r.json(), "invalid_request_error", code="resource_missing", param="id")


# -- list by email --------------------------------------------------------------------------------
def test_list_filtered_by_email(client, http):
    shared, other = _email("shared"), _email("other")
    a = client.v1.customers.create({"email": shared, "name": "A"})
    b = client.v1.customers.create({"email": shared, "name": "B"})
    o = client.v1.customers.create({"email": other})
    lst = client.v1.customers.list({"email": shared})
    body = _d(lst)
    assert_list_of(body, "customer", url="/v1/customers")
    assert [x["id"] for x in body["data"]] == [b.id, a.id]  # newest first
    assert body["has_more"] is False
    assert all(x["email"] == shared for x in body["data"])
    r = http.get("/v1/customers", params={"email": other})
    assert [x["id"] for x in r.json()["data"]] == [o.id]
    assert _count(http, _email("nobody")) == 0


# -- an unknown test_clock is refused ---------------------------------------------------------------
def test_create_with_unknown_test_clock_is_refused_and_creates_nothing(client, http):
    email = _email("clock")
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.customers.create({"email": email, "test_clock": "clock_123"})
    assert ei.value.http_status == 404
    assert ei.value.param == "test_clock"
    assert_error(ei.value.json_body, "invalid_request_error", param="test_clock")
    r = http.post("/v1/customers", data={"email": email, "test_clock": "clock_abc"})
    assert r.status_code == 404
    assert_error(r.json(), "invalid_request_error", param="test_clock")
    assert _count(http, email) == 0


# -- metadata rules (raw HTTP) ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "case",
    ["51_keys", "long_key", "long_value", "bracket_key", "closing_bracket_key", "nested_value"],
)
def test_metadata_limits_refused_and_nothing_created(http, case):
    email = _email("meta")
    data = {"email": email}
    if case == "51_keys":
        data |= {f"metadata[k{i}]": "v" for i in range(51)}
    elif case == "long_key":
        data["metadata[" + "k" * 41 + "]"] = "v"
    elif case == "long_value":
        data["metadata[k]"] = "v" * 501
    elif case == "bracket_key":
        data["metadata[a[b]"] = "v"
    elif case == "closing_bracket_key":
        data["metadata[a]b]"] = "v"
    else:
        data["metadata[a][b]"] = "v"
    before = _count(http, email)
    r = http.post("/v1/customers", data=data)
    assert r.status_code == 400, r.text
    body = r.json()
    assert_error(body, "invalid_request_error")
    assert body["error"]["param"], body
    assert body["error"]["param"].startswith("metadata"), body
    assert _count(http, email) == before == 0


def test_metadata_at_the_limits_is_accepted(http):
    data = {f"metadata[k{i}]": "v" for i in range(49)}
    data["metadata[" + "K" * 40 + "]"] = "w" * 500
    r = http.post("/v1/customers", data=data)
    assert r.status_code == 200, r.text
    body = r.json()
    assert_matches(body, "customer")
    assert len(body["metadata"]) == 50 and body["metadata"]["K" * 40] == "w" * 500


# -- parameter errors -------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["bogus", "address[zip]", "metadata"])
def test_unknown_parameter(http, key):
    email = _email("unk")
    if key == "metadata":  # a known top-level name, but nested under an unknown one
        data = {"email": email, "shipping_info[metadata]": "x"}
        key = "shipping_info"
    else:
        data = {"email": email, key: "1"}
    r = http.post("/v1/customers", data=data)
    assert r.status_code == 400, r.text
    assert_error(r.json(), "invalid_request_error", code="parameter_unknown", param=key)
    assert key in r.json()["error"]["message"]
    assert _count(http, email) == 0


def test_unknown_parameter_on_update_and_list(client, http):
    c = client.v1.customers.create({"email": _email()})
    r = http.post(f"/v1/customers/{c.id}", data={"address[zip]": "12345"})
    assert r.status_code == 400
    assert_error(r.json(), "invalid_request_error", code="parameter_unknown", param="address[zip]")
    r = http.get("/v1/customers", params={"colour": "blue"})
    assert r.status_code == 400
    assert_error(r.json(), "invalid_request_error", code="parameter_unknown", param="colour")


def test_bad_integer_limit(http):
    r = http.get("/v1/customers", params={"limit": "abc"})
    assert r.status_code == 400
    assert_error(r.json(), "invalid_request_error", code="parameter_invalid_integer", param="limit")


def test_too_long_string_is_refused(http):
    email = _email("long")
    r = http.post("/v1/customers", data={"email": email, "phone": "1" * 21})
    assert r.status_code == 400
    assert_error(r.json(), "invalid_request_error", param="phone")
    assert _count(http, email) == 0


def test_list_by_created_range_and_test_clock(client, http):
    """`created` as a value or a range (gt, gte, lt, lte), and `test_clock`, as on Stripe; a bad
    range is refused naming the bracketed parameter."""
    email = _email("range")
    before = client.v1.customers.create({"email": _email("other")}).created
    c = client.v1.customers.create({"email": email})
    t = c.created
    assert t >= before

    def ids(**params):
        got = _d(client.v1.customers.list({"email": email, "limit": 100, **params}))
        assert_list_of(got, "customer", url="/v1/customers")
        return [x["id"] for x in got["data"]]

    assert ids(created=t) == [c.id]
    assert ids(created=t + 1) == []
    assert ids(created={"gte": t, "lte": t}) == [c.id]
    assert ids(created={"gt": t}) == [] and ids(created={"lt": t}) == []
    assert ids(created={"gt": t - 1, "lt": t + 1}) == [c.id]

    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": t - 86_400})
    on = client.v1.customers.create({"email": email, "test_clock": clock.id})
    assert ids(test_clock=clock.id) == [on.id]
    assert set(ids()) == {c.id, on.id}

    for params, param in (
        ({"created[gte]": "soon"}, "created[gte]"),
        ({"created[since]": "1"}, "created[since]"),
        ({"created": "-5"}, "created"),
    ):
        r = http.get("/v1/customers", params=params)
        assert r.status_code == 400, r.text
        assert_error(r.json(), "invalid_request_error", param=param)
