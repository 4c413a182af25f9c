"""/v1/prices end to end: the official SDK against a real `meterline serve`.

The server is shared by the whole session, so every test works under a product of its own and
filters lists by it. Every successful object is checked against Stripe's OpenAPI schema, every
refusal against the error envelope, and after a refusal the product's price list is unchanged.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from openapi_check import assert_error, assert_list_of, assert_matches
from sdk_helpers import INF_TIERS, as_dict, refused, uid


def checked(obj, schema: str = "price") -> dict:
    d = as_dict(obj)
    assert_matches(d, schema)
    return d


def ids_of(client, **params) -> list[str]:
    page = client.v1.prices.list({"limit": 100, **params})
    assert_list_of(as_dict(page), "price", url="/v1/prices")
    return [p.id for p in page.data]


@pytest.fixture
def product(client) -> str:
    return client.v1.products.create({"name": uid("Prices test")}).id


@pytest.fixture
def create(client, product):
    """Create a price under this test's product (params override)."""

    def make(**params):
        return client.v1.prices.create({"product": product, "currency": "usd", **params})

    return make


@pytest.fixture
def unchanged(client, product):
    """Assert, at the end of a test block, that the product's prices are the ones listed before."""

    class Snapshot:
        def __enter__(self):
            self.before = ids_of(client, product=product)
            return self

        def __exit__(self, *exc):
            if exc[0] is None:
                assert ids_of(client, product=product) == self.before

    return Snapshot


# -- per-unit amounts ------------------------------------------------------------------------------------
def test_per_unit_with_unit_amount(client, create, product):
    p = create(unit_amount=1250, nickname="Basic", metadata={"k": "v"})
    d = checked(p)
    assert p.id.startswith("price_")
    assert (d["object"], d["type"], d["billing_scheme"], d["currency"]) == (
        "price",
        "one_time",
        "per_unit",
        "usd",
    )
    assert (d["unit_amount"], d["unit_amount_decimal"]) == (1250, "1250")
    assert d["product"] == product and d["active"] is True and d["livemode"] is False
    assert d["recurring"] is None and d["tiers_mode"] is None and d["transform_quantity"] is None
    assert d["lookup_key"] is None and d["nickname"] == "Basic" and d["metadata"] == {"k": "v"}
    assert d["tax_behavior"] == "unspecified" and "tiers" not in d
    got = client.v1.prices.retrieve(p.id)
    assert checked(got) == d
    assert ids_of(client, product=product) == [p.id]


def test_per_unit_with_fractional_decimal(client, create, http):
    p = create(unit_amount_decimal="0.0125")
    d = checked(p)
    assert d["unit_amount"] is None and d["unit_amount_decimal"] == "0.0125"
    raw = http.get(f"/v1/prices/{p.id}").json()  # exactly the string, never a float
    assert raw["unit_amount_decimal"] == "0.0125" and raw["unit_amount"] is None
    assert checked(client.v1.prices.retrieve(p.id)) == d
    assert p.unit_amount_decimal == Decimal("0.0125")  # the SDK's own view
    tiny = create(unit_amount_decimal="0.000000000001")  # twelve places is the limit
    raw = http.get(f"/v1/prices/{tiny.id}").json()
    assert raw["unit_amount_decimal"] == "0.000000000001" and raw["unit_amount"] is None
    big = checked(
        create(unit_amount_decimal=Decimal("1234.5"))
    )  # the SDK sends a Decimal as its string
    assert (big["unit_amount"], big["unit_amount_decimal"]) == (None, "1234.5")


