"""Products, prices and plans. A plan is stored as a recurring price: one table, two shapes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping

from meterline import clock
from meterline.engine.catalog import Names, PriceSpec, Recurring, Tier, check_price
from meterline.ids import new_id
from meterline.services import ServiceError, created_where, not_found
from meterline.store.repo import Repo
from meterline.store.tables import prices, products

MetadataChange = Callable[[dict[str, str] | None], dict[str, str]] | None


# -- products ---------------------------------------------------------------------------------
def create_product(
    repo: Repo,
    values: dict[str, Any],
    metadata: dict[str, str],
    *,
    id: str | None = None,
    param: str = "id",
) -> RowMapping:
    pid = id or new_id("prod", 14)
    if id is not None:
        repo.lock("products.id", id)
    if id is not None and repo.get(products, id) is not None:
        raise ServiceError(
            400,
            f"Product already exists: a product with id {id!r} exists in this account.",
            code="resource_already_exists",
            param=param,
        )
    now = clock.now()
    row = dict(
        id=pid,
        created=now,
        updated=now,
        deleted=False,
        active=values.get("active", True) if values.get("active") is not None else True,
        name=values["name"],
        description=values.get("description"),
        images=values.get("images") or [],
        unit_label=values.get("unit_label"),
        url=values.get("url"),
        statement_descriptor=values.get("statement_descriptor"),
        shippable=values.get("shippable"),
        default_price=None,
        metadata=metadata,
    )
    repo.insert(products, row)
    return repo.get(products, pid)  # type: ignore[return-value]


def get_product(repo: Repo, pid: str, *, param: str = "id") -> RowMapping:
    row = repo.get(products, pid)
    if row is None or row["deleted"]:
        raise not_found("product", pid, param)
    return row


def update_product(
    repo: Repo, pid: str, values: dict[str, Any], metadata_change: MetadataChange
) -> RowMapping:
    row = get_product(repo, pid)
    changes = dict(values)
    if changes.get("default_price"):
        price = repo.get(prices, changes["default_price"])
        if price is None or price["deleted"]:
            raise not_found("price", changes["default_price"], "default_price")
        if price["product"] != pid:
            raise ServiceError(
                400,
                f"The default price must be a price of this product; {price['id']} belongs to {price['product']}.",
                code="parameter_invalid",
                param="default_price",
            )
    if metadata_change is not None:
        changes["metadata"] = metadata_change(row["metadata"])
    changes["updated"] = clock.now()
    repo.update(products, pid, changes)
    return repo.get(products, pid)  # type: ignore[return-value]


def delete_product(repo: Repo, pid: str) -> None:
    get_product(repo, pid)
    if repo.exists(prices, prices.c.product == pid, prices.c.deleted.is_(False)):
        raise ServiceError(
            400,
            f"This product cannot be deleted because it has one or more prices. Delete or archive its prices "
            f"first (list them with GET /v1/prices?product={pid}); an archived product (active=false) keeps them.",
            code="resource_in_use",
        )
    repo.update(products, pid, {"deleted": True, "updated": clock.now()})


def list_products(
    repo: Repo,
    *,
    active: bool | None,
    ids: list[str] | None,
    page: Any,
    created: Sequence[tuple[str, int]] = (),
    shippable: bool | None = None,
    url: str | None = None,
    goods_only: bool = False,
) -> tuple[list[RowMapping], bool]:
    """`goods_only`: the list of `type=good`, empty (every product here is a service)."""
    where: list[Any] = [products.c.deleted.is_(False), *created_where(products.c.created, created)]
    if goods_only:
        where.append(sa.false())
    if shippable is not None:
        where.append(products.c.shippable.is_(shippable))
    if url is not None:
        where.append(products.c.url == url)
    if active is not None:
        where.append(products.c.active.is_(active))
    if ids is not None:
        where.append(products.c.id.in_(ids))
    return repo.page(
        products,
        where,
        limit=page.limit,
        starting_after=page.starting_after,
        ending_before=page.ending_before,
    )


# -- prices and plans ---------------------------------------------------------------------------
def _spec_columns(spec: PriceSpec) -> dict[str, Any]:
    r = spec.recurring
    tiers = None
    if spec.tiers is not None:
        tiers = [
            {
                k: (str(v) if k.endswith("_decimal") and v is not None else v)
                for k, v in asdict(t).items()
            }
            for t in spec.tiers
        ]
    return dict(
        currency=spec.currency,
        billing_scheme=spec.billing_scheme,
        type="recurring" if r else "one_time",
        unit_amount=spec.unit_amount,
        unit_amount_decimal=spec.unit_amount_decimal,
        tiers=tiers,
        tiers_mode=spec.tiers_mode,
        transform_divide_by=spec.transform_divide_by,
        transform_round=spec.transform_round,
        interval=r.interval if r else None,
        interval_count=r.interval_count if r else None,
        usage_type=r.usage_type if r else None,
        meter=r.meter if r else None,
        trial_period_days=r.trial_period_days if r else None,
    )


def spec_of(row: RowMapping | dict[str, Any]) -> PriceSpec:
    """The price row as the pricing rules see it (the inverse of `_spec_columns`)."""

    def dec(v: Any) -> Decimal | None:
        return None if v is None else Decimal(v)

    tiers = None
    if row["tiers"] is not None:
        tiers = tuple(
            Tier(
                up_to=t.get("up_to"),
                unit_amount=t.get("unit_amount"),
                unit_amount_decimal=dec(t.get("unit_amount_decimal")),
                flat_amount=t.get("flat_amount"),
                flat_amount_decimal=dec(t.get("flat_amount_decimal")),
            )
            for t in row["tiers"]
        )
    recurring = None
    if row["type"] == "recurring":
        recurring = Recurring(
            interval=row["interval"],
            interval_count=row["interval_count"],
            usage_type=row["usage_type"],
            meter=row["meter"],
            trial_period_days=row["trial_period_days"],
        )
    return PriceSpec(
        currency=row["currency"],
        billing_scheme=row["billing_scheme"],
        unit_amount=row["unit_amount"],
        unit_amount_decimal=dec(row["unit_amount_decimal"]),
        tiers=tiers,
        tiers_mode=row["tiers_mode"],
        transform_divide_by=row["transform_divide_by"],
        transform_round=row["transform_round"],
        recurring=recurring,
    )


def _claim_lookup_key(repo: Repo, lookup_key: str, transfer: bool, own_id: str | None) -> None:
    repo.lock("prices.lookup_key", lookup_key)
    holder = repo.first(prices, prices.c.lookup_key == lookup_key)
    if holder is None or holder["id"] == own_id:
        return
    if not transfer:
        raise ServiceError(
            400,
            f"A price ({holder['id']}) already uses the lookup key {lookup_key!r}. Pass transfer_lookup_key=true to move it to this price.",
            code="parameter_invalid",
            param="lookup_key",
        )
    repo.update(prices, holder["id"], {"lookup_key": None})


def create_price(
    repo: Repo,
    spec: PriceSpec,
    names: Names,
    *,
    product_id: str | None,
    product_data: tuple[dict[str, Any], dict[str, str]] | None,
    fields: dict[str, Any],
    metadata: dict[str, str],
    transfer_lookup_key: bool = False,
    id: str | None = None,
    kind: str = "price",
) -> RowMapping:
    check_price(spec, names)
    if spec.recurring is not None and spec.recurring.meter is not None:
        from meterline.services.meters import check_attachable

        check_attachable(repo, spec.recurring.meter, names.meter)
    if product_id is not None and product_data is not None:
        raise ServiceError(
            400,
            "You may only specify one of these parameters: product, product_data.",
            code="parameters_exclusive",
            param="product_data",
        )
    if product_data is not None:
        product = create_product(
            repo,
            product_data[0],
            product_data[1],
            id=product_data[0].get("id"),
            param="product[id]" if kind == "plan" else "product_data[id]",
        )
    elif product_id is not None:
        product = get_product(repo, product_id, param="product")
    else:
        which = "product" if kind == "plan" else "product (or product_data)"
        raise ServiceError(
            400, f"Missing required param: {which}.", code="parameter_missing", param="product"
        )
    pid = id or new_id("price", 24)
    if id is not None:
        repo.lock("prices.id", id)
    if id is not None and repo.get(prices, id) is not None:
        raise ServiceError(
            400,
            f"Plan already exists: a plan or price with id {id!r} exists in this account.",
            code="resource_already_exists",
            param="id",
        )
    if fields.get("lookup_key"):
        _claim_lookup_key(repo, fields["lookup_key"], transfer_lookup_key, None)
    row = dict(
        id=pid,
        created=clock.now(),
        deleted=False,
        active=True if fields.get("active") is None else fields["active"],
        product=product["id"],
        nickname=fields.get("nickname"),
        lookup_key=fields.get("lookup_key"),
        tax_behavior=fields.get("tax_behavior") or "unspecified",
        metadata=metadata,
        **_spec_columns(spec),
    )
    repo.insert(prices, row)
    return repo.get(prices, pid)  # type: ignore[return-value]


def get_price(repo: Repo, pid: str, *, kind: str = "price", param: str = "id") -> RowMapping:
    row = repo.get(prices, pid)
    if row is None or row["deleted"] or (kind == "plan" and row["type"] != "recurring"):
        raise not_found(kind, pid, param)
    return row


def get_price_any(repo: Repo, pid: str, *, param: str = "price") -> RowMapping:
    """A price whatever its state (an invoice still bills a price deleted since)."""
    row = repo.get_memo(prices, pid)
    if row is None:
        raise not_found("price", pid, param)
    return row


def update_price(
    repo: Repo,
    pid: str,
    values: dict[str, Any],
    metadata_change: MetadataChange,
    *,
    kind: str = "price",
    transfer_lookup_key: bool = False,
) -> RowMapping:
    row = get_price(repo, pid, kind=kind)
    changes = dict(values)
    if changes.get("lookup_key"):
        _claim_lookup_key(repo, changes["lookup_key"], transfer_lookup_key, pid)
    if metadata_change is not None:
        changes["metadata"] = metadata_change(row["metadata"])
    repo.update(prices, pid, changes)
    return repo.get(prices, pid)  # type: ignore[return-value]


def delete_plan(repo: Repo, pid: str) -> None:
    get_price(repo, pid, kind="plan")
    repo.update(prices, pid, {"deleted": True, "active": False, "lookup_key": None})


def list_prices(
    repo: Repo, *, filters: dict[str, Any], page: Any, plans_only: bool = False
) -> tuple[list[RowMapping], bool]:
    c = prices.c
    where: list[Any] = [c.deleted.is_(False), *created_where(c.created, filters.get("created", ()))]
    if plans_only:
        where.append(c.type == "recurring")
    for key, column in (("active", c.active),):
        if filters.get(key) is not None:
            where.append(column.is_(filters[key]))
    for key, column in (
        ("currency", c.currency),
        ("product", c.product),
        ("type", c.type),
        ("interval", c.interval),
        ("usage_type", c.usage_type),
        ("meter", c.meter),
    ):
        if filters.get(key) is not None:
            where.append(column == filters[key])
    if filters.get("lookup_keys"):
        where.append(c.lookup_key.in_(filters["lookup_keys"]))
    return repo.page(
        prices,
        where,
        limit=page.limit,
        starting_after=page.starting_after,
        ending_before=page.ending_before,
    )


def lookup(repo: Repo, table_name: str, id: str) -> RowMapping | None:
    """A row by id for `expand[]`, whichever state it is in."""
    table = {"products": products, "prices": prices}[table_name]
    return repo.get(table, id)
