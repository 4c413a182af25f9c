"""Invoices: drafts with their lines, finalization with credits, payment, void, lists.

A subscription's cycle makes a draft (`create`, once per cycle by its `draft_key`); the draft
finalizes `FINALIZE_AFTER` seconds later (the background job or a test clock advance) or on
`finalize`. Finalization recomputes the metered lines from the usage at that moment (events that
arrived during the hour for the closed period count), then, under the customer's ledger lock,
applies credits in burn order (`services.credits.application`) and fixes the amounts. A renewal
that a run catches up on after the hour, and a new subscription's first invoice, are written
finalized at once (`create(finalize_at=...)`).

Always true: an invoice leaves `draft` once (a conditional update on its status); for every
invoice, subtotal - credits = amount_due, and each line's credits are the sum of the ledger's
`credits_applied` entries naming it; a void gives every applied credit back; amounts are integers
in minor units; invoices of one account are invisible to another (every read goes through Repo).
May import: engine, store, clock, ids, other services (never subscriptions: it calls us).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from meterline.engine import credits as credit_engine
from meterline.engine.invoices import LineDraft
from meterline.engine.pricing import billed_quantity, line_amount
from meterline.ids import new_id
from meterline.services import ServiceError, created_where, credits, not_found, test_clocks, usage
from meterline.services import catalog as catalog_service
from meterline.services import customers as customers_service
from meterline.store.repo import Repo
from meterline.store.tables import credit_balance_transactions as txns
from meterline.store.tables import invoice_lines, invoices, meters, subscriptions

FINALIZE_AFTER = 3600
STATUSES = ("draft", "open", "paid", "uncollectible", "void")


def get(repo: Repo, iid: str, *, param: str = "invoice") -> dict[str, Any]:
    row = repo.get(invoices, iid)
    if row is None:
        raise not_found("invoice", iid, param)
    return row


def find(repo: Repo, iid: str) -> dict[str, Any] | None:
    return repo.get(invoices, iid)


def update(
    repo: Repo, iid: str, metadata_change: Any, description: str | None | bool
) -> dict[str, Any]:
    """`description`: False leaves it; only a draft's description can change."""
    inv = get(repo, iid)
    changes: dict[str, Any] = {}
    if metadata_change is not None:
        changes["metadata"] = metadata_change(inv["metadata"])
    if description is not False:
        if inv["status"] != "draft":
            raise ServiceError(
                400,
                f"The invoice {iid} is {inv['status']}: only a draft's description can change.",
                code="invoice_not_editable",
                param="description",
            )
        changes["description"] = description
    if changes:
        repo.update(invoices, iid, changes)
    return {**inv, **changes}


def lines_of(repo: Repo, iid: str) -> list[dict[str, Any]]:
    return repo.rows_by(invoice_lines, "invoice", iid, order="position")


def credit_amounts(repo: Repo, iid: str) -> dict[str, list[tuple[str, int]]]:
    """(credit balance transaction, amount) of each line's applied credits, in ledger order."""
    repo.flush()
    t = txns.c
    q = (
        sa.select(t.invoice_line_item, t.id, t.amount)
        .where(
            t.account_id == repo.scope.account_id,
            t.livemode == repo.scope.livemode,
            t.invoice == iid,
            t.type == "credits_applied",
        )
        .order_by(t.seq)
    )
    out: dict[str, list[tuple[str, int]]] = {}
    for line, tid, amount in repo.conn.execute(q):
        out.setdefault(line, []).append((tid, amount))
    return out


def list_(
    repo: Repo,
    *,
    customer: str | None,
    subscription: str | None,
    status: str | None,
    created: Sequence[tuple[str, int]] = (),
    **page: Any,
):
    c = invoices.c
    where = created_where(c.created, created)
    if customer is not None:
        where.append(c.customer == customer)
    if subscription is not None:
        where.append(c.subscription == subscription)
    if status is not None:
        where.append(c.status == status)
    return repo.page(invoices, where, **page)


def _line_row(inv: str, sub: str | None, currency: str, pos: int, d: LineDraft) -> dict[str, Any]:
    return {
        "id": new_id("il", 24),
        "created": d.start,
        "invoice": inv,
        "position": pos,
        "subscription": sub,
        "subscription_item": d.item,
        "price": d.price,
        "product": d.product,
        "currency": currency,
        "description": d.description,
        "quantity": d.quantity,
        "amount": d.amount,
        "credited": 0,
        "metered": d.metered,
        "proration": d.proration,
        "period_start": d.start,
        "period_end": d.end,
        "metadata": {},
    }


