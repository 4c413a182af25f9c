"""/v1/products, /v1/prices and /v1/plans (plans are prices, rendered in the plan shape)."""

from __future__ import annotations

from typing import Any

from meterline.api import render
from meterline.api.app import Call
from meterline.api.routing import Router
from meterline.engine.catalog import (
    BILLING_SCHEMES,
    INTERVALS,
    PLAN_NAMES,
    PRICE_NAMES,
    ROUNDS,
    TIERS_MODES,
    USAGE_TYPES,
    PriceSpec,
    Recurring,
    Tier,
)
from meterline.engine.errors import RuleViolation
from meterline.engine.money import check_currency
from meterline.services import catalog as svc
from meterline.wire.errors import invalid
from meterline.wire.lists import envelope, read_created, read_page
from meterline.wire.params import Params, merge_metadata

TAX_BEHAVIORS = ("exclusive", "inclusive", "unspecified")


def _meta_change(p: Params):
    change = p.metadata()
    return None if change is None else (lambda cur: merge_metadata(cur, change))


# -- products -------------------------------------------------------------------------------------
def _product_fields(p: Params, *, update: bool) -> dict[str, Any]:
    values: dict[str, Any] = {}
    name = p.str("name", required=not update, max_len=250)
    if name is not None:
        values["name"] = name
    elif update and p.cleared("name"):
        raise invalid("name", "A product's name cannot be empty.", "parameter_invalid_string_empty")
    for key, max_len in (
        ("description", 40000),
        ("unit_label", 12),
        ("url", 2048),
        ("statement_descriptor", 22),
    ):
        v = p.str(key, max_len=max_len)
        if v is not None:
            values[key] = v
        elif update and p.cleared(key):
            values[key] = None
    for key in ("active", "shippable"):
        b = p.bool(key)
        if b is not None:
            values[key] = b
    images = p.str_list("images", max_items=8)
    if images is not None:
        values["images"] = images
    elif update and p.cleared("images"):
        values["images"] = []
    return values


def create_product(call: Call) -> dict[str, Any]:
    p = call.params
    values = _product_fields(p, update=False)
    pid = p.str("id", max_len=255)
    metadata = merge_metadata(None, p.metadata())
    p.done()
    return render.product(svc.create_product(call.repo, values, metadata, id=pid))


def retrieve_product(call: Call) -> dict[str, Any]:
    call.params.done()
    return render.product(svc.get_product(call.repo, call.path["id"]))


def update_product(call: Call) -> dict[str, Any]:
    p = call.params
    values = _product_fields(p, update=True)
    dp = p.str("default_price")
    if dp is not None:
        values["default_price"] = dp
    elif p.cleared("default_price"):
        values["default_price"] = None
    change = _meta_change(p)
    p.done()
    return render.product(svc.update_product(call.repo, call.path["id"], values, change))


def delete_product(call: Call) -> dict[str, Any]:
    call.params.done()
    svc.delete_product(call.repo, call.path["id"])
    return render.deleted(call.path["id"], "product")


def list_products(call: Call) -> dict[str, Any]:
    p = call.params
    page = read_page(p)
    active = p.bool("active")
    ids = p.str_list("ids", max_items=100)
    created = read_created(p)
    shippable = p.bool("shippable")
    url = p.str("url", max_len=5000)
    kind = p.enum("type", ("good", "service"))
    p.done()
    rows, more = svc.list_products(
        call.repo,
        active=active,
        ids=ids,
        page=page,
        created=created,
        shippable=shippable,
        url=url,
        goods_only=kind == "good",
    )
    return envelope(call.url, [render.product(r) for r in rows], more)


# -- shared price/plan reading ----------------------------------------------------------------------
def _tiers(p: Params) -> tuple[Tier, ...] | None:
    items = p.obj_list("tiers", max_items=250)
    if items is None:
        return None
    tiers = []
    for t in items:
        raw = t.raw("up_to")
        if raw is None or raw == "":
            raise invalid(
                t.name("up_to"),
                f"Missing required param: {t.name('up_to')} (an integer, or inf for the last tier).",
                "parameter_missing",
            )
        up_to = None if raw == "inf" else t.int("up_to", min=1)
        tiers.append(
            Tier(
                up_to=up_to,
                unit_amount=t.int("unit_amount"),
                unit_amount_decimal=t.decimal("unit_amount_decimal", max_places=12),
                flat_amount=t.int("flat_amount"),
                flat_amount_decimal=t.decimal("flat_amount_decimal", max_places=12),
            )
        )
    return tuple(tiers)


def _transform(p: Params, name: str) -> tuple[int | None, str | None]:
    t = p.obj(name)
    if t is None:
        return None, None
    return t.int("divide_by", required=True, min=1), t.enum("round", ROUNDS, required=True)


