"""Subscriptions: create, retrieve, list, update, cancel; their renewals and the invoice preview.

A subscription bills its items' prices (one currency, one interval) in periods from its billing
cycle anchor (`engine.invoices`): at creation, a first invoice bills the licensed items in advance
and is finalized at once; at every period end (`renew`, run by the background job or a test clock
advance) a draft bills the ended period's usage in arrears and the next period's licensed items
in advance, and the subscription moves to the next period (or ends, when set to cancel at period
end). Time is the customer's: its test clock's, or the wall clock's.

Always true: a period end renews once (a conditional update on the period end, and the cycle's
invoice is unique by `draft_key`), whichever worker or request gets there first; a subscription
of one account is invisible to another (every read goes through Repo).
May import: engine, store, clock, ids, other services.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from meterline.engine import credits as credit_engine
from meterline.engine import invoices as engine
from meterline.engine.periods import boundary
from meterline.ids import new_id
from meterline.services import (
    ServiceError,
    created_where,
    credits,
    invoices,
    not_found,
    test_clocks,
)
from meterline.services import catalog as catalog_service
from meterline.services import customers as customers_service
from meterline.store.repo import Repo
from meterline.store.tables import products, subscription_items, subscriptions

MAX_ITEMS = 20
MAX_TRIAL_DAYS = 730
LIVE = ("active", "trialing", "past_due")  # statuses that renew
STATUSES = (
    "active",
    "canceled",
    "incomplete",
    "incomplete_expired",
    "past_due",
    "paused",
    "trialing",
    "unpaid",
)


@dataclass(frozen=True)
class ItemInput:
    price: str
    param: str  # "items[i][price]" or "items[i][plan]"
    quantity: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SubscriptionInput:
    customer: str
    items: list[ItemInput]
    billing_cycle_anchor: int | None = None
    trial_period_days: int | None = None
    trial_from_plan: bool = False
    trial_end: int | None = None
    cancel_at_period_end: bool = False
    collection_method: str = "charge_automatically"
    days_until_due: int | None = None
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


def _bad(message: str, param: str, code: str = "parameter_invalid") -> ServiceError:
    return ServiceError(400, message, code=code, param=param)


def get(repo: Repo, sid: str, *, param: str = "subscription_exposed_id") -> dict[str, Any]:
    row = repo.get(subscriptions, sid)
    if row is None:
        raise not_found("subscription", sid, param)
    return row


def find(repo: Repo, sid: str) -> dict[str, Any] | None:
    return repo.get(subscriptions, sid)


def get_item(repo: Repo, item_id: str) -> dict[str, Any]:
    row = repo.get(subscription_items, item_id)
    if row is None:
        raise not_found("subscription item", item_id, "item")
    return row


def items_of(repo: Repo, sid: str) -> list[dict[str, Any]]:
    return repo.rows_by(subscription_items, "subscription", sid)


def items_of_many(repo: Repo, sids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in sids}
    if not sids:
        return out
    repo.flush()
    q = repo.select(subscription_items, subscription_items.c.subscription.in_(list(sids)))
    for r in repo.conn.execute(q.order_by(subscription_items.c.seq)).mappings():
        out[r["subscription"]].append(dict(r))
    return out


def engine_items(repo: Repo, rows: Sequence[Mapping[str, Any]]) -> list[engine.Item]:
    out = []
    names: dict[str, str] = {}
    for r in rows:
        price = catalog_service.get_price_any(repo, r["price"])
        pid = price["product"]
        if pid not in names:
            prod = repo.get_memo(products, pid)
            names[pid] = prod["name"] if prod is not None else pid
        out.append(
            engine.Item(
                id=r["id"],
                price=price["id"],
                product=pid,
                name=names[pid],
                spec=catalog_service.spec_of(price),
                quantity=r["quantity"],
                meter=price["meter"],
            )
        )
    return out


def _check_items(repo: Repo, items: Sequence[ItemInput]) -> list[Mapping[str, Any]]:
    if not items:
        raise _bad(
            "A subscription needs at least one item: items[0][price].", "items", "parameter_missing"
        )
    if len(items) > MAX_ITEMS:
        raise _bad(f"A subscription takes at most {MAX_ITEMS} items (got {len(items)}).", "items")
    rows: list[Mapping[str, Any]] = []
    seen: set[str] = set()
    for it in items:
        price = catalog_service.get_price(repo, it.price, param=it.param)
        if price["type"] != "recurring":
            raise _bad(
                f"The price {it.price} is a one-time price: a subscription item needs a "
                "recurring price.",
                it.param,
            )
        if not price["active"]:
            raise _bad(
                f"The price {it.price} is not active, so it cannot be subscribed to.", it.param
            )
        if price["id"] in seen:
            raise _bad(
                f"The price {it.price} is in the subscription twice: give it once, with a quantity.",
                it.param,
            )
        seen.add(price["id"])
        qparam = it.param.rsplit("[", 1)[0] + "[quantity]"
        if price["usage_type"] == "metered" and it.quantity is not None:
            raise _bad(
                f"The price {it.price} is metered: its quantity comes from usage, so give no "
                "quantity for it.",
                qparam,
            )
        if rows:
            first = rows[0]
            if price["currency"] != first["currency"]:
                raise _bad(
                    f"The price {it.price} is in {price['currency']} and {first['id']} in "
                    f"{first['currency']}: all items of a subscription share one currency.",
                    it.param,
                )
            if (price["interval"], price["interval_count"]) != (
                first["interval"],
                first["interval_count"],
            ):
                raise _bad(
                    f"The price {it.price} bills every {price['interval_count']} "
                    f"{price['interval']}(s) and {first['id']} every {first['interval_count']} "
                    f"{first['interval']}(s): all items of a subscription share one billing "
                    "interval.",
                    it.param,
                )
        rows.append(price)
    return rows


def create(repo: Repo, s: SubscriptionInput) -> dict[str, Any]:
    cust = customers_service.get(repo, s.customer, param="customer", allow_deleted=False)
    now = test_clocks.customer_now(repo, cust)
    prices = _check_items(repo, s.items)
    interval, count = prices[0]["interval"], prices[0]["interval_count"]
    trial_end = None
    if s.trial_end is not None:
        if s.trial_end <= now:
            raise _bad("trial_end must be in the future (the customer's now).", "trial_end")
        trial_end = s.trial_end
    days = s.trial_period_days
    if s.trial_from_plan and days is None:
        days = max((p["trial_period_days"] or 0 for p in prices), default=0) or None
    if days and trial_end is None:
        trial_end = now + days * 86_400
    anchor = s.billing_cycle_anchor
    if anchor is not None:
        floor = trial_end or now
        if anchor < floor:
            raise _bad(
                "billing_cycle_anchor must not be before "
                + ("the trial's end." if trial_end else "now (the customer's now)."),
                "billing_cycle_anchor",
            )
        if anchor > boundary(floor, interval, count, 1):
            raise _bad(
                "billing_cycle_anchor must fall within one billing period from "
                + ("the trial's end." if trial_end else "now."),
                "billing_cycle_anchor",
            )
    else:
        anchor = trial_end or now
    start, end, ws, we = engine.first_period(now, anchor, interval, count, trial_end)
    sid = new_id("sub", 24)
    row = {
        "id": sid,
        "created": now,
        "customer": cust["id"],
        "status": "trialing" if trial_end else "active",
        "currency": prices[0]["currency"],
        "interval": interval,
        "interval_count": count,
        "billing_cycle_anchor": anchor,
        "start_date": now,
        "current_period_start": start,
        "current_period_end": end,
        "cancel_at_period_end": s.cancel_at_period_end,
        "canceled_at": now if s.cancel_at_period_end else None,
        "ended_at": None,
        "trial_start": now if trial_end else None,
        "trial_end": trial_end,
        "latest_invoice": new_id("in", 24),  # the first invoice, made below
        "description": s.description,
        "collection_method": s.collection_method,
        "days_until_due": s.days_until_due,
        "cancellation": {"reason": "cancellation_requested"} if s.cancel_at_period_end else None,
        "test_clock": cust["test_clock"],
        "metadata": s.metadata,
    }
    row = repo.insert(subscriptions, row)
    item_rows = []
    for it, price in zip(s.items, prices, strict=True):
        qty = (
            None
            if price["usage_type"] == "metered"
            else (1 if it.quantity is None else it.quantity)
        )
        item = {
            "id": new_id("si", 14),
            "created": now,
            "subscription": sid,
            "price": price["id"],
            "quantity": qty,
            "metadata": it.metadata,
        }
        repo.insert(subscription_items, item)
        item_rows.append(item)
    lines = engine.licensed_lines(
        engine_items(repo, item_rows), start, end, (ws, we), trial=bool(trial_end)
    )
    inv = invoices.create(
        repo,
        customer=cust,
        subscription=row,
        reason="subscription_create",
        period=(now, now),
        lines=lines,
        at=now,
        iid=row["latest_invoice"],
        finalize_at=now,
    )
    assert inv is not None
    return row


def list_(
    repo: Repo,
    *,
    customer: str | None,
    status: str | None,
    price: str | None,
    test_clock: str | None,
    created: Sequence[tuple[str, int]] = (),
    **page: Any,
):
    """Stripe's default leaves canceled subscriptions out; `status=all` includes them and
    `status=ended` lists only them."""
    c = subscriptions.c
    where: list[Any] = created_where(c.created, created)
    if customer is not None:
        where.append(c.customer == customer)
    if test_clock is not None:
        where.append(c.test_clock == test_clock)
    if status is None:
        where.append(c.status.not_in(("canceled", "incomplete_expired")))
    elif status == "ended":
        where.append(c.status.in_(("canceled", "incomplete_expired")))
    elif status != "all":
        where.append(c.status == status)
    if price is not None:
        i = subscription_items.c
        where.append(
            c.id.in_(
                sa.select(i.subscription).where(
                    i.account_id == repo.scope.account_id,
                    i.livemode == repo.scope.livemode,
                    i.price == price,
                )
            )
        )
    return repo.page(subscriptions, where, **page)


def update(
    repo: Repo,
    sid: str,
    *,
    cancel_at_period_end: bool | None,
    description: str | None | bool,
    metadata_change: Any,
) -> dict[str, Any]:
    """`description`: False leaves it."""
    row = get(repo, sid)
    changes: dict[str, Any] = {}
    if cancel_at_period_end is not None:
        if row["status"] in ("canceled", "incomplete_expired"):
            raise _bad(
                f"The subscription {sid} is canceled: it can no longer change.",
                "cancel_at_period_end",
            )
        cust = customers_service.get(repo, row["customer"], param="customer")
        now = test_clocks.customer_now(repo, cust)
        changes["cancel_at_period_end"] = cancel_at_period_end
        changes["canceled_at"] = now if cancel_at_period_end else None
        changes["cancellation"] = (
            {"reason": "cancellation_requested"} if cancel_at_period_end else None
        )
    if description is not False:
        changes["description"] = description
    if metadata_change is not None:
        changes["metadata"] = metadata_change(row["metadata"])
    if changes:
        repo.update(subscriptions, sid, changes)
    return {**row, **changes}


def cancel(
    repo: Repo,
    sid: str,
    *,
    invoice_now: bool = False,
    comment: str | None = None,
    feedback: str | None = None,
) -> dict[str, Any]:
    """End the subscription now. With `invoice_now`, a final draft bills the usage of the
    current period so far (Stripe's default bills nothing more)."""
    row = get(repo, sid)
    if row["status"] in ("canceled", "incomplete_expired"):
        raise _bad(f"The subscription {sid} is already canceled.", "subscription_exposed_id")
    cust = customers_service.get(repo, row["customer"], param="customer")
    now = test_clocks.customer_now(repo, cust)
    changes = {
        "status": "canceled",
        "canceled_at": row["canceled_at"] or now,
        "ended_at": now,
        "cancellation": {
            "reason": "cancellation_requested",
            "comment": comment,
            "feedback": feedback,
        },
    }
    if invoice_now and row["status"] != "trialing":
        items = engine_items(repo, items_of(repo, sid))
        start = row["current_period_start"]
        used = invoices.meter_totals(
            repo, cust["id"], [i.meter for i in items if i.meter], start, now
        )
        lines = engine.metered_lines(items, used, start, now)
        inv = invoices.create(
            repo,
            customer=cust,
            subscription=row,
            reason="subscription_update",
            period=(start, now),
            lines=lines,
            at=now,
            draft_key=f"final:{sid}",
        )
        if inv is not None:
            changes["latest_invoice"] = inv["id"]
    n = repo.update(subscriptions, sid, changes, expect={"status": row["status"]})
    if n != 1:
        raise _bad(f"The subscription {sid} is already canceled.", "subscription_exposed_id")
    return {**row, **changes}


def _cycle_lines(
    repo: Repo, row: Mapping[str, Any], items: list[engine.Item], r: engine.Renewal
) -> list[engine.LineDraft]:
    lines: list[engine.LineDraft] = []
    if r.usage is not None:
        meters = [i.meter for i in items if i.metered and i.meter]
        used = invoices.meter_totals(repo, row["customer"], meters, *r.usage)
        lines += engine.metered_lines(items, used, *r.usage)
    if r.next is not None:
        lines += engine.licensed_lines(items, *r.next, r.whole)
    return lines


def _cycle(row: Mapping[str, Any]) -> engine.Cycle:
    return engine.Cycle(
        anchor=row["billing_cycle_anchor"],
        interval=row["interval"],
        count=row["interval_count"],
        period_start=row["current_period_start"],
        period_end=row["current_period_end"],
        trial_end=row["trial_end"],
        cancel_at_period_end=row["cancel_at_period_end"],
    )


def renew(
    repo: Repo, sid: str, at: int, *, finalize_by: int | None = None
) -> dict[str, Any] | None:
    """Run the period end `at` of the subscription: its cycle's draft invoice, and the next
    period (or its end). None when it was not due at `at` or another worker did it. With
    `finalize_by` (a run catching up to that time), a draft whose hour has passed by then is
    finalized at once, at its due time, with the lines just computed."""
    row = get(repo, sid)
    if row["status"] not in LIVE or row["current_period_end"] != at:
        return None
    r = engine.renew(_cycle(row))
    if r.next is not None:
        changes: dict[str, Any] = {
            "current_period_start": r.next[0],
            "current_period_end": r.next[1],
            "status": "active" if row["status"] == "trialing" else row["status"],
        }
    else:
        changes = {"status": "canceled", "ended_at": at, "canceled_at": row["canceled_at"] or at}
    iid = new_id("in", 24)
    changes["latest_invoice"] = iid
    claimed = repo.update(
        subscriptions,
        sid,
        changes,
        expect={"current_period_end": at, "status": row["status"]},
    )
    if claimed != 1:
        return None
    cust = customers_service.get(repo, row["customer"], param="customer")
    items = engine_items(repo, items_of(repo, sid))
    late = finalize_by is not None and at + invoices.FINALIZE_AFTER <= finalize_by
    inv = invoices.create(
        repo,
        customer=cust,
        subscription=row,
        reason="subscription_cycle",
        period=(row["current_period_start"], at),
        lines=_cycle_lines(repo, row, items, r),
        at=at,
        draft_key=f"cycle:{sid}:{at}",
        iid=iid,
        finalize_at=at + invoices.FINALIZE_AFTER if late else None,
    )
    if inv is None:  # unreachable: the claim above is this cycle's only way in
        raise ServiceError(
            409, f"The cycle of {sid} at {at} was invoiced twice.", code="lock_timeout"
        )
    return {**row, **changes}


def due(repo: Repo, upto: int, test_clock: str | None, limit: int = 1000) -> list[tuple[int, str]]:
    """(current_period_end, id) of the live subscriptions due to renew by `upto` on that clock
    (None: on none)."""
    c = subscriptions.c
    clock_cond = c.test_clock.is_(None) if test_clock is None else c.test_clock == test_clock
    q = (
        sa.select(c.current_period_end, c.id)
        .where(
            c.account_id == repo.scope.account_id,
            c.livemode == repo.scope.livemode,
            c.status.in_(LIVE),
            c.current_period_end <= upto,
            clock_cond,
        )
        .order_by(c.current_period_end, c.seq)
        .limit(limit)
    )
    return [(t, i) for t, i in repo.conn.execute(q)]


def preview(repo: Repo, customer: str | None, subscription: str | None) -> dict[str, Any]:
    """The invoice the subscription's current period end will make, with the credits it would
    apply then, written nowhere. Without a subscription, the customer's next renewing one."""
    if subscription is not None:
        row = get(repo, subscription, param="subscription")
        if customer is not None and row["customer"] != customer:
            raise _bad(
                f"The subscription {subscription} is not the customer {customer}'s.",
                "subscription",
            )
    else:
        if customer is None:
            raise _bad(
                "Give the customer or the subscription whose coming invoice to preview.",
                "customer",
                "parameter_missing",
            )
        customers_service.get(repo, customer, param="customer", allow_deleted=False)
        c = subscriptions.c
        found = repo.first(subscriptions, c.customer == customer, c.status.in_(LIVE))
        if found is None:
            raise ServiceError(
                400,
                f"The customer {customer} has no subscription that will invoice again.",
                code="invoice_upcoming_none",
                param="customer",
            )
        rows = repo.conn.execute(
            repo.select(subscriptions, c.customer == customer, c.status.in_(LIVE)).order_by(
                c.current_period_end, c.seq
            )
        ).mappings()
        row = dict(next(iter(rows)))
    if row["status"] not in LIVE:
        raise ServiceError(
            400,
            f"The subscription {row['id']} is {row['status']}: it will not invoice again.",
            code="invoice_upcoming_none",
            param="subscription",
        )
    cust = customers_service.get(repo, row["customer"], param="customer")
    at = row["current_period_end"]
    items = engine_items(repo, items_of(repo, row["id"]))
    r = engine.renew(_cycle(row))
    drafts = _cycle_lines(repo, row, items, r)
    lines = [
        {"id": f"il_tmp_{i:04d}", "draft": d, "credited": 0, "credits": []}
        for i, d in enumerate(drafts)
    ]
    book = credits.settle(repo, row["customer"])
    reserved = credits.reserved_by_drafts(repo, row["customer"], at, book)
    balances = book.balances()
    for g, amount in reserved.items():
        balances[g] = balances.get(g, 0) - amount
    engine_lines = [
        credit_engine.Line(
            ln["id"], ln["draft"].price, row["currency"], ln["draft"].amount, ln["draft"].metered
        )
        for ln in lines
    ]
    apps = credit_engine.apply_credits(engine_lines, book.engine_grants(), balances, at)
    by_id = {ln["id"]: ln for ln in lines}
    for a in apps:
        by_id[a.line]["credited"] += a.amount
        by_id[a.line]["credits"].append(a)
    subtotal = sum(d.amount for d in drafts)
    credited = sum(a.amount for a in apps)
    return {
        "subscription": row,
        "customer": cust,
        "at": at,
        "period": r.usage or (row["current_period_start"], at),
        "lines": lines,
        "subtotal": subtotal,
        "credited": credited,
        "amount_due": subtotal - credited,
    }


__all__ = [
    "LIVE",
    "MAX_ITEMS",
    "STATUSES",
    "ItemInput",
    "SubscriptionInput",
    "cancel",
    "create",
    "due",
    "engine_items",
    "find",
    "get",
    "get_item",
    "items_of",
    "items_of_many",
    "list_",
    "preview",
    "renew",
    "update",
]