def create(
    repo: Repo,
    *,
    customer: Mapping[str, Any],
    subscription: Mapping[str, Any],
    reason: str,
    period: tuple[int, int],
    lines: Sequence[LineDraft],
    at: int,
    draft_key: str | None = None,
    iid: str | None = None,
    finalize_at: int | None = None,
) -> dict[str, Any] | None:
    """A draft invoice of the subscription with these lines, created at `at` and finalizing an
    hour later. With a `draft_key` taken already (another worker made this cycle's draft), None.

    With `finalize_at` (a renewal that a run catches up on after the draft's hour, or a new
    subscription's first invoice), it is finalized at that time as it is made, from the lines
    just computed: under the customer's ledger lock, the credits are worked out first, then the
    invoice, its lines and their ledger entries are written once, in their final state."""
    iid = iid or new_id("in", 24)
    subtotal = sum(d.amount for d in lines)
    row = {
        "id": iid,
        "created": at,
        "customer": customer["id"],
        "subscription": subscription["id"],
        "draft_key": draft_key,
        "status": "draft",
        "currency": subscription["currency"],
        "billing_reason": reason,
        "collection_method": subscription["collection_method"],
        "period_start": period[0],
        "period_end": period[1],
        "subtotal": subtotal,
        "credited": 0,
        "amount_due": subtotal,
        "amount_paid": 0,
        "number": None,
        "description": subscription["description"],
        "customer_email": customer["email"],
        "customer_name": customer["name"],
        "automatically_finalizes_at": at + FINALIZE_AFTER,
        "finalized_at": None,
        "paid_at": None,
        "voided_at": None,
        "due_date": None,
        "test_clock": subscription["test_clock"],
        "metadata": {},
    }
    rows = [
        _line_row(iid, subscription["id"], row["currency"], pos, d) for pos, d in enumerate(lines)
    ]
    pending: credits.Pending = []
    if finalize_at is not None:
        credits.lock_customer(repo, customer["id"])
        prices = {
            ln["price"]: catalog_service.get_price_any(repo, ln["price"])
            for ln in rows
            if ln["metered"]
        }
        changes, per_line, pending = _settlement(repo, row, rows, prices, customer, finalize_at)
        row.update(changes)
        for ln in rows:
            ln["credited"] = per_line.get(ln["id"], 0)
    if draft_key is not None:
        if not repo.insert_unless_exists(invoices, row):
            if pending:  # unreachable: a renewal's claim on its period is its only way in
                raise ServiceError(
                    409, f"The invoice of {draft_key} was made twice.", code="lock_timeout"
                )
            return None
        row = {**row, "account_id": repo.scope.account_id, "livemode": repo.scope.livemode}
    else:
        row = repo.insert(invoices, row)
    for ln in rows:
        repo.insert(invoice_lines, ln)
    credits.write_pending(repo, pending)
    return {**row, "_lines": rows}


def meter_totals(
    repo: Repo, customer: str, meter_ids: Sequence[str], start: int, end: int
) -> dict[str, Decimal]:
    """Each meter's aggregate (its formula) for the customer over [start, end)."""
    if not meter_ids or end <= start:
        return {}
    metas = {}
    for mid in sorted(set(meter_ids)):
        row = repo.get_memo(meters, mid)
        if row is not None:
            metas[mid] = usage.meter_info(row)
    out: dict[str, Decimal] = {}
    for r in usage.collect(repo, customer, metas, [(start, end)]):
        out[r.meter_id] = out.get(r.meter_id, Decimal(0)) + Decimal(r.bucket_value)
    return out


def _refresh_metered(
    repo: Repo, inv: Mapping[str, Any], lines: list[dict[str, Any]]
) -> dict[str, Any]:
    """Recompute the metered lines from the usage as it is now (in place, and stored); returns
    the metered lines' prices by id."""
    metered = [ln for ln in lines if ln["metered"]]
    if not metered:
        return {}
    specs = {ln["price"]: catalog_service.get_price_any(repo, ln["price"]) for ln in metered}
    spans: dict[tuple[int, int], list[str]] = {}
    for ln in metered:
        meter = specs[ln["price"]]["meter"]
        if meter:
            spans.setdefault((ln["period_start"], ln["period_end"]), []).append(meter)
    totals = {span: meter_totals(repo, inv["customer"], ms, *span) for span, ms in spans.items()}
    for ln in metered:
        price = specs[ln["price"]]
        spec = catalog_service.spec_of(price)
        used = totals.get((ln["period_start"], ln["period_end"]), {}).get(
            price["meter"], Decimal(0)
        )
        q = billed_quantity(used, spec.transform_divide_by, spec.transform_round)
        amount = line_amount(spec, q)
        if amount != ln["amount"] or Decimal(ln["quantity"]) != q:
            text = ln["description"] or ""
            text = text.split(" × ", 1)[-1] if " × " in text else text
            desc = (
                f"{format(q.normalize(), 'f') if q != q.to_integral_value() else int(q)} × {text}"
            )
            repo.update(
                invoice_lines, ln["id"], {"quantity": q, "amount": amount, "description": desc}
            )
            ln.update(quantity=q, amount=amount, description=desc)
    return specs


