"""Billing meters: create, retrieve, update (display_name), list, deactivate, reactivate.

Meters found by event name are remembered for the rest of a write transaction (every meter
event of a write batch looks its meter up; most name the same one); any meter write in the
transaction forgets them, and so does a savepoint that rolls back (`store.db.ItemSavepoints`).
"""

from __future__ import annotations

from typing import Any

from meterline import clock
from meterline.ids import new_id
from meterline.services import ServiceError, not_found
from meterline.store.db import TRANSACTION_MEMOS
from meterline.store.repo import Repo
from meterline.store.tables import meters as t

BY_NAME = "meterline_meters_by_name"  # conn.info: (transaction, {(scope, name): row})
TRANSACTION_MEMOS.add(BY_NAME)


def _forget(repo: Repo) -> None:
    repo.conn.info.pop(BY_NAME, None)


def create(repo: Repo, values: dict[str, Any]) -> dict[str, Any]:
    _forget(repo)
    repo.lock("meters.event_name", values["event_name"])
    holder = repo.first(t, t.c.event_name == values["event_name"])
    if holder is not None:
        raise ServiceError(
            400,
            f"A meter with event_name {values['event_name']!r} already exists ({holder['id']}); "
            "each event name maps to one meter.",
            code="resource_already_exists",
            param="event_name",
        )
    now = clock.now()
    row = dict(
        id=new_id("mtr", 24),
        created=now,
        updated=now,
        status="active",
        deactivated_at=None,
        **values,
    )
    return repo.insert(t, row)


def get(repo: Repo, mid: str, *, param: str = "id") -> dict[str, Any]:
    row = repo.get(t, mid)
    if row is None:
        raise not_found("billing meter", mid, param)
    return row


def by_event_name(repo: Repo, event_name: str) -> dict[str, Any] | None:
    txn = repo.conn.get_transaction()
    if txn is None:  # a read outside a write transaction: nothing to share
        return repo.get_by(t, "event_name", event_name)
    held = repo.conn.info.get(BY_NAME)
    if held is None or held[0] is not txn:
        held = (txn, {})
        repo.conn.info[BY_NAME] = held
    key = (repo.scope.account_id, repo.scope.livemode, event_name)
    if key not in held[1]:
        held[1][key] = repo.get_by(t, "event_name", event_name)
    return held[1][key]


def update(repo: Repo, mid: str, display_name: str | None) -> dict[str, Any]:
    _forget(repo)
    get(repo, mid)
    if display_name is not None:
        repo.update(t, mid, {"display_name": display_name, "updated": clock.now()})
    return get(repo, mid)


def set_status(repo: Repo, mid: str, active: bool) -> dict[str, Any]:
    row = get(repo, mid)
    want = "active" if active else "inactive"
    if row["status"] == want:
        raise ServiceError(
            400,
            f"The meter {mid} is already {want}.",
            code="parameter_invalid",
            param="id",
        )
    now = clock.now()
    _forget(repo)
    repo.update(t, mid, {"status": want, "deactivated_at": None if active else now, "updated": now})
    return get(repo, mid)


def list_(repo: Repo, *, status: str | None, page: Any):
    where = [] if status is None else [t.c.status == status]
    return repo.page(
        t,
        where,
        limit=page.limit,
        starting_after=page.starting_after,
        ending_before=page.ending_before,
    )


def check_attachable(repo: Repo, mid: str, param: str) -> None:
    """A price may name a meter that exists in the account and is active."""
    row = repo.get(t, mid)
    if row is None:
        raise not_found("billing meter", mid, param)
    if row["status"] != "active":
        raise ServiceError(
            400,
            f"The meter {mid} is inactive, and an inactive meter cannot be attached to a new price. "
            "Reactivate it first (POST /v1/billing/meters/{id}/reactivate).",
            code="archived_meter",
            param=param,
        )