def _currency(p: Params) -> str:
    raw = p.str("currency", required=True, max_len=3)
    assert raw is not None
    try:
        return check_currency(raw)
    except RuleViolation as e:
        raise invalid("currency", e.message, e.code)


def _product_inline(p: Params, name: str) -> tuple[dict[str, Any], dict[str, str]] | None:
    d = p.obj(name)
    if d is None:
        return None
    values: dict[str, Any] = {"name": d.str("name", required=True, max_len=250)}
    for key, max_len in (("unit_label", 12), ("statement_descriptor", 22), ("id", 255)):
        v = d.str(key, max_len=max_len)
        if v is not None:
            values[key] = v
    b = d.bool("active")
    if b is not None:
        values["active"] = b
    metadata = merge_metadata(None, d.metadata())
    return values, metadata


def _count(p: Params) -> int:
    n = p.int("interval_count")
    return 1 if n is None else n


# -- prices ---------------------------------------------------------------------------------------
def create_price(call: Call) -> dict[str, Any]:
    p = call.params
    currency = _currency(p)
    recurring = None
    r = p.obj("recurring")
    if r is not None:
        recurring = Recurring(
            interval=r.enum("interval", INTERVALS, required=True),  # type: ignore[arg-type]
            interval_count=_count(r),
            usage_type=r.enum("usage_type", USAGE_TYPES) or "licensed",
            meter=r.str("meter", max_len=255),
            trial_period_days=r.int("trial_period_days"),
        )
    divide_by, rnd = _transform(p, "transform_quantity")
    spec = PriceSpec(
        currency=currency,
        billing_scheme=p.enum("billing_scheme", BILLING_SCHEMES) or "per_unit",
        unit_amount=p.int("unit_amount"),
        unit_amount_decimal=p.decimal("unit_amount_decimal", max_places=12),
        tiers=_tiers(p),
        tiers_mode=p.enum("tiers_mode", TIERS_MODES),
        transform_divide_by=divide_by,
        transform_round=rnd,
        recurring=recurring,
    )
    fields = {
        "active": p.bool("active"),
        "nickname": p.str("nickname", max_len=5000),
        "lookup_key": p.str("lookup_key", max_len=200),
        "tax_behavior": p.enum("tax_behavior", TAX_BEHAVIORS),
    }
    transfer = bool(p.bool("transfer_lookup_key"))
    product_id = p.str("product", max_len=255)
    product_data = _product_inline(p, "product_data")
    metadata = merge_metadata(None, p.metadata())
    p.done()
    row = svc.create_price(
        call.repo,
        spec,
        PRICE_NAMES,
        product_id=product_id,
        product_data=product_data,
        fields=fields,
        metadata=metadata,
        transfer_lookup_key=transfer,
    )
    return render.price(row, include_tiers=call.includes("tiers"))


def retrieve_price(call: Call) -> dict[str, Any]:
    call.params.done()
    return render.price(
        svc.get_price(call.repo, call.path["price"]), include_tiers=call.includes("tiers")
    )


def update_price(call: Call) -> dict[str, Any]:
    p = call.params
    values: dict[str, Any] = {}
    active = p.bool("active")
    if active is not None:
        values["active"] = active
    for key, max_len in (("nickname", 5000), ("lookup_key", 200)):
        v = p.str(key, max_len=max_len)
        if v is not None:
            values[key] = v
        elif p.cleared(key):
            values[key] = None
    tb = p.enum("tax_behavior", TAX_BEHAVIORS)
    if tb is not None:
        values["tax_behavior"] = tb
    transfer = bool(p.bool("transfer_lookup_key"))
    change = _meta_change(p)
    p.done()
    row = svc.update_price(
        call.repo, call.path["price"], values, change, transfer_lookup_key=transfer
    )
    return render.price(row, include_tiers=call.includes("tiers"))


def list_prices(call: Call) -> dict[str, Any]:
    p = call.params
    page = read_page(p)
    filters: dict[str, Any] = {
        "active": p.bool("active"),
        "currency": (p.str("currency", max_len=3) or "").lower()
        or None,  # stored lowercase, as create writes it
        "product": p.str("product"),
        "type": p.enum("type", ("one_time", "recurring")),
        "lookup_keys": p.str_list("lookup_keys", max_items=10),
        "created": read_created(p),
    }
    r = p.obj("recurring")
    if r is not None:
        filters["interval"] = r.enum("interval", INTERVALS)
        filters["usage_type"] = r.enum("usage_type", USAGE_TYPES)
        filters["meter"] = r.str("meter")
    p.done()
    rows, more = svc.list_prices(call.repo, filters=filters, page=page)
    tiers = call.includes("tiers")
    return envelope(call.url, [render.price(x, include_tiers=tiers) for x in rows], more)