def test_per_unit_amount_refusals(create, unchanged):
    with unchanged():
        err = refused(
            lambda: create(unit_amount=5, unit_amount_decimal="5.5"),
            400,
            "parameters_exclusive",
            "unit_amount_decimal",
        )
        assert "unit_amount" in err["message"]
        refused(lambda: create(), 400, "parameter_missing", "unit_amount")
        refused(
            lambda: create(unit_amount_decimal="0.0000000000001"),
            400,
            "parameter_invalid_decimal",
            "unit_amount_decimal",
        )
        refused(
            lambda: create(unit_amount_decimal="abc"),
            400,
            "parameter_invalid_decimal",
            "unit_amount_decimal",
        )
        refused(lambda: create(unit_amount="1.5"), 400, "parameter_invalid_integer", "unit_amount")
        refused(lambda: create(unit_amount=100_000_000), 400, "amount_too_large", "unit_amount")
        refused(lambda: create(unit_amount=-1), 400, "amount_too_small", "unit_amount")
        refused(lambda: create(unit_amount=1, color="red"), 400, "parameter_unknown", "color")
        refused(
            lambda: create(unit_amount=1, billing_scheme="flat"),
            400,
            "parameter_invalid_enum",
            "billing_scheme",
        )


# -- recurring ---------------------------------------------------------------------------------------
def test_recurring(client, create, product):
    lic = create(unit_amount=2000, recurring={"interval": "month"})
    d = checked(lic)
    assert d["type"] == "recurring"
    assert d["recurring"] == {
        "interval": "month",
        "interval_count": 1,
        "meter": None,
        "trial_period_days": None,
        "usage_type": "licensed",
    }
    met = create(
        unit_amount=3,
        recurring={
            "interval": "week",
            "interval_count": 2,
            "usage_type": "metered",
            "trial_period_days": 14,
        },
    )
    d = checked(met)
    assert d["recurring"] == {
        "interval": "week",
        "interval_count": 2,
        "meter": None,
        "trial_period_days": 14,
        "usage_type": "metered",
    }
    assert checked(client.v1.prices.retrieve(met.id)) == d


@pytest.mark.parametrize("interval,cap", [("day", 1095), ("week", 156), ("month", 36), ("year", 3)])
def test_recurring_interval_limits(client, create, product, unchanged, interval, cap):
    ok = create(unit_amount=100, recurring={"interval": interval, "interval_count": cap})
    assert checked(ok)["recurring"]["interval_count"] == cap
    with unchanged():
        err = refused(
            lambda: create(
                unit_amount=100, recurring={"interval": interval, "interval_count": cap + 1}
            ),
            400,
            "parameter_invalid_integer",
            "recurring[interval_count]",
        )
        assert str(cap) in err["message"]
        refused(
            lambda: create(unit_amount=100, recurring={"interval": interval, "interval_count": 0}),
            400,
            "parameter_invalid_integer",
            "recurring[interval_count]",
        )
    assert ids_of(client, product=product) == [ok.id]


def test_recurring_refusals(create, unchanged):
    with unchanged():
        refused(
            lambda: create(unit_amount=1, recurring={"interval": "fortnight"}),
            400,
            "parameter_invalid_enum",
            "recurring[interval]",
        )
        refused(
            lambda: create(unit_amount=1, recurring={"interval_count": 2}),
            400,
            "parameter_missing",
            "recurring[interval]",
        )
        refused(
            lambda: create(
                unit_amount=1, recurring={"interval": "month", "usage_type": "sometimes"}
            ),
            400,
            "parameter_invalid_enum",
            "recurring[usage_type]",
        )
        refused(
            lambda: create(
                unit_amount=1, recurring={"interval": "month", "trial_period_days": 731}
            ),
            400,
            "parameter_invalid_integer",
            "recurring[trial_period_days]",
        )
        refused(
            lambda: create(
                unit_amount=1, recurring={"interval": "month", "aggregate_usage": "sum"}
            ),
            400,
            "parameter_unknown",
            "recurring[aggregate_usage]",
        )


