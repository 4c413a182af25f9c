"""/v1/test_helpers/test_clocks"""

from __future__ import annotations

from typing import Any

from meterline.api.app import Call
from meterline.api.routing import Router
from meterline.services import ServiceError, due_work
from meterline.services import test_clocks as svc
from meterline.wire.lists import envelope, read_page


def render(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "test_helpers.test_clock",
        "created": row["created"],
        "deletes_after": row["deletes_after"],
        "frozen_time": row["frozen_time"],
        "livemode": row["livemode"],
        "name": row["name"],
        "status": row["status"],
        "status_details": (
            {"advancing": {"target_frozen_time": row["target_frozen_time"]}}
            if row["status"] == "advancing"
            else {}
        ),
    }


def create(call: Call) -> dict[str, Any]:
    p = call.params
    frozen = p.int("frozen_time", required=True, min=0, max=253_402_300_799)
    name = p.str("name", max_len=300)
    p.done()
    return render(svc.create(call.repo, frozen, name))  # type: ignore[arg-type]


def retrieve(call: Call) -> dict[str, Any]:
    call.params.done()
    return render(svc.get(call.repo, call.path["test_clock"], param="test_clock"))


def delete(call: Call) -> dict[str, Any]:
    call.params.done()
    svc.delete(call.repo, call.path["test_clock"])
    return {"id": call.path["test_clock"], "object": "test_helpers.test_clock", "deleted": True}


def advance(call: Call) -> dict[str, Any]:
    p = call.params
    frozen = p.int("frozen_time", required=True, min=0, max=253_402_300_799)
    p.done()
    return render(due_work.advance_clock(call.repo, call.path["test_clock"], frozen))  # type: ignore[arg-type]


def list_(call: Call) -> dict[str, Any]:
    p = call.params
    page = read_page(p)
    p.done()
    rows, more = svc.list_(
        call.repo,
        limit=page.limit,
        starting_after=page.starting_after,
        ending_before=page.ending_before,
    )
    return envelope(call.url, [render(r) for r in rows], more)


def register(router: Router) -> None:
    base = "/v1/test_helpers/test_clocks"
    router.add("POST", base, create)
    router.add("GET", base, list_, list_of="test_helpers.test_clock")
    router.add("GET", base + "/{test_clock}", retrieve)
    router.add("DELETE", base + "/{test_clock}", delete)
    router.add("POST", base + "/{test_clock}/advance", advance)


def expanders() -> dict[tuple[str, str], Any]:
    def clock(repo, id):
        try:
            return render(svc.get(repo, id))
        except ServiceError:
            return None

    return {
        (obj, "test_clock"): clock
        for obj in ("customer", "subscription", "invoice", "billing.credit_grant")
    }
