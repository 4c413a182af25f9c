"""/v1/plans end to end: the official SDK against a real `meterline serve`.

A plan is a recurring price in the plan shape: `amount`, `interval`, `usage_type`,
`transform_usage`. The server is shared by the session, so every test works under a product of
its own and filters lists by it; every refusal is followed by a check that nothing was written.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from openapi_check import assert_deleted, assert_error, assert_list_of, assert_matches
from sdk_helpers import INF_TIERS, as_dict, refused, uid


def checked(obj, schema: str = "plan") -> dict:
    d = as_dict(obj)
    assert_matches(d, schema)
    return d


def plan_ids(client, **params) -> list[str]:
    page = client.v1.plans.list({"limit": 100, **params})
    assert_list_of(as_dict(page), "plan", url="/v1/plans")
    return [p.id for p in page.data]


def price_ids(client, **params) -> list[str]:
    page = client.v1.prices.list({"limit": 100, **params})
    assert_list_of(as_dict(page), "price", url="/v1/prices")
    return [p.id for p in page.data]


@pytest.fixture
def product(client) -> str:
    return client.v1.products.create({"name": uid("Plans test")}).id


@pytest.fixture
def create(client, product):
    def make(**params):
        return client.v1.plans.create(
            {"product": product, "currency": "usd", "interval": "month", **params}
        )

    return make


@pytest.fixture
def unchanged(client, product):
    """The product's plans and prices are the same at the end of the block as at its start."""

    class Snapshot:
        def __enter__(self):
            self.before = (plan_ids(client, product=product), price_ids(client, product=product))
            return self

        def __exit__(self, *exc):
            if exc[0] is None:
                assert (
                    plan_ids(client, product=product),
                    price_ids(client, product=product),
                ) == self.before

    return Snapshot


# -- create --------------------------------------------------------------------------------------
def test_create_per_unit_plan(client, product):
    pid = uid("plan_gold")
    p = client.v1.plans.create(
        {
            "id": pid,
            "product": product,
            "currency": "USD",
            "amount": 2500,
            "interval": "week",
            "interval_count": 2,
            "usage_type": "licensed",
            "trial_period_days": 7,
            "nickname": "Gold",
            "metadata": {"tier": "gold"},
        }
    )
    d = checked(p)
    assert (d["id"], d["object"], d["product"], d["currency"]) == (pid, "plan", product, "usd")
    assert (d["amount"], d["amount_decimal"], d["billing_scheme"]) == (2500, "2500", "per_unit")
    assert (d["interval"], d["interval_count"], d["usage_type"], d["trial_period_days"]) == (
        "week",
        2,
        "licensed",
        7,
    )
    assert (d["nickname"], d["metadata"], d["active"], d["livemode"], d["meter"]) == (
        "Gold",
        {"tier": "gold"},
        True,
        False,
        None,
    )
    assert d["tiers"] is None and d["tiers_mode"] is None and d["transform_usage"] is None
    assert checked(client.v1.plans.retrieve(pid)) == d
    assert plan_ids(client, product=product) == [pid]
    defaults = checked(
        client.v1.plans.create(
            {"product": product, "currency": "usd", "amount": 0, "interval": "year"}
        )
    )
    assert defaults["id"].startswith("price_")  # Stripe gives new plans price ids
    assert (
        defaults["interval_count"],
        defaults["usage_type"],
        defaults["trial_period_days"],
        defaults["amount"],
    ) == (1, "licensed", None, 0)


def test_create_metered_plan_with_amount_decimal(client, create, http):
    p = create(amount_decimal="0.5", usage_type="metered", interval="day", interval_count=30)
    d = checked(p)
    assert (
        d["amount"],
        d["amount_decimal"],
        d["usage_type"],
        d["interval"],
        d["interval_count"],
    ) == (None, "0.5", "metered", "day", 30)
    assert p.amount_decimal == Decimal("0.5")
    raw = http.get(f"/v1/plans/{p.id}").json()
    assert raw["amount_decimal"] == "0.5" and raw["amount"] is None
    assert checked(create(amount_decimal="0.0125"))["amount_decimal"] == "0.0125"


