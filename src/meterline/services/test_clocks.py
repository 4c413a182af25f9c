"""Test clocks: create, retrieve, list, delete, advance; and the time of a customer.

An advance is asynchronous, as on Stripe: `start_advance` makes the clock `advancing` and a
worker (services.due_work) runs what falls due, in one transaction, and makes it `ready`.

Always true: a clock only moves forward; a customer on a clock lives at the clock's
`frozen_time` for every time rule (`customer_now`), whatever the wall clock says; a clock of one
account is invisible to another (every read goes through `Repo`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meterline import clock
from meterline.ids import new_id
from meterline.services import ServiceError, not_found
from meterline.store.repo import Repo
from meterline.store.tables import customers, subscriptions
from meterline.store.tables import test_clocks as t

DELETES_AFTER = 30 * 86_400


def create(repo: Repo, frozen_time: int, name: str | None) -> dict[str, Any]:
    now = clock.now()
    return repo.insert(
        t,
        {
            "id": new_id("clock", 24),
            "created": now,
            "name": name,
            "frozen_time": frozen_time,
            "status": "ready",
            "deletes_after": now + DELETES_AFTER,
            "deleted": False,
        },
    )


def get(repo: Repo, cid: str, *, param: str = "test_clock") -> dict[str, Any]:
    row = repo.get(t, cid)
    if row is None or row["deleted"]:
        raise not_found("test clock", cid, param)
    return row


def list_(repo: Repo, *, limit: int, starting_after: str | None, ending_before: str | None):
    return repo.page(
        t,
        [t.c.deleted.is_(False)],
        limit=limit,
        starting_after=starting_after,
        ending_before=ending_before,
    )


def delete(repo: Repo, cid: str) -> None:
    """Delete the clock and, as Stripe does, the customers that live on it (their subscriptions
    end at the clock's time)."""
    row = get(repo, cid)
    repo.update(t, cid, {"deleted": True})
    repo.update_where(customers, [customers.c.test_clock == cid], {"deleted": True})
    c = subscriptions.c
    repo.update_where(
        subscriptions,
        [c.test_clock == cid, c.status.not_in(("canceled", "incomplete_expired"))],
        {"status": "canceled", "canceled_at": row["frozen_time"], "ended_at": row["frozen_time"]},
    )


def start_advance(repo: Repo, cid: str, frozen_time: int) -> dict[str, Any]:
    """Set the clock `advancing` to `frozen_time`; a worker then runs what falls due on the way
    and makes it `ready` there (services.due_work.finish_advance). Until then its customers
    stay at the old time, and it cannot be advanced again."""
    row = get(repo, cid, param="test_clock")
    if row["status"] == "advancing":
        raise ServiceError(
            400,
            f"The test clock {cid} is still advancing to {row['target_frozen_time']}: wait until "
            "its status is ready (retrieve it) before advancing it again.",
            code="test_clock_advancing",
            param="frozen_time",
        )
    if frozen_time <= row["frozen_time"]:
        raise ServiceError(
            400,
            f"frozen_time must be after the clock's current frozen_time ({row['frozen_time']}): "
            "test clocks only move forward.",
            code="parameter_invalid",
            param="frozen_time",
        )
    changes = {"status": "advancing", "target_frozen_time": frozen_time, "claimed_until": None}
    repo.update(t, cid, changes)
    return {**row, **changes}


def move(repo: Repo, cid: str, frozen_time: int) -> None:
    """Set the clock's time (the advance's worker, before it runs what fell due)."""
    repo.update(t, cid, {"frozen_time": frozen_time})


def customer_now(repo: Repo, customer: Mapping[str, Any], cache: dict | None = None) -> int:
    """The time every rule uses for this customer: its test clock's, or the wall clock's."""
    cid = customer.get("test_clock")
    if not cid:
        return clock.now()
    if cache is not None and cid in cache:
        return cache[cid]
    now = frozen_time(repo, cid)
    if now is None:
        return clock.now()
    if cache is not None:
        cache[cid] = now
    return now


def frozen_time(repo: Repo, clock_id: str) -> int | None:
    """The test clock's time, or None when it does not exist."""
    row = repo.get(t, clock_id)
    return row["frozen_time"] if row is not None else None


__all__ = [
    "create",
    "customer_now",
    "delete",
    "frozen_time",
    "get",
    "list_",
    "move",
    "start_advance",
]