def _number(repo: Repo, customer: Mapping[str, Any]) -> str:
    ph = "?" if repo.dialect == "sqlite" else "%s"
    cur = repo.conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cur.execute(
            f"SELECT count(*) FROM invoices WHERE account_id = {ph} AND livemode = {ph} "
            f"AND customer = {ph} AND number IS NOT NULL",
            (repo.scope.account_id, repo.scope.livemode, customer["id"]),
        )
        n = cur.fetchone()[0]
    finally:
        cur.close()
    prefix = customer.get("invoice_prefix") or customer["id"].split("_", 1)[-1][:8].upper()
    return f"{prefix}-{n + 1:04d}"


def _customer_time(repo: Repo, customer: Mapping[str, Any]) -> int:
    return test_clocks.customer_now(repo, customer)


def finalize(repo: Repo, iid: str, at: int | None = None) -> dict[str, Any]:
    """Finalize a draft at `at` (default: the customer's now): fresh metered amounts, credits in
    burn order, a number, and `open` (or `paid` when nothing is due)."""
    inv = get(repo, iid)
    credits.lock_customer(repo, inv["customer"])
    inv = get(repo, iid)  # read again under the lock: another finalization may have won
    if inv["status"] != "draft":
        raise ServiceError(
            400,
            f"The invoice {iid} is {inv['status']}: only a draft invoice can be finalized.",
            code="invoice_not_editable",
            param="invoice",
        )
    return _finalize(repo, inv, at)


def finalize_due(repo: Repo, iid: str, at: int) -> bool:
    """The background run's finalization: False when the invoice is no longer a draft (another
    worker or a request finalized it first)."""
    inv = get(repo, iid)
    if inv["status"] != "draft":
        return False
    credits.lock_customer(repo, inv["customer"])
    inv = get(repo, iid)
    if inv["status"] != "draft":
        return False
    _finalize(repo, inv, at)
    return True


def _finalize(repo: Repo, inv: dict[str, Any], at: int | None) -> dict[str, Any]:
    """Refresh the draft's metered lines from the usage, then settle it at `at` (the caller
    holds the customer's ledger lock)."""
    iid = inv["id"]
    customer = customers_service.get(repo, inv["customer"], param="customer")
    if at is None:
        at = _customer_time(repo, customer)
    lines = lines_of(repo, iid)
    prices = _refresh_metered(repo, inv, lines)
    changes, per_line, pending = _settlement(repo, inv, lines, prices, customer, at)
    credits.write_pending(repo, pending)
    for ln in lines:
        if per_line.get(ln["id"]):
            repo.update(invoice_lines, ln["id"], {"credited": per_line[ln["id"]]})
    n = repo.update(invoices, iid, changes, expect={"status": "draft"})
    if n != 1:  # unreachable under the lock; refuse rather than write twice
        raise ServiceError(
            409, f"The invoice {iid} was finalized by another request.", code="lock_timeout"
        )
    return {**inv, **changes}