def test_amount_xor_amount_decimal(create, unchanged):
    with unchanged():
        err = refused(
            lambda: create(amount=5, amount_decimal="5.5"),
            400,
            "parameters_exclusive",
            "amount_decimal",
        )
        assert "amount" in err["message"]
        err = refused(lambda: create(), 400, "parameter_missing", "amount")
        assert "amount_decimal" in err["message"]
        refused(lambda: create(amount=100_000_000), 400, "amount_too_large", "amount")
        refused(
            lambda: create(amount_decimal="0.0000000000001"),
            400,
            "parameter_invalid_decimal",
            "amount_decimal",
        )
        refused(lambda: create(unit_amount=100), 400, "parameter_unknown", "unit_amount")


def test_interval_rules(create, unchanged):
    assert checked(create(amount=1, interval="month", interval_count=36))["interval_count"] == 36
    assert checked(create(amount=1, interval="year", interval_count=3))["interval_count"] == 3
    with unchanged():
        refused(
            lambda: create(amount=1, interval="month", interval_count=37),
            400,
            "parameter_invalid_integer",
            "interval_count",
        )
        refused(
            lambda: create(amount=1, interval="day", interval_count=1096),
            400,
            "parameter_invalid_integer",
            "interval_count",
        )
        refused(
            lambda: create(amount=1, interval="week", interval_count=157),
            400,
            "parameter_invalid_integer",
            "interval_count",
        )
        refused(
            lambda: create(amount=1, interval="year", interval_count=4),
            400,
            "parameter_invalid_integer",
            "interval_count",
        )
        refused(lambda: create(amount=1, interval=""), 400, "parameter_missing", "interval")
        refused(
            lambda: create(amount=1, interval="fortnight"),
            400,
            "parameter_invalid_enum",
            "interval",
        )
        refused(
            lambda: create(amount=1, usage_type="sometimes"),
            400,
            "parameter_invalid_enum",
            "usage_type",
        )
        refused(
            lambda: create(amount=1, trial_period_days=731),
            400,
            "parameter_invalid_integer",
            "trial_period_days",
        )
        refused(
            lambda: create(amount=1, currency="xyz"), 400, "parameter_invalid_currency", "currency"
        )


@pytest.mark.parametrize("mode", ["graduated", "volume"])
def test_tiered_plan(client, create, mode):
    p = create(billing_scheme="tiered", tiers_mode=mode, tiers=INF_TIERS, usage_type="metered")
    d = checked(p)
    assert (d["billing_scheme"], d["tiers_mode"], d["amount"], d["amount_decimal"]) == (
        "tiered",
        mode,
        None,
        None,
    )
    want = [
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
    assert d["tiers"] == want
    assert checked(client.v1.plans.retrieve(p.id, {"expand": ["tiers"]}))["tiers"] == want
    as_price = checked(client.v1.prices.retrieve(p.id, {"expand": ["tiers"]}), "price")
    assert as_price["tiers"] == want and as_price["tiers_mode"] == mode


def test_tiered_plan_refusals(create, unchanged):
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
            lambda: create(
                **t, tiers=[{"up_to": 10, "unit_amount": 1}, {"up_to": 20, "unit_amount": 1}]
            ),
            400,
            "parameter_invalid",
            "tiers[1][up_to]",
        )
        refused(
            lambda: create(
                **t,
                tiers=[
                    {"up_to": 10, "unit_amount": 1},
                    {"up_to": 10, "unit_amount": 1},
                    {"up_to": "inf", "unit_amount": 1},
                ],
            ),
            400,
            "parameter_invalid",
            "tiers[1][up_to]",
        )
        refused(lambda: create(**t, amount=5, tiers=INF_TIERS), 400, "parameter_invalid", "amount")
        refused(
            lambda: create(**t, amount_decimal="5", tiers=INF_TIERS),
            400,
            "parameter_invalid",
            "amount_decimal",
        )


