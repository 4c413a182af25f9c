"""Accounts and modes: a key sees only its own account's objects, and only those of its mode
(`sk_test_` -> livemode false, `sk_live_` -> livemode true). Nothing of another scope can be
read, changed, deleted, listed or used as a cursor; trying leaves the object intact."""

from __future__ import annotations

import uuid

import pytest
import stripe

from openapi_check import assert_error, assert_list_of, assert_matches


def _email(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}@example.com"


@pytest.fixture(scope="module")
def other_key(server) -> str:
    return server.new_key(new_account=True)


@pytest.fixture(scope="module")
def live_key(server) -> str:
    return server.new_key(live=True)


@pytest.fixture(scope="module")
def mine(client):
    """A customer and a product of the default account, in test mode."""
    email = _email("mine")
    c = client.v1.customers.create({"email": email, "name": "Owner's", "metadata": {"k": "v"}})
    p = client.v1.products.create({"name": f"Owner's product {uuid.uuid4().hex[:8]}"})
    return c, p, email


def _list_ids(h, path: str, **params) -> list[str]:
    ids, cursor = [], None
    while True:
        q = {"limit": 100, **params}
        if cursor:
            q["starting_after"] = cursor
        r = h.get(path, params=q)
        assert r.status_code == 200, r.text
        body = r.json()
        assert_list_of(body, path.rsplit("/", 1)[-1].rstrip("s"), url=path)
        ids += [x["id"] for x in body["data"]]
        if not body["has_more"]:
            return ids
        cursor = ids[-1]


def test_keys_have_the_right_prefixes(other_key, live_key):
    assert other_key.startswith("sk_test_")
    assert live_key.startswith("sk_live_")


# -- another account ------------------------------------------------------------------------------
def test_other_account_cannot_see_or_touch(server, client, other_key, mine):
    c, p, email = mine
    other = server.client(other_key)
    with server.http(other_key) as h:
        r = h.get(f"/v1/customers/{c.id}")
        assert r.status_code == 404
        assert_error(r.json(), "invalid_request_error", code="resource_missing", param="id")
        r = h.post(f"/v1/customers/{c.id}", data={"name": "hijacked", "metadata[k]": "stolen"})
        assert r.status_code == 404
        assert_error(r.json(), "invalid_request_error", code="resource_missing")
        r = h.delete(f"/v1/customers/{c.id}")
        assert r.status_code == 404
        assert_error(r.json(), "invalid_request_error", code="resource_missing")

        r = h.get(f"/v1/products/{p.id}")
        assert r.status_code == 404
        r = h.post(f"/v1/products/{p.id}", data={"name": "hijacked"})
        assert r.status_code == 404
        r = h.delete(f"/v1/products/{p.id}")
        assert r.status_code == 404

        # lists: by email, and the whole account
        r = h.get("/v1/customers", params={"email": email})
        assert r.status_code == 200 and r.json()["data"] == []
        assert c.id not in _list_ids(h, "/v1/customers")
        assert p.id not in _list_ids(h, "/v1/products")
        r = h.get("/v1/products", params={"ids[]": p.id})
        assert r.status_code == 200 and r.json()["data"] == []

        # another account's id is no cursor here
        r = h.get("/v1/customers", params={"starting_after": c.id})
        assert r.status_code == 404
        assert_error(
            r.json(), "invalid_request_error", code="resource_missing", param="starting_after"
        )

    with pytest.raises(stripe.InvalidRequestError) as ei:
        other.v1.customers.retrieve(c.id)
    assert ei.value.http_status == 404

    # untouched for the owner
    got = client.v1.customers.retrieve(c.id)
    assert got.name == "Owner's" and got.metadata["k"] == "v" and not getattr(got, "deleted", False)
    assert client.v1.products.retrieve(p.id).name == p.name


