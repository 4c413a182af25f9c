"""Products over the wire: create (generated and custom ids), retrieve, update, delete (and its
refusal while a price uses the product), list filters (`active`, `ids[]`), and expanding
`default_price`. Every test makes its own products (unique names and ids)."""

from __future__ import annotations

import uuid

import pytest
import stripe

from openapi_check import assert_deleted, assert_error, assert_list_of, assert_matches


def _tag() -> str:
    return uuid.uuid4().hex[:12]


def _d(obj) -> dict:
    return obj._to_dict_recursive()


def test_create_and_retrieve(client):
    name = f"Widget {_tag()}"
    p = client.v1.products.create(
        {
            "name": name,
            "description": "a fine widget",
            "unit_label": "seat",
            "url": "https://example.com/widget",
            "statement_descriptor": "WIDGET CO",
            "images": ["https://example.com/w.png"],
            "metadata": {"sku": "W-1"},
        }
    )
    created = _d(p)
    assert_matches(created, "product")
    assert created["id"].startswith("prod_")
    assert created["name"] == name and created["description"] == "a fine widget"
    assert created["unit_label"] == "seat" and created["url"] == "https://example.com/widget"
    assert created["statement_descriptor"] == "WIDGET CO"
    assert created["images"] == ["https://example.com/w.png"]
    assert created["metadata"] == {"sku": "W-1"}
    assert created["active"] is True and created["livemode"] is False
    assert created["default_price"] is None
    assert created["updated"] >= created["created"]
    got = _d(client.v1.products.retrieve(p.id))
    assert_matches(got, "product")
    assert got == created


def test_create_requires_name(http):
    r = http.post("/v1/products", data={"description": "nameless"})
    assert r.status_code == 400
    assert_error(r.json(), "invalid_request_error", code="parameter_missing", param="name")


def test_custom_id_and_duplicate(client, http):
    pid = f"prod_custom_{_tag()}"
    p = client.v1.products.create({"id": pid, "name": "Custom"})
    assert_matches(_d(p), "product")
    assert p.id == pid
    assert client.v1.products.retrieve(pid).name == "Custom"

    r = http.post("/v1/products", data={"id": pid, "name": "Again"})
    assert r.status_code == 400
    assert_error(r.json(), "invalid_request_error", code="resource_already_exists", param="id")
    assert client.v1.products.retrieve(pid).name == "Custom"  # the first one is untouched


def test_update(client):
    p = client.v1.products.create(
        {"name": "Before", "description": "old", "metadata": {"a": "1", "b": "2"}}
    )
    u = _d(
        client.v1.products.update(
            p.id,
            {
                "name": "After",
                "description": "",
                "unit_label": "unit",
                "active": False,
                "metadata": {"a": "", "c": "3"},
            },
        )
    )
    assert_matches(u, "product")
    assert u["name"] == "After" and u["description"] is None and u["unit_label"] == "unit"
    assert u["active"] is False
    assert u["metadata"] == {"b": "2", "c": "3"}
    assert u["updated"] >= p.updated
    assert _d(client.v1.products.retrieve(p.id)) == u


def test_update_unknown_is_404(http):
    r = http.post("/v1/products/prod_nope_nope_nope", data={"name": "x"})
    assert r.status_code == 404
    assert_error(r.json(), "invalid_request_error", code="resource_missing", param="id")


def test_delete_then_retrieve_is_404(client, http):
    p = client.v1.products.create({"name": f"Doomed {_tag()}"})
    d = client.v1.products.delete(p.id)
    assert_deleted(_d(d), "product")
    assert d.id == p.id
    r = http.get(f"/v1/products/{p.id}")
    assert r.status_code == 404
    assert_error(r.json(), "invalid_request_error", code="resource_missing", param="id")
    r = http.delete(f"/v1/products/{p.id}")
    assert r.status_code == 404
    # not listed any more
    r = http.get("/v1/products", params={"ids[]": p.id})
    assert r.status_code == 200 and r.json()["data"] == []


def test_delete_refused_while_a_price_uses_the_product(client, http):
    p = client.v1.products.create({"name": f"Priced {_tag()}"})
    price = client.v1.prices.create({"currency": "usd", "unit_amount": 100, "product": p.id})
    assert price.product == p.id
    r = http.delete(f"/v1/products/{p.id}")
    assert r.status_code == 400, r.text
    assert_error(r.json(), "invalid_request_error")
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.products.delete(p.id)
    assert ei.value.http_status == 400
    got = _d(client.v1.products.retrieve(p.id))
    assert_matches(got, "product")
    assert got["id"] == p.id and got["name"] == p.name
    assert "deleted" not in got


