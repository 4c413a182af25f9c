"""/v1/invoices: list, retrieve, lines, finalize, pay, void, update (metadata, description) and
create_preview: decode, call the service, render."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from meterline.api.app import Call
from meterline.api.routing import Router
from meterline.services import ServiceError
from meterline.services import catalog as catalog_service
from meterline.services import invoices as svc
from meterline.services import subscriptions as subscriptions_service
from meterline.wire.lists import envelope, read_created, read_page
from meterline.wire.params import merge_metadata

EMBEDDED_LINES = 10


def _quantity(q: Any) -> tuple[int | None, str]:
    d = Decimal(q)
    text = format(d.normalize(), "f") if d != d.to_integral_value() else str(int(d))
    return (int(d) if d == d.to_integral_value() else None), text


def _credit(amount: int, txn: str | None) -> dict[str, Any]:
    return {
        "amount": amount,
        "credit_balance_transaction": txn,
        "discount": None,
        "type": "credit_balance_transaction",
    }


def render_line(
    ln: Mapping[str, Any],
    livemode: bool,
    credits: Sequence[tuple[str | None, int]],
    unit_amount_decimal: str | None,
) -> dict[str, Any]:
    quantity, quantity_decimal = _quantity(ln["quantity"])
    return {
        "id": ln["id"],
        "object": "line_item",
        "amount": ln["amount"],
        "currency": ln["currency"],
        "description": ln["description"],
        "discount_amounts": [],
        "discountable": True,
        "discounts": [],
        "invoice": ln["invoice"],
        "livemode": livemode,
        "metadata": ln["metadata"] or {},
        "parent": {
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": ln["proration"],
                "proration_details": {"credited_items": None},
                "subscription": ln["subscription"],
                "subscription_item": ln["subscription_item"],
            },
            "type": "subscription_item_details",
        },
        "period": {"end": ln["period_end"], "start": ln["period_start"]},
        "pretax_credit_amounts": [_credit(a, t) for t, a in credits],
        "pricing": {
            "price_details": {"price": ln["price"], "product": ln["product"]},
            "type": "price_details",
            "unit_amount_decimal": unit_amount_decimal,
        },
        "quantity": quantity,
        "quantity_decimal": quantity_decimal,
        "subscription": ln["subscription"],
        "subtotal": ln["amount"],
        "taxes": [],
    }


def _unit_decimal(repo: Any, price_id: str, cache: dict[str, str | None]) -> str | None:
    if price_id not in cache:
        p = catalog_service.get_price_any(repo, price_id)
        if p["billing_scheme"] == "tiered":
            cache[price_id] = None
        else:
            unit = (
                p["unit_amount_decimal"]
                if p["unit_amount_decimal"] is not None
                else p["unit_amount"]
            )
            cache[price_id] = None if unit is None else format(Decimal(unit).normalize(), "f")
    return cache[price_id]


def render_invoice(
    repo: Any,
    inv: Mapping[str, Any],
    lines: Sequence[Mapping[str, Any]],
    credits: Mapping[str, Sequence[tuple[str | None, int]]],
    *,
    url: str | None = None,
) -> dict[str, Any]:
    status = inv["status"]
    prices: dict[str, str | None] = {}
    total_credits = [_credit(a, t) for ln in lines for t, a in credits.get(ln["id"], ())]
    finalized = inv["finalized_at"]
    amount_remaining = 0 if status in ("paid", "void") else inv["amount_due"] - inv["amount_paid"]
    embedded = lines[:EMBEDDED_LINES]
    return {
        "id": inv["id"],
        "object": "invoice",
        "account_country": None,
        "account_name": None,
        "account_tax_ids": None,
        "amount_due": inv["amount_due"],
        "amount_overpaid": 0,
        "amount_paid": inv["amount_paid"],
        "amount_paid_off_stripe": inv["amount_paid"],
        "amount_remaining": amount_remaining,
        "amount_shipping": 0,
        "application": None,
        "attempt_count": 0,
        "attempted": False,
        "auto_advance": status in ("draft", "open"),
        "automatic_tax": {
            "disabled_reason": None,
            "enabled": False,
            "liability": None,
            "provider": None,
            "status": None,
        },
        "automatically_finalizes_at": inv["automatically_finalizes_at"],
        "billing_reason": inv["billing_reason"],
        "collection_method": inv["collection_method"],
        "created": inv["created"],
        "currency": inv["currency"],
        "custom_fields": None,
        "customer": inv["customer"],
        "customer_account": None,
        "customer_address": None,
        "customer_email": inv["customer_email"],
        "customer_name": inv["customer_name"],
        "customer_phone": None,
        "customer_shipping": None,
        "customer_tax_exempt": "none",
        "customer_tax_ids": [],
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "description": inv["description"],
        "discounts": [],
        "due_date": inv["due_date"],
        "effective_at": finalized,
        "ending_balance": 0 if finalized is not None else None,
        "footer": None,
        "from_invoice": None,
        "hosted_invoice_url": None,
        "invoice_pdf": None,
        "issuer": {"account": None, "type": "self"},
        "last_finalization_error": None,
        "latest_revision": None,
        "lines": {
            "object": "list",
            "data": [
                render_line(
                    ln,
                    inv["livemode"],
                    credits.get(ln["id"], ()),
                    _unit_decimal(repo, ln["price"], prices),
                )
                for ln in embedded
            ],
            "has_more": len(lines) > len(embedded),
            "url": url or f"/v1/invoices/{inv['id']}/lines",
        },
        "livemode": inv["livemode"],
        "metadata": inv["metadata"] or {},
        "next_payment_attempt": None,
        "number": inv["number"],
        "on_behalf_of": None,
        "parent": {
            "quote_details": None,
            "subscription_details": {
                "metadata": None,
                "subscription": inv["subscription"],
                "subscription_proration_date": None,
            },
            "type": "subscription_details",
        }
        if inv["subscription"]
        else None,
        "payment_settings": {
            "default_mandate": None,
            "payment_method_options": None,
            "payment_method_types": None,
        },
        "period_end": inv["period_end"],
        "period_start": inv["period_start"],
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "receipt_number": None,
        "rendering": None,
        "shipping_cost": None,
        "shipping_details": None,
        "starting_balance": 0,
        "statement_descriptor": None,
        "status": status,
        "status_details": None,
        "status_transitions": {
            "finalized_at": finalized,
            "marked_uncollectible_at": None,
            "paid_at": inv["paid_at"],
            "voided_at": inv["voided_at"],
        },
        "subtotal": inv["subtotal"],
        "subtotal_excluding_tax": inv["subtotal"],
        "test_clock": inv["test_clock"],
        "threshold_reason": None,
        "total": inv["subtotal"] - inv["credited"],
        "total_discount_amounts": [],
        "total_excluding_tax": inv["subtotal"] - inv["credited"],
        "total_pretax_credit_amounts": total_credits,
        "total_taxes": [],
        "webhooks_delivered_at": inv["created"] if finalized is not None else None,
    }


def render_by_id(repo: Any, iid: str) -> dict[str, Any] | None:
    inv = svc.find(repo, iid)
    if inv is None:
        return None
    return render_invoice(repo, inv, svc.lines_of(repo, iid), svc.credit_amounts(repo, iid))


def _one(call: Call, inv: Mapping[str, Any]) -> dict[str, Any]:
    out = render_by_id(call.repo, inv["id"])
    assert out is not None
    return out


def retrieve(call: Call) -> dict[str, Any]:
    call.params.done()
    return _one(call, svc.get(call.repo, call.path["invoice"]))


def list_(call: Call) -> dict[str, Any]:
    p = call.params
    page = read_page(p)
    customer = p.str("customer", max_len=255)
    subscription = p.str("subscription", max_len=255)
    status = p.enum("status", svc.STATUSES)
    created = read_created(p)
    p.done()
    rows, more = svc.list_(
        call.repo,
        customer=customer,
        subscription=subscription,
        status=status,
        created=created,
        limit=page.limit,
        starting_after=page.starting_after,
        ending_before=page.ending_before,
    )
    return envelope(call.url, [_one(call, r) for r in rows], more)


def lines(call: Call) -> dict[str, Any]:
    p = call.params
    page = read_page(p)
    p.done()
    inv = svc.get(call.repo, call.path["invoice"])
    rows = svc.lines_of(call.repo, inv["id"])
    ids = [r["id"] for r in rows]
    for cursor, name in (
        (page.starting_after, "starting_after"),
        (page.ending_before, "ending_before"),
    ):
        if cursor is not None and cursor not in ids:
            raise ServiceError(
                400,
                f"{name}={cursor} is not a line of the invoice {inv['id']}.",
                code="resource_missing",
                param=name,
            )
    if page.starting_after is not None:
        rows = rows[ids.index(page.starting_after) + 1 :]
        more = len(rows) > page.limit
        rows = rows[: page.limit]
    elif page.ending_before is not None:
        rows = rows[: ids.index(page.ending_before)]
        more = len(rows) > page.limit
        rows = rows[-page.limit :]
    else:
        more = len(rows) > page.limit
        rows = rows[: page.limit]
    credits = svc.credit_amounts(call.repo, inv["id"])
    prices: dict[str, str | None] = {}
    data = [
        render_line(
            r,
            inv["livemode"],
            credits.get(r["id"], ()),
            _unit_decimal(call.repo, r["price"], prices),
        )
        for r in rows
    ]
    return envelope(call.url, data, more)


def finalize(call: Call) -> dict[str, Any]:
    p = call.params
    p.bool("auto_advance")  # accepted; meterline's invoices need no further advancing
    p.done()
    return _one(call, svc.finalize(call.repo, call.path["invoice"]))


def pay(call: Call) -> dict[str, Any]:
    p = call.params
    oob = bool(p.bool("paid_out_of_band"))
    p.done()
    return _one(call, svc.pay(call.repo, call.path["invoice"], oob))


def void(call: Call) -> dict[str, Any]:
    call.params.done()
    return _one(call, svc.void(call.repo, call.path["invoice"]))


def update(call: Call) -> dict[str, Any]:
    p = call.params
    change = p.metadata()
    description: Any = p.str("description", max_len=500)
    if description is None:
        description = None if p.cleared("description") else False
    p.done()
    inv = svc.update(
        call.repo,
        call.path["invoice"],
        None if change is None else (lambda cur: merge_metadata(cur, change)),
        description,
    )
    return _one(call, inv)


def create_preview(call: Call) -> dict[str, Any]:
    p = call.params
    customer = p.str("customer", max_len=255)
    subscription = p.str("subscription", max_len=255)
    p.done()
    pv = subscriptions_service.preview(call.repo, customer, subscription)
    sub, cust = pv["subscription"], pv["customer"]
    iid = f"upcoming_{sub['id']}"
    inv = {
        "id": iid,
        "livemode": sub["livemode"],
        "status": "draft",
        "finalized_at": None,
        "amount_due": pv["amount_due"],
        "amount_paid": 0,
        "automatically_finalizes_at": pv["at"] + svc.FINALIZE_AFTER,
        "billing_reason": "upcoming",
        "collection_method": sub["collection_method"],
        "created": pv["at"],
        "currency": sub["currency"],
        "customer": cust["id"],
        "customer_email": cust["email"],
        "customer_name": cust["name"],
        "description": sub["description"],
        "due_date": None,
        "metadata": {},
        "number": None,
        "subscription": sub["id"],
        "period_start": pv["period"][0],
        "period_end": pv["period"][1],
        "paid_at": None,
        "voided_at": None,
        "subtotal": pv["subtotal"],
        "credited": pv["credited"],
        "test_clock": sub["test_clock"],
    }
    rows = []
    credits: dict[str, list[tuple[str | None, int]]] = {}
    for ln in pv["lines"]:
        d = ln["draft"]
        rows.append(
            {
                "id": ln["id"],
                "invoice": iid,
                "subscription": sub["id"],
                "subscription_item": d.item,
                "price": d.price,
                "product": d.product,
                "currency": sub["currency"],
                "description": d.description,
                "quantity": d.quantity,
                "amount": d.amount,
                "proration": d.proration,
                "period_start": d.start,
                "period_end": d.end,
                "metadata": {},
            }
        )
        credits[ln["id"]] = [(None, a.amount) for a in ln["credits"]]
    out = render_invoice(call.repo, inv, rows, credits, url=f"/v1/invoices/{iid}/lines")
    out["lines"]["data"] = out["lines"]["data"] + [
        render_line(r, sub["livemode"], credits[r["id"]], None) for r in rows[EMBEDDED_LINES:]
    ]
    out["lines"]["has_more"] = False
    return out


def register(router: Router) -> None:
    base = "/v1/invoices"
    router.add("GET", base, list_, list_of="invoice")
    router.add("POST", base + "/create_preview", create_preview)
    router.add("GET", base + "/{invoice}", retrieve)
    router.add("POST", base + "/{invoice}", update)
    router.add("GET", base + "/{invoice}/lines", lines, list_of="line_item")
    router.add("POST", base + "/{invoice}/finalize", finalize)
    router.add("POST", base + "/{invoice}/pay", pay)
    router.add("POST", base + "/{invoice}/void", void)


def expanders() -> dict[tuple[str, str], Any]:
    return {("subscription", "latest_invoice"): render_by_id}


__all__ = ["register", "render_by_id", "render_invoice", "render_line"]