def test_transform_usage(create, unchanged):
    p = create(amount=100, transform_usage={"divide_by": 1000, "round": "down"})
    assert checked(p)["transform_usage"] == {"divide_by": 1000, "round": "down"}
    with unchanged():
        err = refused(
            lambda: create(
                billing_scheme="tiered",
                tiers_mode="volume",
                tiers=INF_TIERS,
                transform_usage={"divide_by": 10, "round": "up"},
            ),
            400,
            "parameter_invalid",
            "transform_usage",
        )
        assert "tiers" in err["message"]
        refused(
            lambda: create(amount=1, transform_usage={"divide_by": 0, "round": "up"}),
            400,
            "parameter_invalid_integer",
            "transform_usage[divide_by]",
        )
        refused(
            lambda: create(amount=1, transform_usage={"divide_by": 2, "round": "nearest"}),
            400,
            "parameter_invalid_enum",
            "transform_usage[round]",
        )
        refused(
            lambda: create(amount=1, transform_quantity={"divide_by": 2, "round": "up"}),
            400,
            "parameter_unknown",
            "transform_quantity",
        )


def test_inline_product(client):
    name = uid("Inline plan product")
    p = client.v1.plans.create(
        {
            "currency": "usd",
            "amount": 900,
            "interval": "month",
            "product": {"name": name, "unit_label": "seat"},
        }
    )
    d = checked(p)
    assert d["product"].startswith("prod_")
    prod = client.v1.products.retrieve(d["product"])
    assert_matches(as_dict(prod), "product")
    assert (prod.name, prod.unit_label) == (name, "seat")
    assert plan_ids(client, product=prod.id) == [p.id]
    pid = uid("prod_plan")
    q = client.v1.plans.create(
        {
            "currency": "usd",
            "amount": 1,
            "interval": "month",
            "product": {"id": pid, "name": "With id"},
        }
    )
    assert q.product == pid and client.v1.products.retrieve(pid).name == "With id"


def test_product_refusals(client, product, unchanged):
    base = {"currency": "usd", "amount": 100, "interval": "month"}
    ghost = uid("prod_ghost")
    with unchanged():
        refused(lambda: client.v1.plans.create(base), 400, "parameter_missing", "product")
        refused(
            lambda: client.v1.plans.create({**base, "product": ghost}),
            404,
            "resource_missing",
            "product",
        )
        refused(
            lambda: client.v1.plans.create({**base, "product": {"id": ghost}}),
            400,
            "parameter_missing",
            "product[name]",
        )
        refused(
            lambda: client.v1.plans.create(
                {**base, "product": product, "product_data": {"name": "x"}}
            ),
            400,
            "parameter_unknown",
            "product_data",
        )
        refused(
            lambda: client.v1.plans.create({**base, "product": {"id": product, "name": "Clash"}}),
            400,
            "resource_already_exists",
            "product[id]",
        )
        # the inline product is rolled back when the plan is refused after it was made
        taken = uid("plan_taken")
        client.v1.plans.create({**base, "id": taken, "product": {"name": "First"}})
        refused(
            lambda: client.v1.plans.create(
                {**base, "id": taken, "product": {"id": ghost, "name": "Second"}}
            ),
            400,
            "resource_already_exists",
            "id",
        )
    refused(lambda: client.v1.products.retrieve(ghost), 404, "resource_missing", "id")


def test_custom_id_conflicts(client, create, unchanged):
    pid = uid("plan_dup")
    first = create(id=pid, amount=100)
    assert first.id == pid
    with unchanged():
        refused(lambda: create(id=pid, amount=200), 400, "resource_already_exists", "id")
    assert client.v1.plans.retrieve(pid).amount == 100


@pytest.mark.parametrize("round_", range(4))
def test_concurrent_custom_ids(client, server, product, round_):
    """Racing creates of one custom plan id (and one inline product id): one 200, the rest a clean
    400 resource_already_exists, never a 500 from the primary key."""
    pid, prod_id = uid("plan_race"), uid("prod_race")

    def post(i: int) -> tuple[int, dict]:
        with server.http() as h:
            data = {"id": pid, "currency": "usd", "amount": str(i), "interval": "month"}
            data.update(
                {"product": product} if i % 2 else {"product[id]": prod_id, "product[name]": "Race"}
            )
            r = h.post("/v1/plans", data=data)
            return r.status_code, r.json()

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(post, range(12)))
    assert sorted(status for status, _ in results) == [200] + [400] * 11, results
    for status, body in results:
        if status == 400:
            assert body["error"]["param"] in ("id", "product[id]")
            assert_error(body, "invalid_request_error", "resource_already_exists")
    winner = next(body for status, body in results if status == 200)
    assert checked(client.v1.plans.retrieve(pid)) == winner