def test_list_active_filter_and_ids(client, http):
    tag = _tag()
    a = client.v1.products.create({"name": f"A {tag}"})
    b = client.v1.products.create({"name": f"B {tag}", "active": False})
    c = client.v1.products.create({"name": f"C {tag}"})
    ids = [a.id, b.id, c.id]

    lst = _d(client.v1.products.list({"ids": ids, "limit": 100}))
    assert_list_of(lst, "product", url="/v1/products")
    assert [x["id"] for x in lst["data"]] == [c.id, b.id, a.id]
    assert lst["has_more"] is False

    active = _d(client.v1.products.list({"ids": ids, "active": True}))
    assert_list_of(active, "product", url="/v1/products")
    assert [x["id"] for x in active["data"]] == [c.id, a.id]
    assert all(x["active"] is True for x in active["data"])

    inactive = _d(client.v1.products.list({"ids": ids, "active": False}))
    assert [x["id"] for x in inactive["data"]] == [b.id]

    # the docs' form: ids[]=... repeated
    r = http.get("/v1/products", params=[("ids[]", a.id), ("ids[]", c.id)])
    assert r.status_code == 200
    assert_list_of(r.json(), "product", url="/v1/products")
    assert [x["id"] for x in r.json()["data"]] == [c.id, a.id]

    # an active=false list over the whole account holds only inactive products
    r = http.get("/v1/products", params={"active": "false", "limit": 100})
    assert r.status_code == 200
    assert all(x["active"] is False for x in r.json()["data"])
    assert b.id in [x["id"] for x in r.json()["data"]] or r.json()["has_more"]

    # paging within ids[]
    first = client.v1.products.list({"ids": ids, "limit": 2})
    assert [x.id for x in first.data] == [c.id, b.id] and first.has_more is True
    rest = client.v1.products.list({"ids": ids, "limit": 2, "starting_after": b.id})
    assert [x.id for x in rest.data] == [a.id] and rest.has_more is False


def test_list_bad_boolean(http):
    r = http.get("/v1/products", params={"active": "maybe"})
    assert r.status_code == 400
    assert_error(
        r.json(), "invalid_request_error", code="parameter_invalid_boolean", param="active"
    )


def test_expand_default_price(client, http):
    p = client.v1.products.create({"name": f"Expandable {_tag()}"})
    price = client.v1.prices.create({"currency": "usd", "unit_amount": 2500, "product": p.id})
    u = _d(client.v1.products.update(p.id, {"default_price": price.id}))
    assert_matches(u, "product")
    assert u["default_price"] == price.id

    plain = _d(client.v1.products.retrieve(p.id))
    assert plain["default_price"] == price.id

    ex = client.v1.products.retrieve(p.id, {"expand": ["default_price"]})
    assert isinstance(ex.default_price, stripe.Price)
    assert ex.default_price.id == price.id and ex.default_price.unit_amount == 2500

    # the SDK turns decimal strings into Decimal: check the wire form for the schema
    r = http.get(f"/v1/products/{p.id}", params={"expand[]": "default_price"})
    assert r.status_code == 200
    ex = r.json()
    assert_matches(ex, "product")
    assert ex["default_price"]["id"] == price.id
    assert ex["default_price"]["unit_amount"] == 2500 and ex["default_price"]["product"] == p.id
    assert ex["default_price"]["unit_amount_decimal"] == "2500"

    r = http.get("/v1/products", params=[("ids[]", p.id), ("expand[]", "data.default_price")])
    assert r.status_code == 200
    body = r.json()
    assert_list_of(body, "product", url="/v1/products")
    assert body["data"][0]["default_price"]["id"] == price.id

    # and two levels: the price's product back again
    r = http.get(f"/v1/products/{p.id}", params={"expand[]": "default_price.product"})
    assert r.status_code == 200
    assert r.json()["default_price"]["product"]["id"] == p.id
    assert_matches(r.json(), "product")


def test_default_price_of_another_product_is_refused(client, http):
    p1 = client.v1.products.create({"name": f"P1 {_tag()}"})
    p2 = client.v1.products.create({"name": f"P2 {_tag()}"})
    other = client.v1.prices.create({"currency": "usd", "unit_amount": 100, "product": p2.id})
    r = http.post(f"/v1/products/{p1.id}", data={"default_price": other.id})
    assert r.status_code == 400
    assert_error(r.json(), "invalid_request_error", param="default_price")
    assert client.v1.products.retrieve(p1.id).default_price is None


def test_unknown_parameter(http):
    name = f"Unknown {_tag()}"
    r = http.post("/v1/products", data={"name": name, "colour": "red"})
    assert r.status_code == 400
    assert_error(r.json(), "invalid_request_error", code="parameter_unknown", param="colour")


def test_list_by_created_shippable_and_url(client):
    tag = _tag()
    a = client.v1.products.create(
        {"name": f"A {tag}", "shippable": True, "url": f"https://x/{tag}"}
    )
    b = client.v1.products.create({"name": f"B {tag}", "shippable": False})
    ids = [a.id, b.id]

    def got(**params):
        lst = _d(client.v1.products.list({"ids": ids, "limit": 100, **params}))
        assert_list_of(lst, "product", url="/v1/products")
        return {x["id"] for x in lst["data"]}

    assert got(shippable=True) == {a.id} and got(shippable=False) == {b.id}
    assert got(url=f"https://x/{tag}") == {a.id}
    assert got(created={"gte": a.created}) == {a.id, b.id}
    assert got(created={"gt": b.created}) == set()
    assert got(created={"lt": a.created}) == set()
    assert got(type="service") == {a.id, b.id} and got(type="good") == set()