# -- plans --------------------------------------------------------------------------------------------
def create_plan(call: Call) -> dict[str, Any]:
    p = call.params
    currency = _currency(p)
    interval = p.enum("interval", INTERVALS, required=True)
    recurring = Recurring(
        interval=interval,  # type: ignore[arg-type]
        interval_count=_count(p),
        usage_type=p.enum("usage_type", USAGE_TYPES) or "licensed",
        meter=p.str("meter", max_len=255),
        trial_period_days=p.int("trial_period_days"),
    )
    divide_by, rnd = _transform(p, "transform_usage")
    spec = PriceSpec(
        currency=currency,
        billing_scheme=p.enum("billing_scheme", BILLING_SCHEMES) or "per_unit",
        unit_amount=p.int("amount"),
        unit_amount_decimal=p.decimal("amount_decimal", max_places=12),
        tiers=_tiers(p),
        tiers_mode=p.enum("tiers_mode", TIERS_MODES),
        transform_divide_by=divide_by,
        transform_round=rnd,
        recurring=recurring,
    )
    fields = {"active": p.bool("active"), "nickname": p.str("nickname", max_len=5000)}
    plan_id = p.str("id", max_len=255)
    product_id = None
    product_data = None
    raw_product = p.data.get("product")
    if isinstance(raw_product, dict):
        product_data = _product_inline(p, "product")
    else:
        product_id = p.str("product", max_len=255)
    metadata = merge_metadata(None, p.metadata())
    p.done()
    row = svc.create_price(
        call.repo,
        spec,
        PLAN_NAMES,
        product_id=product_id,
        product_data=product_data,
        fields=fields,
        metadata=metadata,
        id=plan_id,
        kind="plan",
    )
    return render.plan(row)


def retrieve_plan(call: Call) -> dict[str, Any]:
    call.params.done()
    return render.plan(svc.get_price(call.repo, call.path["plan"], kind="plan"))


def update_plan(call: Call) -> dict[str, Any]:
    p = call.params
    values: dict[str, Any] = {}
    active = p.bool("active")
    if active is not None:
        values["active"] = active
    nick = p.str("nickname", max_len=5000)
    if nick is not None:
        values["nickname"] = nick
    elif p.cleared("nickname"):
        values["nickname"] = None
    if p.has("trial_period_days"):
        tpd = p.int("trial_period_days", min=0, max=730)
        values["trial_period_days"] = tpd
    change = _meta_change(p)
    p.done()
    return render.plan(svc.update_price(call.repo, call.path["plan"], values, change, kind="plan"))


def delete_plan(call: Call) -> dict[str, Any]:
    call.params.done()
    svc.delete_plan(call.repo, call.path["plan"])
    return render.deleted(call.path["plan"], "plan")


def list_plans(call: Call) -> dict[str, Any]:
    p = call.params
    page = read_page(p)
    filters = {
        "active": p.bool("active"),
        "product": p.str("product"),
        "created": read_created(p),
    }
    p.done()
    rows, more = svc.list_prices(call.repo, filters=filters, page=page, plans_only=True)
    return envelope(call.url, [render.plan(x) for x in rows], more)


def register(router: Router) -> None:
    router.add("POST", "/v1/products", create_product)
    router.add("GET", "/v1/products", list_products, list_of="product")
    router.add("GET", "/v1/products/{id}", retrieve_product)
    router.add("POST", "/v1/products/{id}", update_product)
    router.add("DELETE", "/v1/products/{id}", delete_product)
    router.add("POST", "/v1/prices", create_price)
    router.add("GET", "/v1/prices", list_prices, list_of="price")
    router.add("GET", "/v1/prices/{price}", retrieve_price)
    router.add("POST", "/v1/prices/{price}", update_price)
    router.add("POST", "/v1/plans", create_plan)
    router.add("GET", "/v1/plans", list_plans, list_of="plan")
    router.add("GET", "/v1/plans/{plan}", retrieve_plan)
    router.add("POST", "/v1/plans/{plan}", update_plan)
    router.add("DELETE", "/v1/plans/{plan}", delete_plan)


def expanders() -> dict[tuple[str, str], Any]:
    def product(repo, id):
        row = svc.lookup(repo, "products", id)
        return render.product(row) if row is not None else None

    def price(repo, id):
        row = svc.lookup(repo, "prices", id)
        return render.price(row) if row is not None else None

    return {
        ("price", "product"): product,
        ("plan", "product"): product,
        ("product", "default_price"): price,
    }
