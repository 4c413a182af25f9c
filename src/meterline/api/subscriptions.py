"""/v1/subscriptions and /v1/subscription_items (read): decode, call the service, render."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from meterline.api import render
from meterline.api.app import Call
from meterline.api.routing import Router
from meterline.services import catalog as catalog_service
from meterline.services import subscriptions as svc
from meterline.wire.errors import invalid
from meterline.wire.lists import envelope, read_created, read_page
from meterline.wire.params import Params, merge_metadata

MAX_TS = 253_402_300_799


class Prices:
    """Price rows read once per response."""

    def __init__(self, repo: Any) -> None:
        self.repo = repo
        self.rows: dict[str, Any] = {}

    def __call__(self, pid: str) -> Any:
        if pid not in self.rows:
            self.rows[pid] = catalog_service.get_price_any(self.repo, pid)
        return self.rows[pid]


def render_item(row: Mapping[str, Any], sub: Mapping[str, Any], prices: Prices) -> dict[str, Any]:
    price = prices(row["price"])
    return {
        "id": row["id"],
        "object": "subscription_item",
        "billed_until": None,
        "billing_thresholds": None,
        "created": row["created"],
        "current_period_end": sub["current_period_end"],
        "current_period_start": sub["current_period_start"],
        "current_trial": None,
        "discounts": [],
        "metadata": row["metadata"] or {},
        "plan": render.plan(price),
        "price": render.price(price),
        "quantity": row["quantity"],
        "subscription": row["subscription"],
        "tax_rates": [],
    }


def render_subscription(
    row: Mapping[str, Any], items: Sequence[Mapping[str, Any]], prices: Prices
) -> dict[str, Any]:
    ended = row["status"] in ("canceled", "incomplete_expired")
    cancellation = row["cancellation"] or {}
    return {
        "id": row["id"],
        "object": "subscription",
        "application": None,
        "application_fee_percent": None,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
        "billing_cycle_anchor": row["billing_cycle_anchor"],
        "billing_cycle_anchor_config": None,
        "billing_mode": {"flexible": None, "type": "classic", "updated_at": None},
        "billing_schedules": [],
        "billing_thresholds": None,
        "cancel_at": row["current_period_end"]
        if row["cancel_at_period_end"] and not ended
        else None,
        "cancel_at_period_end": row["cancel_at_period_end"],
        "canceled_at": row["canceled_at"],
        "cancellation_details": {
            "comment": cancellation.get("comment"),
            "feedback": cancellation.get("feedback"),
            "feedback_option": None,
            "reason": cancellation.get("reason"),
        },
        "collection_method": row["collection_method"],
        "created": row["created"],
        "currency": row["currency"],
        "customer": row["customer"],
        "customer_account": None,
        "days_until_due": row["days_until_due"],
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "description": row["description"],
        "discounts": [],
        "ended_at": row["ended_at"],
        "invoice_settings": {
            "account_tax_ids": None,
            "custom_fields": None,
            "description": None,
            "footer": None,
            "issuer": {"account": None, "type": "self"},
        },
        "items": {
            "object": "list",
            "data": [render_item(i, row, prices) for i in items],
            "has_more": False,
            "url": f"/v1/subscription_items?subscription={row['id']}",
        },
        "latest_invoice": row["latest_invoice"],
        "livemode": row["livemode"],
        "managed_payments": None,
        "metadata": row["metadata"] or {},
        "next_pending_invoice_item_invoice": None,
        "on_behalf_of": None,
        "pause_collection": None,
        "payment_settings": {
            "payment_method_options": None,
            "payment_method_types": None,
            "save_default_payment_method": "off",
        },
        "pending_invoice_item_interval": None,
        "pending_setup_intent": None,
        "pending_update": None,
        "presentment_details": None,
        "schedule": None,
        "start_date": row["start_date"],
        "status": row["status"],
        "status_details": None,
        "test_clock": row["test_clock"],
        "transfer_data": None,
        "trial_end": row["trial_end"],
        "trial_settings": {
            "end_behavior": {
                "billing_cycle_anchor": None,
                "missing_payment_method": "create_invoice",
            }
        },
        "trial_start": row["trial_start"],
    }


def _one(call: Call, row: Mapping[str, Any]) -> dict[str, Any]:
    return render_subscription(row, svc.items_of(call.repo, row["id"]), Prices(call.repo))


def _items(p: Params) -> list[svc.ItemInput]:
    out = []
    for i, it in enumerate(p.obj_list("items", max_items=svc.MAX_ITEMS) or []):
        base = f"items[{i}]"
        price = it.str("price", max_len=255)
        plan = it.str("plan", max_len=255)
        if (price is None) == (plan is None):
            raise invalid(
                f"{base}[price]",
                f"Give {base}[price] or {base}[plan] (a plan id is a price id), exactly one.",
                "parameter_missing" if price is None else "parameter_invalid",
            )
        quantity = it.int("quantity", min=0, max=999_999_999)
        metadata = merge_metadata(None, it.metadata(), param=f"{base}[metadata]")
        out.append(
            svc.ItemInput(
                price=price or plan,  # type: ignore[arg-type]
                param=f"{base}[price]" if price is not None else f"{base}[plan]",
                quantity=quantity,
                metadata=metadata,
            )
        )
    return out


def create(call: Call) -> dict[str, Any]:
    p = call.params
    customer = p.str("customer", required=True, max_len=255)
    items = _items(p)
    anchor = p.int("billing_cycle_anchor", min=0, max=MAX_TS)
    trial_days = p.int("trial_period_days", min=0, max=svc.MAX_TRIAL_DAYS)
    trial_from_plan = bool(p.bool("trial_from_plan"))
    trial_end = p.int("trial_end", min=0, max=MAX_TS)
    if trial_from_plan and (trial_days is not None or trial_end is not None):
        raise invalid(
            "trial_from_plan",
            "trial_from_plan takes the plan's trial: give it without trial_period_days and "
            "trial_end.",
            "parameter_invalid",
        )
    if trial_days is not None and trial_end is not None:
        raise invalid(
            "trial_end",
            "Give trial_period_days or trial_end, not both.",
            "parameter_invalid",
        )
    cancel_at_period_end = bool(p.bool("cancel_at_period_end"))
    collection = p.enum("collection_method", ("charge_automatically", "send_invoice"))
    days_until_due = p.int("days_until_due", min=0, max=730)
    if days_until_due is not None and collection != "send_invoice":
        raise invalid(
            "days_until_due",
            "days_until_due applies only with collection_method=send_invoice.",
            "parameter_invalid",
        )
    description = p.str("description", max_len=500)
    metadata = merge_metadata(None, p.metadata())
    p.done()
    row = svc.create(
        call.repo,
        svc.SubscriptionInput(
            customer=customer,  # type: ignore[arg-type]
            items=items,
            billing_cycle_anchor=anchor,
            trial_period_days=trial_days,
            trial_from_plan=trial_from_plan,
            trial_end=trial_end,
            cancel_at_period_end=cancel_at_period_end,
            collection_method=collection or "charge_automatically",
            days_until_due=days_until_due,
            description=description,
            metadata=metadata,
        ),
    )
    return _one(call, row)


def retrieve(call: Call) -> dict[str, Any]:
    call.params.done()
    return _one(call, svc.get(call.repo, call.path["subscription_exposed_id"]))


def update(call: Call) -> dict[str, Any]:
    p = call.params
    cancel_at_period_end = p.bool("cancel_at_period_end")
    description: Any = p.str("description", max_len=500)
    if description is None:
        description = None if p.cleared("description") else False
    change = p.metadata()
    p.done()
    row = svc.update(
        call.repo,
        call.path["subscription_exposed_id"],
        cancel_at_period_end=cancel_at_period_end,
        description=description,
        metadata_change=None if change is None else (lambda cur: merge_metadata(cur, change)),
    )
    return _one(call, row)


def cancel(call: Call) -> dict[str, Any]:
    p = call.params
    invoice_now = bool(p.bool("invoice_now"))
    p.bool("prorate")  # accepted: meterline issues no proration credits on cancel
    details = p.obj("cancellation_details")
    comment = feedback = None
    if details is not None:
        comment = details.str("comment", max_len=5000)
        feedback = details.enum(
            "feedback",
            (
                "customer_service",
                "low_quality",
                "missing_features",
                "other",
                "switched_service",
                "too_complex",
                "too_expensive",
                "unused",
            ),
        )
    p.done()
    row = svc.cancel(
        call.repo,
        call.path["subscription_exposed_id"],
        invoice_now=invoice_now,
        comment=comment,
        feedback=feedback,
    )
    return _one(call, row)


def list_(call: Call) -> dict[str, Any]:
    p = call.params
    page = read_page(p)
    customer = p.str("customer", max_len=255)
    status = p.enum("status", (*svc.STATUSES, "all", "ended"))
    price = p.str("price", max_len=255)
    test_clock = p.str("test_clock", max_len=255)
    created = read_created(p)
    p.done()
    rows, more = svc.list_(
        call.repo,
        customer=customer,
        status=status,
        price=price,
        test_clock=test_clock,
        created=created,
        limit=page.limit,
        starting_after=page.starting_after,
        ending_before=page.ending_before,
    )
    items = svc.items_of_many(call.repo, [r["id"] for r in rows])
    prices = Prices(call.repo)
    return envelope(call.url, [render_subscription(r, items[r["id"]], prices) for r in rows], more)


def list_items(call: Call) -> dict[str, Any]:
    p = call.params
    page = read_page(p)
    sid = p.str("subscription", required=True, max_len=255)
    p.done()
    sub = svc.get(call.repo, sid, param="subscription")  # type: ignore[arg-type]
    rows = svc.items_of(call.repo, sub["id"])
    ids = [r["id"] for r in rows]
    if page.starting_after is not None and page.starting_after in ids:
        rows = rows[ids.index(page.starting_after) + 1 :]
    elif page.ending_before is not None and page.ending_before in ids:
        rows = rows[: ids.index(page.ending_before)]
    prices = Prices(call.repo)
    data = [render_item(r, sub, prices) for r in rows[: page.limit]]
    return envelope(call.url, data, len(rows) > page.limit)


def retrieve_item(call: Call) -> dict[str, Any]:
    call.params.done()
    row = svc.get_item(call.repo, call.path["item"])
    sub = svc.get(call.repo, row["subscription"])
    return render_item(row, sub, Prices(call.repo))


def register(router: Router) -> None:
    base = "/v1/subscriptions"
    router.add("POST", base, create)
    router.add("GET", base, list_, list_of="subscription")
    router.add("GET", base + "/{subscription_exposed_id}", retrieve)
    router.add("POST", base + "/{subscription_exposed_id}", update)
    router.add("DELETE", base + "/{subscription_exposed_id}", cancel)
    router.add("GET", "/v1/subscription_items", list_items, list_of="subscription_item")
    router.add("GET", "/v1/subscription_items/{item}", retrieve_item)


def render_by_id(repo: Any, sid: str) -> dict[str, Any] | None:
    row = svc.find(repo, sid)
    if row is None:
        return None
    return render_subscription(row, svc.items_of(repo, sid), Prices(repo))