def test_unknown_or_licensed_recurring_meter_is_refused(create, unchanged):
    """A meter must exist in the account (404), and only a metered price may name one (400)."""
    with unchanged():
        err = refused(
            lambda: create(
                unit_amount=1,
                recurring={"interval": "month", "usage_type": "metered", "meter": "mtr_123"},
            ),
            404,
            "resource_missing",
            "recurring[meter]",
        )
        assert "mtr_123" in err["message"]
        refused(
            lambda: create(unit_amount=1, recurring={"interval": "month", "meter": "mtr_123"}),
            400,
            "parameter_invalid",
            "recurring[meter]",
        )


# -- tiers ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["graduated", "volume"])
def test_tiered(client, create, product, mode):
    p = create(
        billing_scheme="tiered", tiers_mode=mode, tiers=INF_TIERS, recurring={"interval": "month"}
    )
    d = checked(p)
    assert (d["billing_scheme"], d["tiers_mode"], d["unit_amount"], d["unit_amount_decimal"]) == (
        "tiered",
        mode,
        None,
        None,
    )
    assert "tiers" not in d
    assert "tiers" not in as_dict(client.v1.prices.retrieve(p.id))
    full = checked(client.v1.prices.retrieve(p.id, {"expand": ["tiers"]}))
    assert full["tiers"] == [
        {
            "flat_amount": None,
            "flat_amount_decimal": None,
            "unit_amount": 10,
            "unit_amount_decimal": "10",
            "up_to": 1000,
        },
        {
            "flat_amount": None,
            "flat_amount_decimal": None,
            "unit_amount": 5,
            "unit_amount_decimal": "5",
            "up_to": None,
        },
    ]
    made = checked(
        create(
            billing_scheme="tiered",
            tiers_mode=mode,
            expand=["tiers"],
            tiers=[
                {"up_to": 10, "flat_amount": 1000},
                {"up_to": 100, "unit_amount_decimal": "0.25", "flat_amount_decimal": "150.5"},
                {"up_to": "inf", "unit_amount": 1},
            ],
        )
    )
    assert made["tiers"] == [
        {
            "flat_amount": 1000,
            "flat_amount_decimal": "1000",
            "unit_amount": None,
            "unit_amount_decimal": None,
            "up_to": 10,
        },
        {
            "flat_amount": None,
            "flat_amount_decimal": "150.5",
            "unit_amount": None,
            "unit_amount_decimal": "0.25",
            "up_to": 100,
        },
        {
            "flat_amount": None,
            "flat_amount_decimal": None,
            "unit_amount": 1,
            "unit_amount_decimal": "1",
            "up_to": None,
        },
    ]
    listed = client.v1.prices.list({"product": product, "expand": ["data.tiers"]})
    assert_list_of(as_dict(listed), "price", url="/v1/prices")
    assert [len(x.tiers) for x in listed.data] == [3, 2]
    assert all("tiers" not in as_dict(x) for x in client.v1.prices.list({"product": product}).data)