def test_other_account_objects_are_invisible_to_the_first(server, client, http, other_key):
    other = server.client(other_key)
    email = _email("theirs")
    theirs = other.v1.customers.create({"email": email})
    assert_matches(theirs._to_dict_recursive(), "customer")
    assert theirs.livemode is False
    r = http.get(f"/v1/customers/{theirs.id}")
    assert r.status_code == 404
    assert http.get("/v1/customers", params={"email": email}).json()["data"] == []
    assert [x.id for x in other.v1.customers.list({"email": email}).data] == [theirs.id]


def test_same_custom_product_id_in_two_accounts(server, client, other_key):
    pid = f"prod_shared_{uuid.uuid4().hex[:10]}"
    mine = client.v1.products.create({"id": pid, "name": "mine"})
    theirs = server.client(other_key).v1.products.create({"id": pid, "name": "theirs"})
    assert mine.id == theirs.id == pid
    assert client.v1.products.retrieve(pid).name == "mine"
    assert server.client(other_key).v1.products.retrieve(pid).name == "theirs"
    server.client(other_key).v1.products.delete(pid)
    assert client.v1.products.retrieve(pid).name == "mine"


# -- live and test mode -----------------------------------------------------------------------------
def test_live_key_sees_live_objects_only(server, client, http, live_key, mine):
    test_customer, test_product, test_email = mine
    live = server.client(live_key)
    live_email = _email("live")
    lc = live.v1.customers.create({"email": live_email, "name": "Live one"})
    d = lc._to_dict_recursive()
    assert_matches(d, "customer")
    assert d["livemode"] is True
    lp = live.v1.products.create({"name": f"Live product {uuid.uuid4().hex[:8]}"})
    assert lp.livemode is True

    with server.http(live_key) as lh:
        # test-mode objects are not there for the live key
        r = lh.get(f"/v1/customers/{test_customer.id}")
        assert r.status_code == 404
        assert_error(r.json(), "invalid_request_error", code="resource_missing")
        assert lh.post(f"/v1/customers/{test_customer.id}", data={"name": "x"}).status_code == 404
        assert lh.delete(f"/v1/customers/{test_customer.id}").status_code == 404
        assert lh.get(f"/v1/products/{test_product.id}").status_code == 404
        assert lh.get("/v1/customers", params={"email": test_email}).json()["data"] == []
        # every object a live key lists is live
        r = lh.get("/v1/customers", params={"limit": 100})
        assert r.status_code == 200
        assert_list_of(r.json(), "customer", url="/v1/customers")
        assert all(x["livemode"] is True for x in r.json()["data"])
        r = lh.get("/v1/products", params={"limit": 100})
        assert all(x["livemode"] is True for x in r.json()["data"])
        assert [
            x["id"] for x in lh.get("/v1/customers", params={"email": live_email}).json()["data"]
        ] == [lc.id]

    # and the live objects are not there for the test key
    r = http.get(f"/v1/customers/{lc.id}")
    assert r.status_code == 404
    assert_error(r.json(), "invalid_request_error", code="resource_missing")
    assert http.post(f"/v1/customers/{lc.id}", data={"name": "x"}).status_code == 404
    assert http.delete(f"/v1/customers/{lc.id}").status_code == 404
    assert http.get(f"/v1/products/{lp.id}").status_code == 404
    assert http.get("/v1/customers", params={"email": live_email}).json()["data"] == []
    r = http.get("/v1/customers", params={"limit": 100})
    assert all(x["livemode"] is False for x in r.json()["data"])
    r = http.get("/v1/customers", params={"ending_before": lc.id})
    assert r.status_code == 404
    assert_error(r.json(), "invalid_request_error", code="resource_missing", param="ending_before")

    # untouched in its own mode
    assert live.v1.customers.retrieve(lc.id).name == "Live one"
    assert client.v1.customers.retrieve(test_customer.id).name == "Owner's"


def test_unknown_key_is_401(server):
    with server.http("sk_test_notarealkey0000") as h:
        r = h.get("/v1/customers")
    assert r.status_code == 401
    body = r.json()
    assert_error(body, "invalid_request_error")
