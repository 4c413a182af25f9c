"""Billing meters: create, retrieve, update (display_name), list, deactivate, reactivate."""

from __future__ import annotations

from typing import Any

from meterline import clock
from meterline.ids import new_id
from meterline.services import ServiceError, not_found
from meterline.store.repo import Repo
from meterline.store.tables import meters as t


def create(repo: Repo, values: dict[str, Any]) -> dict[str, Any]:
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
    return repo.get_by(t, "event_name", event_name)


def update(repo: Repo, mid: str, display_name: str | None) -> dict[str, Any]:
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