def test_tiered_refusals(create, unchanged):
    t = {"billing_scheme": "tiered", "tiers_mode": "graduated"}
    with unchanged():
        refused(lambda: create(**t), 400, "parameter_missing", "tiers")
        refused(
            lambda: create(billing_scheme="tiered", tiers=INF_TIERS),
            400,
            "parameter_missing",
            "tiers_mode",
        )
        refused(
            lambda: create(**{**t, "tiers_mode": "stairs"}, tiers=INF_TIERS),
            400,
            "parameter_invalid_enum",
            "tiers_mode",
        )
        err = refused(
            lambda: create(
                **t, tiers=[{"up_to": 1000, "unit_amount": 10}, {"up_to": 2000, "unit_amount": 5}]
            ),
            400,
            "parameter_invalid",
            "tiers[1][up_to]",
        )
        assert "inf" in err["message"]
        refused(
            lambda: create(
                **t,
                tiers=[
                    {"up_to": 1000, "unit_amount": 10},
                    {"up_to": 1000, "unit_amount": 5},
                    {"up_to": "inf", "unit_amount": 1},
                ],
            ),
            400,
            "parameter_invalid",
            "tiers[1][up_to]",
        )
        refused(
            lambda: create(
                **t,
                tiers=[
                    {"up_to": 500, "unit_amount": 10},
                    {"up_to": 100, "unit_amount": 5},
                    {"up_to": "inf", "unit_amount": 1},
                ],
            ),
            400,
            "parameter_invalid",
            "tiers[1][up_to]",
        )
        refused(
            lambda: create(
                **t, tiers=[{"up_to": "inf", "unit_amount": 10}, {"up_to": "inf", "unit_amount": 5}]
            ),
            400,
            "parameter_invalid",
            "tiers[0][up_to]",
        )
        refused(
            lambda: create(**t, unit_amount=5, tiers=INF_TIERS),
            400,
            "parameter_invalid",
            "unit_amount",
        )
        refused(
            lambda: create(**t, unit_amount_decimal="5.5", tiers=INF_TIERS),
            400,
            "parameter_invalid",
            "unit_amount_decimal",
        )
        refused(
            lambda: create(**t, tiers=[{"unit_amount": 10}]),
            400,
            "parameter_missing",
            "tiers[0][up_to]",
        )
        refused(
            lambda: create(
                **t,
                tiers=[{"up_to": "lots", "unit_amount": 10}, {"up_to": "inf", "unit_amount": 1}],
            ),
            400,
            "parameter_invalid_integer",
            "tiers[0][up_to]",
        )
        refused(
            lambda: create(**t, tiers=[{"up_to": 10, "unit_amount": 1}, {"up_to": "inf"}]),
            400,
            "parameter_missing",
            "tiers[1]",
        )
        refused(
            lambda: create(
                **t, tiers=[{"up_to": "inf", "unit_amount": 1, "unit_amount_decimal": "1.5"}]
            ),
            400,
            "parameters_exclusive",
            "tiers[0][unit_amount_decimal]",
        )
        refused(
            lambda: create(**t, tiers=[{"up_to": "inf", "unit_amount": 1, "color": "red"}]),
            400,
            "parameter_unknown",
            "tiers[0][color]",
        )
        refused(lambda: create(unit_amount=5, tiers=INF_TIERS), 400, "parameter_invalid", "tiers")
        refused(
            lambda: create(unit_amount=5, tiers_mode="volume"),
            400,
            "parameter_invalid",
            "tiers_mode",
        )


# -- transform_quantity ----------------------------------------------------------------------------------
def test_transform_quantity(client, create, unchanged):
    p = create(unit_amount=500, transform_quantity={"divide_by": 1000, "round": "up"})
    d = checked(p)
    assert d["transform_quantity"] == {"divide_by": 1000, "round": "up"}
    down = checked(
        create(
            unit_amount=1,
            transform_quantity={"divide_by": 3, "round": "down"},
            recurring={"interval": "month"},
        )
    )
    assert down["transform_quantity"] == {"divide_by": 3, "round": "down"}
    with unchanged():
        err = refused(
            lambda: create(
                billing_scheme="tiered",
                tiers_mode="volume",
                tiers=INF_TIERS,
                transform_quantity={"divide_by": 10, "round": "up"},
            ),
            400,
            "parameter_invalid",
            "transform_quantity",
        )
        assert "tiers" in err["message"]
        refused(
            lambda: create(unit_amount=1, transform_quantity={"divide_by": 0, "round": "up"}),
            400,
            "parameter_invalid_integer",
            "transform_quantity[divide_by]",
        )
        refused(
            lambda: create(unit_amount=1, transform_quantity={"round": "up"}),
            400,
            "parameter_missing",
            "transform_quantity[divide_by]",
        )
        refused(
            lambda: create(unit_amount=1, transform_quantity={"divide_by": 10}),
            400,
            "parameter_missing",
            "transform_quantity[round]",
        )
        refused(
            lambda: create(unit_amount=1, transform_quantity={"divide_by": 10, "round": "nearest"}),
            400,
            "parameter_invalid_enum",
            "transform_quantity[round]",
        )


