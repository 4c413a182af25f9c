"""/v1/customers"""

from __future__ import annotations

from typing import Any

from meterline.api import render
from meterline.api.app import Call
from meterline.api.routing import Router
from meterline.services import ServiceError
from meterline.services import customers as svc
from meterline.wire.errors import invalid
from meterline.wire.lists import envelope, read_created, read_page
from meterline.wire.params import Params, merge_metadata

_STRINGS = {"name": 256, "email": 512, "description": 5000, "phone": 20, "invoice_prefix": 12}


def _fields(p: Params, *, update: bool) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, max_len in _STRINGS.items():
        if update and key == "invoice_prefix":
            continue
        v = p.str(key, max_len=max_len)
        if v is not None:
            values[key] = v
        elif update and p.cleared(key):
            values[key] = None
    if "invoice_prefix" in values and not (
        3 <= len(values["invoice_prefix"]) <= 12
        and values["invoice_prefix"].isalnum()
        and values["invoice_prefix"].isupper()
    ):
        raise invalid(
            "invoice_prefix", "Invalid invoice_prefix: use 3 to 12 uppercase letters or digits."
        )
    addr = p.obj("address")
    if addr is not None:
        values["address"] = {
            k: addr.str(k, max_len=200)
            for k in ("city", "country", "line1", "line2", "postal_code", "state")
        }
    elif update and p.cleared("address"):
        values["address"] = None
    locales = p.str_list("preferred_locales", max_items=30)
    if locales is not None:
        values["preferred_locales"] = locales
    elif update and p.cleared("preferred_locales"):
        values["preferred_locales"] = []
    return values


def create(call: Call) -> dict[str, Any]:
    p = call.params
    values = _fields(p, update=False)
    values["test_clock"] = p.str("test_clock")
    metadata = merge_metadata(None, p.metadata())
    p.done()
    return render.customer(svc.create(call.repo, values, metadata))


def retrieve(call: Call) -> dict[str, Any]:
    call.params.done()
    return render.customer(svc.get(call.repo, call.path["customer"]))


def update(call: Call) -> dict[str, Any]:
    p = call.params
    values = _fields(p, update=True)
    change = p.metadata()
    p.done()
    row = svc.update(
        call.repo,
        call.path["customer"],
        values,
        None if change is None else lambda cur: merge_metadata(cur, change),
    )
    return render.customer(row)


def delete(call: Call) -> dict[str, Any]:
    call.params.done()
    svc.delete(call.repo, call.path["customer"])
    return render.deleted(call.path["customer"], "customer")


def list_(call: Call) -> dict[str, Any]:
    p = call.params
    page = read_page(p)
    email = p.str("email", max_len=512)
    created = read_created(p)
    test_clock = p.str("test_clock", max_len=255)
    p.done()
    rows, more = svc.list_(
        call.repo,
        email=email,
        created=created,
        test_clock=test_clock,
        limit=page.limit,
        starting_after=page.starting_after,
        ending_before=page.ending_before,
    )
    return envelope(call.url, [render.customer(r) for r in rows], more)


def register(router: Router) -> None:
    router.add("POST", "/v1/customers", create, defer_inserts=True)
    router.add("GET", "/v1/customers", list_, list_of="customer")
    router.add("GET", "/v1/customers/{customer}", retrieve)
    router.add("POST", "/v1/customers/{customer}", update)
    router.add("DELETE", "/v1/customers/{customer}", delete)


def expanders() -> dict[tuple[str, str], Any]:
    def customer(repo, id):
        try:
            row = svc.get(repo, id)
        except ServiceError:
            return None
        return render.customer(row)

    return {
        (obj, "customer"): customer for obj in ("subscription", "invoice", "billing.credit_grant")
    }