def test_unknown_meter_or_licensed_meter_refused(create, unchanged):
    """A meter must exist in the account (404), and only a metered plan may name one (400).
    Active and inactive meters: tests/test_api_meters.py."""
    with unchanged():
        err = refused(
            lambda: create(amount=1, usage_type="metered", meter="mtr_123"),
            404,
            "resource_missing",
            "meter",
        )
        assert "mtr_123" in err["message"]
        refused(lambda: create(amount=1, meter="mtr_123"), 400, "parameter_invalid", "meter")


# -- plans and prices are one thing ------------------------------------------------------------------
def test_plan_is_a_price(client, create, product):
    p = create(
        amount=1500,
        interval="year",
        interval_count=2,
        trial_period_days=30,
        nickname="Annual",
        transform_usage={"divide_by": 5, "round": "up"},
    )
    pd = checked(p)
    price = client.v1.prices.retrieve(p.id)
    d = checked(price, "price")
    assert (d["id"], d["object"], d["type"], d["product"]) == (p.id, "price", "recurring", product)
    assert (
        (d["unit_amount"], d["unit_amount_decimal"])
        == (pd["amount"], pd["amount_decimal"])
        == (1500, "1500")
    )
    assert d["recurring"] == {
        "interval": "year",
        "interval_count": 2,
        "meter": None,
        "trial_period_days": 30,
        "usage_type": "licensed",
    }
    assert d["recurring"]["interval"] == pd["interval"]
    assert d["transform_quantity"] == pd["transform_usage"] == {"divide_by": 5, "round": "up"}
    assert (d["nickname"], d["currency"], d["created"], d["active"]) == (
        pd["nickname"],
        pd["currency"],
        pd["created"],
        pd["active"],
    )
    assert price_ids(client, product=product) == [p.id]
    # an update through /v1/prices shows on /v1/plans
    client.v1.prices.update(p.id, {"metadata": {"via": "prices"}})
    assert client.v1.plans.retrieve(p.id).metadata["via"] == "prices"


def test_recurring_price_is_a_plan_one_time_is_not(client, product):
    one_time = client.v1.prices.create({"product": product, "currency": "usd", "unit_amount": 500})
    monthly = client.v1.prices.create(
        {
            "product": product,
            "currency": "eur",
            "unit_amount_decimal": "12.5",
            "recurring": {"interval": "month", "usage_type": "metered"},
        }
    )
    refused(lambda: client.v1.plans.retrieve(one_time.id), 404, "resource_missing", "id")
    assert plan_ids(client, product=product) == [monthly.id]
    plan = checked(client.v1.plans.retrieve(monthly.id))
    assert (
        plan["object"],
        plan["amount"],
        plan["amount_decimal"],
        plan["interval"],
        plan["usage_type"],
        plan["currency"],
    ) == ("plan", None, "12.5", "month", "metered", "eur")
    refused(
        lambda: client.v1.plans.update(one_time.id, {"nickname": "x"}),
        404,
        "resource_missing",
        "id",
    )
    refused(lambda: client.v1.plans.delete(one_time.id), 404, "resource_missing", "id")
    assert client.v1.prices.retrieve(one_time.id).active is True


# -- update -------------------------------------------------------------------------------------------
def test_update(client, create):
    p = create(amount=100, nickname="Old", metadata={"a": "1", "b": "2"}, trial_period_days=3)
    u = client.v1.plans.update(
        p.id,
        {
            "active": False,
            "nickname": "New",
            "metadata": {"a": "", "c": "3"},
            "trial_period_days": 14,
        },
    )
    d = checked(u)
    assert (d["active"], d["nickname"], d["metadata"], d["trial_period_days"]) == (
        False,
        "New",
        {"b": "2", "c": "3"},
        14,
    )
    assert d["amount"] == 100 and d["created"] == p.created
    assert checked(client.v1.plans.retrieve(p.id)) == d
    assert client.v1.prices.retrieve(p.id).recurring.trial_period_days == 14
    cleared = client.v1.plans.update(
        p.id, {"nickname": "", "metadata": "", "trial_period_days": ""}
    )
    assert (cleared.nickname, as_dict(cleared)["metadata"], cleared.trial_period_days) == (
        None,
        {},
        None,
    )
    assert client.v1.plans.update(p.id, {"active": True}).active is True