# -- product and product_data ---------------------------------------------------------------------------
def test_product_data_creates_a_product(client):
    name = uid("Inline")
    p = client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount": 700,
            "product_data": {"name": name, "metadata": {"src": "inline"}},
        }
    )
    d = checked(p)
    assert d["product"].startswith("prod_")
    prod = client.v1.products.retrieve(d["product"])
    assert_matches(as_dict(prod), "product")
    assert (prod.name, prod.metadata["src"], prod.active) == (name, "inline", True)
    assert ids_of(client, product=prod.id) == [p.id]
    pid = uid("prod_custom")
    q = client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount": 1,
            "product_data": {"id": pid, "name": "Custom id", "unit_label": "seat"},
        }
    )
    assert q.product == pid and client.v1.products.retrieve(pid).unit_label == "seat"


def test_product_refusals(client, product, unchanged):
    base = {"currency": "usd", "unit_amount": 100}
    ghost = uid("prod_ghost")
    key = uid("taken")
    client.v1.prices.create({**base, "product": product, "lookup_key": key})
    with unchanged():
        refused(
            lambda: client.v1.prices.create(
                {**base, "product": product, "product_data": {"id": ghost, "name": "Both"}}
            ),
            400,
            "parameters_exclusive",
            "product_data",
        )
        refused(lambda: client.v1.prices.create(base), 400, "parameter_missing", "product")
        refused(
            lambda: client.v1.prices.create({**base, "product": ghost}),
            404,
            "resource_missing",
            "product",
        )
        refused(
            lambda: client.v1.prices.create({**base, "product_data": {"id": ghost}}),
            400,
            "parameter_missing",
            "product_data[name]",
        )
        refused(
            lambda: client.v1.prices.create(
                {**base, "product_data": {"id": product, "name": "Clash"}}
            ),
            400,
            "resource_already_exists",
            "product_data[id]",
        )
        # a later refusal rolls back the product that product_data had already created
        refused(
            lambda: client.v1.prices.create(
                {**base, "lookup_key": key, "product_data": {"id": ghost, "name": "Rolled back"}}
            ),
            400,
            "parameter_invalid",
            "lookup_key",
        )
    refused(lambda: client.v1.products.retrieve(ghost), 404, "resource_missing", "id")


# -- currency ---------------------------------------------------------------------------------------
def test_currency(create, unchanged):
    p = create(currency="USD", unit_amount=100)
    assert checked(p)["currency"] == "usd"
    assert create(currency="Jpy", unit_amount=100).currency == "jpy"
    with unchanged():
        err = refused(
            lambda: create(currency="xyz", unit_amount=100),
            400,
            "parameter_invalid_currency",
            "currency",
        )
        assert "xyz" in err["message"]
        refused(lambda: create(currency="", unit_amount=100), 400, "parameter_missing", "currency")
        refused(
            lambda: create(currency="dollars", unit_amount=100),
            400,
            "parameter_invalid_string",
            "currency",
        )


