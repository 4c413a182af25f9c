"""/v1/billing/credit_grants, /v1/billing/credit_balance_summary,
/v1/billing/credit_balance_transactions"""

from __future__ import annotations

from typing import Any

from meterline.api.app import Call
from meterline.api.routing import Router
from meterline.engine.money import check_currency
from meterline.services import credits as svc
from meterline.wire.errors import invalid
from meterline.wire.lists import envelope, read_page
from meterline.wire.params import Params, merge_metadata


def _monetary(currency: str, value: int) -> dict[str, Any]:
    return {"type": "monetary", "monetary": {"currency": currency, "value": value}}


def render_grant(row: Any) -> dict[str, Any]:
    scope: dict[str, Any]
    if row["prices"] is None:
        scope = {"price_type": "metered", "prices": None}
    else:
        scope = {"price_type": None, "prices": [{"id": p} for p in row["prices"]]}
    return {
        "id": row["id"],
        "object": "billing.credit_grant",
        "amount": _monetary(row["currency"], row["amount"]),
        "applicability_config": {"scope": scope},
        "category": row["category"],
        "created": row["created"],
        "customer": row["customer"],
        "customer_account": None,
        "effective_at": row["effective_at"],
        "expires_at": row["expires_at"],
        "livemode": row["livemode"],
        "metadata": row["metadata"] or {},
        "name": row["name"],
        "priority": row["priority"],
        "test_clock": row["test_clock"],
        "updated": row["updated"],
        "voided_at": row["voided_at"],
    }


def render_transaction(row: Any) -> dict[str, Any]:
    amount = _monetary(row["currency"], row["amount"])
    kind = row["type"]
    credit = debit = None
    if kind in ("credits_granted", "credits_application_invoice_voided"):
        credit = {
            "amount": amount,
            "credits_application_invoice_voided": (
                {"invoice": row["invoice"], "invoice_line_item": row["invoice_line_item"]}
                if kind == "credits_application_invoice_voided"
                else None
            ),
            "type": kind,
        }
    else:
        debit = {
            "amount": amount,
            "credits_applied": (
                {"invoice": row["invoice"], "invoice_line_item": row["invoice_line_item"]}
                if kind == "credits_applied"
                else None
            ),
            "type": kind,
        }
    return {
        "id": row["id"],
        "object": "billing.credit_balance_transaction",
        "created": row["created"],
        "credit": credit,
        "credit_grant": row["credit_grant"],
        "debit": debit,
        "effective_at": row["effective_at"],
        "livemode": row["livemode"],
        "test_clock": row["test_clock"],
        "type": "credit" if credit is not None else "debit",
    }


def _scope(parent: Params, key: str) -> tuple[str | None, list[str] | None]:
    """`{key}[price_type]=metered` or `{key}[prices][i][id]`, exactly one of them."""
    s = parent.obj(key, required=True)
    price_type = s.enum("price_type", ("metered",))
    items = s.obj_list("prices", max_items=svc.MAX_PRICES)
    name = parent.name(key)
    if (price_type is None) == (items is None) or (items is not None and not items):
        raise invalid(
            name,
            f"Give {name}[price_type]=metered or up to {svc.MAX_PRICES} {name}[prices][i][id], "
            "not both and not neither.",
            "parameter_invalid",
        )
    prices = None if items is None else [i.str("id", required=True, max_len=255) for i in items]
    return price_type, prices  # type: ignore[return-value]


def create(call: Call) -> dict[str, Any]:
    p = call.params
    customer = p.str("customer", required=True, max_len=255)
    amount = p.obj("amount", required=True)
    amount.enum("type", ("monetary",), required=True)
    monetary = amount.obj("monetary", required=True)
    currency = check_currency(
        monetary.str("currency", required=True, max_len=3), "amount[monetary][currency]"
    )
    value = monetary.int("value", required=True, min=1, max=99_999_999_999)
    _, prices = _scope(p.obj("applicability_config", required=True), "scope")
    category = p.enum("category", ("paid", "promotional")) or "paid"
    priority = p.int("priority", min=0, max=100)
    effective_at = p.int("effective_at", min=0)
    expires_at = p.int("expires_at", min=0)
    name = p.str("name", max_len=100)
    metadata = merge_metadata(None, p.metadata())
    p.done()
    row = svc.create(
        call.repo,
        svc.GrantInput(
            customer=customer,  # type: ignore[arg-type]
            currency=currency,
            amount=value,  # type: ignore[arg-type]
            category=category,
            priority=50 if priority is None else priority,
            effective_at=effective_at,
            expires_at=expires_at,
            prices=prices,  # type: ignore[arg-type]
            name=name,
            metadata=metadata,
        ),
    )
    return render_grant(row)


