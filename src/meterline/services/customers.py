"""Customers: create, retrieve, update, delete (soft: a deleted customer reads as deleted, and
its subscriptions end), list."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import RowMapping

from meterline import clock
from meterline.ids import new_id, random_upper
from meterline.services import created_where, not_found, test_clocks
from meterline.store.repo import Repo
from meterline.store.tables import customers as t
from meterline.store.tables import subscriptions


def create(repo: Repo, values: dict[str, Any], metadata: dict[str, str]) -> RowMapping:
    if values.get("test_clock"):
        test_clocks.get(repo, values["test_clock"], param="test_clock")
    cid = new_id("cus", 14)
    row = dict(
        id=cid,
        created=clock.now(),
        deleted=False,
        email=values.get("email"),
        name=values.get("name"),
        description=values.get("description"),
        phone=values.get("phone"),
        address=values.get("address"),
        preferred_locales=values.get("preferred_locales") or [],
        invoice_prefix=values.get("invoice_prefix") or random_upper(8),
        metadata=metadata,
        test_clock=values.get("test_clock"),
    )
    return repo.insert(t, row)


def get(repo: Repo, cid: str, *, param: str = "id", allow_deleted: bool = True) -> RowMapping:
    row = repo.get(t, cid)
    if row is None or (row["deleted"] and not allow_deleted):
        raise not_found("customer", cid, param)
    return row


def update(repo: Repo, cid: str, values: dict[str, Any], metadata_change: Any) -> RowMapping:
    row = get(repo, cid, allow_deleted=False)
    changes = dict(values)
    if metadata_change is not None:
        changes["metadata"] = metadata_change(row["metadata"])
    repo.update(t, cid, changes)
    return repo.get(t, cid)  # type: ignore[return-value]


def delete(repo: Repo, cid: str) -> None:
    """Delete the customer and, as Stripe does, end its subscriptions now (billing nothing more)."""
    row = get(repo, cid, allow_deleted=False)
    repo.update(t, cid, {"deleted": True})
    end_subscriptions(repo, [subscriptions.c.customer == cid], test_clocks.customer_now(repo, row))


def end_subscriptions(repo: Repo, where: list[Any], now: int) -> None:
    """Cancel the live subscriptions matching `where` at `now` (their customers are going)."""
    c = subscriptions.c
    repo.update_where(
        subscriptions,
        [*where, c.status.not_in(("canceled", "incomplete_expired"))],
        {
            "status": "canceled",
            "canceled_at": now,
            "ended_at": now,
            "cancellation": {"reason": "cancellation_requested"},
        },
    )


def list_(
    repo: Repo,
    *,
    email: str | None,
    limit: int,
    starting_after: str | None,
    ending_before: str | None,
    created: Sequence[tuple[str, int]] = (),
    test_clock: str | None = None,
):
    where = [t.c.deleted.is_(False), *created_where(t.c.created, created)]
    if email is not None:
        where.append(t.c.email == email)
    if test_clock is not None:
        where.append(t.c.test_clock == test_clock)
    return repo.page(
        t, where, limit=limit, starting_after=starting_after, ending_before=ending_before
    )