# -- lookup keys ------------------------------------------------------------------------------------
def test_lookup_key_unique_and_transfer(client, create, unchanged):
    key = uid("pro_monthly")
    a = create(unit_amount=100, lookup_key=key)
    assert checked(a)["lookup_key"] == key
    with unchanged():
        err = refused(
            lambda: create(unit_amount=200, lookup_key=key), 400, "parameter_invalid", "lookup_key"
        )
        assert a.id in err["message"] and "transfer_lookup_key" in err["message"]
    b = create(unit_amount=200, lookup_key=key, transfer_lookup_key=True)
    assert checked(b)["lookup_key"] == key
    assert client.v1.prices.retrieve(a.id).lookup_key is None
    assert ids_of(client, lookup_keys=[key]) == [b.id]
    # moving it back by update
    refused(
        lambda: client.v1.prices.update(a.id, {"lookup_key": key}),
        400,
        "parameter_invalid",
        "lookup_key",
    )
    assert client.v1.prices.retrieve(b.id).lookup_key == key
    moved = client.v1.prices.update(a.id, {"lookup_key": key, "transfer_lookup_key": True})
    assert checked(moved)["lookup_key"] == key
    assert client.v1.prices.retrieve(b.id).lookup_key is None
    assert ids_of(client, lookup_keys=[key]) == [a.id]
    # re-setting a price's own key is not a conflict
    assert client.v1.prices.update(a.id, {"lookup_key": key}).lookup_key == key


# -- update ------------------------------------------------------------------------------------------
def test_update(client, create):
    p = create(unit_amount=100, nickname="Old", metadata={"a": "1", "b": "2"})
    key = uid("upd")
    u = client.v1.prices.update(
        p.id,
        {
            "active": False,
            "nickname": "New",
            "lookup_key": key,
            "metadata": {"a": "", "c": "3"},
            "tax_behavior": "exclusive",
        },
    )
    d = checked(u)
    assert (d["active"], d["nickname"], d["lookup_key"], d["metadata"], d["tax_behavior"]) == (
        False,
        "New",
        key,
        {"b": "2", "c": "3"},
        "exclusive",
    )
    assert d["unit_amount"] == 100 and d["created"] == p.created
    assert checked(client.v1.prices.retrieve(p.id)) == d
    cleared = client.v1.prices.update(p.id, {"nickname": "", "lookup_key": "", "metadata": ""})
    assert (cleared.nickname, cleared.lookup_key, as_dict(cleared)["metadata"]) == (None, None, {})
    assert client.v1.prices.update(p.id, {"active": True}).active is True


@pytest.mark.parametrize(
    "field,value",
    [
        ("unit_amount", 200),
        ("unit_amount_decimal", "2.5"),
        ("currency", "eur"),
        ("product", "prod_x"),
        ("recurring", {"interval": "month"}),
        ("billing_scheme", "tiered"),
        ("transform_quantity", {"divide_by": 2, "round": "up"}),
    ],
)
def test_update_refuses_fixed_fields(client, create, field, value):
    p = create(unit_amount=100, nickname="Keep")
    before = checked(client.v1.prices.retrieve(p.id))
    err = refused(
        lambda: client.v1.prices.update(p.id, {"nickname": "Changed", field: value}),
        400,
        "parameter_unknown",
        field,
    )
    assert field in err["message"]
    assert checked(client.v1.prices.retrieve(p.id)) == before


def test_update_and_retrieve_unknown_price(client):
    ghost = uid("price_ghost")
    refused(lambda: client.v1.prices.retrieve(ghost), 404, "resource_missing", "id")
    refused(
        lambda: client.v1.prices.update(ghost, {"nickname": "x"}), 404, "resource_missing", "id"
    )