def _settlement(
    repo: Repo,
    inv: Mapping[str, Any],
    lines: Sequence[Mapping[str, Any]],
    prices: Mapping[str, Mapping[str, Any]],
    customer: Mapping[str, Any],
    at: int,
) -> tuple[dict[str, Any], dict[str, int], credits.Pending]:
    """What finalizing the invoice at `at` changes, worked out and written nowhere: the
    invoice's new fields, each line's credits, and the ledger entries to write (the ledger
    settled to `at`, then one `credits_applied` per grant and line, in burn order)."""
    engine_lines = [
        credit_engine.Line(
            ln["id"],
            ln["price"],
            ln["currency"],
            ln["amount"],
            bool(ln["metered"] and prices[ln["price"]]["meter"]),
        )
        for ln in lines
    ]
    pending, applied = credits.application(repo, inv["customer"], inv["id"], engine_lines, at)
    per_line: dict[str, int] = {}
    for e in applied:
        per_line[e.line] = per_line.get(e.line, 0) + e.amount  # type: ignore[index]
    totals = credit_engine.invoice_totals(
        engine_lines,
        [credit_engine.Application(e.grant, e.line, e.amount) for e in applied],  # type: ignore[arg-type]
    )
    paid = totals.amount_due == 0
    changes = {
        "status": "paid" if paid else "open",
        "subtotal": totals.subtotal,
        "credited": totals.credits,
        "amount_due": totals.amount_due,
        "amount_paid": 0,
        "number": _number(repo, customer),
        "finalized_at": at,
        "paid_at": at if paid else None,
        "automatically_finalizes_at": None,
        "due_date": None,
    }
    if inv["collection_method"] == "send_invoice":
        days = _days_until_due(repo, inv)
        changes["due_date"] = at + days * 86_400
    return changes, per_line, pending


def _days_until_due(repo: Repo, inv: Mapping[str, Any]) -> int:
    sub = repo.get(subscriptions, inv["subscription"]) if inv["subscription"] else None
    return (sub or {}).get("days_until_due") or 30


def void(repo: Repo, iid: str) -> dict[str, Any]:
    """Void an open invoice: nothing is due any more, and every credit it applied goes back to
    its grant (and is closed again at once when that grant has ended meanwhile)."""
    inv = get(repo, iid)
    credits.lock_customer(repo, inv["customer"])
    inv = get(repo, iid)
    if inv["status"] not in ("open", "uncollectible"):
        raise ServiceError(
            400,
            f"The invoice {iid} is {inv['status']}: only an open invoice can be voided"
            + (" (delete or finalize a draft instead)." if inv["status"] == "draft" else "."),
            code="invoice_not_editable",
            param="invoice",
        )
    customer = customers_service.get(repo, inv["customer"], param="customer")
    at = max(_customer_time(repo, customer), inv["finalized_at"] or 0)
    credits.give_back(repo, inv["customer"], iid, at)
    changes = {"status": "void", "voided_at": at}
    repo.update(invoices, iid, changes)
    return {**inv, **changes}


def pay(repo: Repo, iid: str, paid_out_of_band: bool) -> dict[str, Any]:
    inv = get(repo, iid)
    if not paid_out_of_band:
        raise ServiceError(
            400,
            "meterline collects no payments: record a payment made elsewhere with "
            "paid_out_of_band=true.",
            code="parameter_missing",
            param="paid_out_of_band",
        )
    if inv["status"] != "open":
        raise ServiceError(
            400,
            f"The invoice {iid} is {inv['status']}: only an open invoice can be paid.",
            code="invoice_not_editable",
            param="invoice",
        )
    customer = customers_service.get(repo, inv["customer"], param="customer")
    at = max(_customer_time(repo, customer), inv["finalized_at"] or 0)
    changes = {"status": "paid", "amount_paid": inv["amount_due"], "paid_at": at}
    n = repo.update(invoices, iid, changes, expect={"status": "open"})
    if n != 1:
        raise ServiceError(
            400,
            f"The invoice {iid} is no longer open.",
            code="invoice_not_editable",
            param="invoice",
        )
    return {**inv, **changes}


def due_drafts(
    repo: Repo, upto: int, test_clock: str | None, limit: int = 1000
) -> list[tuple[int, str]]:
    """(automatically_finalizes_at, id) of the drafts due by `upto`, on that clock (None: none)."""
    c = invoices.c
    clock_cond = c.test_clock.is_(None) if test_clock is None else c.test_clock == test_clock
    q = (
        sa.select(c.automatically_finalizes_at, c.id)
        .where(
            c.account_id == repo.scope.account_id,
            c.livemode == repo.scope.livemode,
            c.status == "draft",
            c.automatically_finalizes_at <= upto,
            clock_cond,
        )
        .order_by(c.automatically_finalizes_at, c.seq)
        .limit(limit)
    )
    return [(t, i) for t, i in repo.conn.execute(q)]


__all__ = [
    "FINALIZE_AFTER",
    "STATUSES",
    "create",
    "credit_amounts",
    "due_drafts",
    "finalize",
    "finalize_due",
    "find",
    "get",
    "lines_of",
    "list_",
    "meter_totals",
    "pay",
    "update",
    "void",
]