@pytest.mark.parametrize(
    "field,value",
    [
        ("amount", 200),
        ("amount_decimal", "1.5"),
        ("currency", "eur"),
        ("interval", "year"),
        ("interval_count", 2),
        ("usage_type", "metered"),
        ("product", "prod_x"),
        ("tiers_mode", "volume"),
        ("lookup_key", "k"),
    ],
)
def test_update_refuses_fixed_fields(client, create, field, value):
    p = create(amount=100, nickname="Keep")
    before = checked(client.v1.plans.retrieve(p.id))
    refused(
        lambda: client.v1.plans.update(p.id, {"nickname": "Changed", field: value}),
        400,
        "parameter_unknown",
        field,
    )
    assert checked(client.v1.plans.retrieve(p.id)) == before


def test_update_refusals(client, create):
    p = create(amount=100)
    refused(
        lambda: client.v1.plans.update(p.id, {"trial_period_days": 731}),
        400,
        "parameter_invalid_integer",
        "trial_period_days",
    )
    refused(
        lambda: client.v1.plans.update(p.id, {"trial_period_days": -1}),
        400,
        "parameter_invalid_integer",
        "trial_period_days",
    )
    refused(
        lambda: client.v1.plans.update(p.id, {"active": "maybe"}),
        400,
        "parameter_invalid_boolean",
        "active",
    )
    assert client.v1.plans.retrieve(p.id).trial_period_days is None
    refused(
        lambda: client.v1.plans.update(uid("plan_ghost"), {"nickname": "x"}),
        404,
        "resource_missing",
        "id",
    )


# -- delete --------------------------------------------------------------------------------------------
def test_delete(client, create, product):
    keep = create(amount=1)
    p = create(amount=100)
    gone = client.v1.plans.delete(p.id)
    assert_deleted(as_dict(gone), "plan")
    assert gone.id == p.id and gone.deleted is True
    refused(lambda: client.v1.plans.retrieve(p.id), 404, "resource_missing", "id")
    refused(lambda: client.v1.prices.retrieve(p.id), 404, "resource_missing", "id")
    refused(lambda: client.v1.plans.update(p.id, {"nickname": "x"}), 404, "resource_missing", "id")
    refused(lambda: client.v1.prices.update(p.id, {"nickname": "x"}), 404, "resource_missing", "id")
    refused(lambda: client.v1.plans.delete(p.id), 404, "resource_missing", "id")
    assert plan_ids(client, product=product) == [keep.id]
    assert price_ids(client, product=product) == [keep.id]


# -- list ------------------------------------------------------------------------------------------------
def test_list(client, create, product):
    a = create(amount=1)
    b = create(amount=2, interval="year")
    client.v1.plans.update(a.id, {"active": False})
    assert plan_ids(client, product=product) == [b.id, a.id]
    assert plan_ids(client, product=product, active=True) == [b.id]
    assert plan_ids(client, product=product, active=False) == [a.id]
    assert plan_ids(client, product=product, created={"gt": b.created}) == []
    assert plan_ids(client, product=product, created={"lte": b.created}) == [b.id, a.id]
    page = client.v1.plans.list({"product": product, "limit": 1})
    assert [x.id for x in page.data] == [b.id] and page.has_more is True
    assert_list_of(as_dict(client.v1.plans.list()), "plan", url="/v1/plans")
    listed = as_dict(client.v1.plans.list({"product": product, "expand": ["data.product"]}))
    assert_list_of(listed, "plan", url="/v1/plans")
    assert [x["product"]["id"] for x in listed["data"]] == [product, product]
    refused(lambda: client.v1.plans.list({"type": "one_time"}), 400, "parameter_unknown", "type")