# -- list -------------------------------------------------------------------------------------------
def test_list_filters(client, create, product):
    key = uid("lk")
    one = create(unit_amount=100)
    eur = create(currency="eur", unit_amount=200, recurring={"interval": "month"})
    yearly = create(unit_amount=300, recurring={"interval": "year"})
    client.v1.prices.update(yearly.id, {"active": False})
    metered = create(
        unit_amount=4, recurring={"interval": "month", "usage_type": "metered"}, lookup_key=key
    )
    assert ids_of(client, product=product) == [
        metered.id,
        yearly.id,
        eur.id,
        one.id,
    ]  # newest first
    assert ids_of(client, product=product, type="one_time") == [one.id]
    t = one.created
    assert ids_of(client, product=product, created={"lt": t}) == []
    assert set(ids_of(client, product=product, created={"gte": t})) == {
        one.id,
        eur.id,
        yearly.id,
        metered.id,
    }
    assert ids_of(client, product=product, created=metered.created)[0] == metered.id
    assert ids_of(client, product=product, type="recurring") == [metered.id, yearly.id, eur.id]
    assert ids_of(client, product=product, active=False) == [yearly.id]
    assert ids_of(client, product=product, active=True) == [metered.id, eur.id, one.id]
    assert ids_of(client, product=product, currency="eur") == [eur.id]
    assert ids_of(client, product=product, currency="EUR") == [eur.id]  # as case-blind as create
    assert ids_of(client, product=product, currency="usd") == [metered.id, yearly.id, one.id]
    assert ids_of(client, product=product, recurring={"interval": "month"}) == [metered.id, eur.id]
    assert ids_of(client, product=product, recurring={"interval": "year"}) == [yearly.id]
    assert ids_of(client, product=product, recurring={"usage_type": "metered"}) == [metered.id]
    assert ids_of(client, lookup_keys=[key, uid("nobody")]) == [metered.id]
    assert ids_of(client, product=product, recurring={"interval": "day"}) == []
    page = client.v1.prices.list({"product": product, "limit": 2})
    assert [x.id for x in page.data] == [metered.id, yearly.id] and page.has_more is True
    rest = client.v1.prices.list({"product": product, "limit": 2, "starting_after": yearly.id})
    assert [x.id for x in rest.data] == [eur.id, one.id] and rest.has_more is False
    assert_list_of(as_dict(client.v1.prices.list()), "price", url="/v1/prices")
    refused(
        lambda: client.v1.prices.list({"type": "sometimes"}), 400, "parameter_invalid_enum", "type"
    )
    refused(
        lambda: client.v1.prices.list({"recurring": {"interval": "hour"}}),
        400,
        "parameter_invalid_enum",
        "recurring[interval]",
    )


# -- expand -------------------------------------------------------------------------------------------
def test_expand_product(client, create, product):
    p = create(unit_amount=100, expand=["product"])
    d = checked(p)
    assert d["product"]["id"] == product and d["product"]["object"] == "product"
    got = checked(client.v1.prices.retrieve(p.id, {"expand": ["product"]}))
    assert got["product"] == d["product"]
    assert_matches(got["product"], "product")
    create(unit_amount=200)
    listed = client.v1.prices.list({"product": product, "expand": ["data.product"]})
    ld = as_dict(listed)
    assert_list_of(ld, "price", url="/v1/prices")
    assert [x["product"]["id"] for x in ld["data"]] == [product, product]
    assert client.v1.prices.retrieve(p.id).product == product
    refused(
        lambda: client.v1.prices.retrieve(p.id, {"expand": ["currency"]}),
        400,
        "parameter_invalid",
        "expand[0]",
    )


# -- concurrency -------------------------------------------------------------------------------------
@pytest.mark.parametrize("round_", range(4))
def test_concurrent_lookup_key_claims(client, server, product, round_):
    """Racing creates of one lookup key: each is a clean 200 or 400 (never a 500 from the unique
    index), and exactly one price holds the key at the end."""
    key = uid("race")

    def post(i: int) -> tuple[int, dict]:
        with server.http() as h:
            data = {"product": product, "currency": "usd", "unit_amount": str(i), "lookup_key": key}
            if i % 2:
                data["transfer_lookup_key"] = "true"
            r = h.post("/v1/prices", data=data)
            return r.status_code, r.json()

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(post, range(12)))
    for status, body in results:
        assert status in (200, 400), body
        if status == 400:
            assert_error(body, "invalid_request_error", "parameter_invalid", "lookup_key")
    assert all(
        status == 200 for i, (status, _) in enumerate(results) if i % 2
    )  # transfers always win
    assert len(ids_of(client, lookup_keys=[key])) == 1
    assert len(ids_of(client, product=product)) == sum(status == 200 for status, _ in results)