def retrieve(call: Call) -> dict[str, Any]:
    call.params.done()
    return render_grant(svc.get(call.repo, call.path["id"]))


def update(call: Call) -> dict[str, Any]:
    p = call.params
    expires: Any = "keep"
    v = p.int("expires_at", min=0)
    if v is not None:
        expires = v
    elif p.cleared("expires_at"):
        expires = None
    change = p.metadata()
    p.done()
    row = svc.update(
        call.repo,
        call.path["id"],
        expires,
        None if change is None else lambda cur: merge_metadata(cur, change),
    )
    return render_grant(row)


def expire(call: Call) -> dict[str, Any]:
    call.params.done()
    return render_grant(svc.expire(call.repo, call.path["id"]))


def void(call: Call) -> dict[str, Any]:
    call.params.done()
    return render_grant(svc.void(call.repo, call.path["id"]))


def list_(call: Call) -> dict[str, Any]:
    p = call.params
    page = read_page(p)
    customer = p.str("customer", max_len=255)
    p.done()
    rows, more = svc.list_(
        call.repo,
        customer,
        limit=page.limit,
        starting_after=page.starting_after,
        ending_before=page.ending_before,
    )
    return envelope(call.url, [render_grant(r) for r in rows], more)


def summary(call: Call) -> dict[str, Any]:
    p = call.params
    customer = p.str("customer", required=True, max_len=255)
    f = p.obj("filter", required=True)
    kind = f.enum("type", ("credit_grant", "applicability_scope"), required=True)
    grant = price_type = prices = None
    if kind == "credit_grant":
        grant = f.str("credit_grant", required=True, max_len=255)
    else:
        price_type, prices = _scope(f, "applicability_scope")
    p.done()
    rows = svc.balance_summary(
        call.repo,
        customer,  # type: ignore[arg-type]
        credit_grant=grant,
        price_type=price_type,
        prices=prices,  # type: ignore[arg-type]
    )
    return {
        "object": "billing.credit_balance_summary",
        "balances": [
            {"available_balance": _monetary(c, a), "ledger_balance": _monetary(c, led)}
            for c, a, led in rows
        ],
        "customer": customer,
        "customer_account": None,
        "livemode": call.scope.livemode,
    }


def list_transactions(call: Call) -> dict[str, Any]:
    p = call.params
    page = read_page(p)
    customer = p.str("customer", required=True, max_len=255)
    grant = p.str("credit_grant", max_len=255)
    p.done()
    rows, more = svc.list_transactions(
        call.repo,
        customer,  # type: ignore[arg-type]
        grant,
        limit=page.limit,
        starting_after=page.starting_after,
        ending_before=page.ending_before,
    )
    return envelope(call.url, [render_transaction(r) for r in rows], more)


def retrieve_transaction(call: Call) -> dict[str, Any]:
    call.params.done()
    return render_transaction(svc.get_transaction(call.repo, call.path["id"]))


def register(router: Router) -> None:
    base = "/v1/billing/credit_grants"
    router.add("POST", base, create)
    router.add("GET", base, list_, list_of="billing.credit_grant")
    router.add("GET", base + "/{id}", retrieve)
    router.add("POST", base + "/{id}", update)
    router.add("POST", base + "/{id}/expire", expire)
    router.add("POST", base + "/{id}/void", void)
    # Reading the ledger first writes the entries that have fallen due: these are writes.
    router.add("GET", "/v1/billing/credit_balance_summary", summary, write=True)
    router.add(
        "GET",
        "/v1/billing/credit_balance_transactions",
        list_transactions,
        write=True,
        list_of="billing.credit_balance_transaction",
    )
    router.add("GET", "/v1/billing/credit_balance_transactions/{id}", retrieve_transaction)
