"""/v1/billing/meters"""

from __future__ import annotations

import re
from typing import Any

from meterline.api import render
from meterline.api.app import Call
from meterline.api.routing import Router
from meterline.engine.metering import EVENT_TIME_WINDOWS, FORMULAS, MAX_DIMENSION_KEYS
from meterline.services import meters as svc
from meterline.wire.errors import StripeError, invalid
from meterline.wire.lists import envelope, read_page

_KEY = re.compile(r"\A[^\[\]]{1,100}\Z")


def create(call: Call) -> dict[str, Any]:
    p = call.params
    display_name = p.str("display_name", required=True, max_len=250)
    event_name = p.str("event_name", required=True, max_len=100)
    agg = p.obj("default_aggregation", required=True)
    formula = agg.enum("formula", FORMULAS, required=True)  # type: ignore[union-attr]
    customer_key = "stripe_customer_id"
    cm = p.obj("customer_mapping")
    if cm is not None:
        customer_key = cm.str("event_payload_key", required=True, max_len=100)  # type: ignore[assignment]
        cm.enum("type", ("by_id",), required=True)
    value_key = "value"
    vs = p.obj("value_settings")
    if vs is not None:
        value_key = vs.str("event_payload_key", required=True, max_len=100)  # type: ignore[assignment]
    window = p.enum("event_time_window", EVENT_TIME_WINDOWS)
    dims = p.str_list("dimension_payload_keys", max_items=MAX_DIMENSION_KEYS) or []
    for i, k in enumerate(dims):
        if not _KEY.match(k) or k in (customer_key, value_key):
            raise invalid(
                f"dimension_payload_keys[{i}]",
                f"Invalid dimension key {k!r}: use 1 to 100 characters without brackets, other than the "
                "customer and value keys.",
            )
    if len(set(dims)) != len(dims):
        raise invalid("dimension_payload_keys", "dimension_payload_keys lists a key twice.")
    if customer_key == value_key:
        raise invalid(
            "value_settings[event_payload_key]", "The value key must differ from the customer key."
        )
    p.done()
    row = svc.create(
        call.repo,
        dict(
            display_name=display_name,
            event_name=event_name,
            formula=formula,
            customer_key=customer_key,
            value_key=value_key,
            event_time_window=window,
            dimension_payload_keys=dims,
        ),
    )
    return render.meter(row)


def retrieve(call: Call) -> dict[str, Any]:
    call.params.done()
    return render.meter(svc.get(call.repo, call.path["id"]))


def update(call: Call) -> dict[str, Any]:
    p = call.params
    name = p.str("display_name", max_len=250)
    p.done()
    return render.meter(svc.update(call.repo, call.path["id"], name))


def deactivate(call: Call) -> dict[str, Any]:
    call.params.done()
    return render.meter(svc.set_status(call.repo, call.path["id"], False))


def reactivate(call: Call) -> dict[str, Any]:
    call.params.done()
    return render.meter(svc.set_status(call.repo, call.path["id"], True))


def list_(call: Call) -> dict[str, Any]:
    p = call.params
    page = read_page(p)
    status = p.enum("status", ("active", "inactive"))
    p.done()
    rows, more = svc.list_(call.repo, status=status, page=page)
    return envelope(call.url, [render.meter(r) for r in rows], more)


def event_summaries(call: Call) -> dict[str, Any]:
    from meterline.api.analytics import number
    from meterline.services import usage
    from meterline.wire.lists import envelope

    p = call.params
    page = read_page(p)
    customer = p.str("customer", required=True, max_len=255)
    start = p.int("start_time", required=True)
    end = p.int("end_time", required=True)
    window = p.enum("value_grouping_window", ("day", "hour"))
    p.done()
    mid = call.path["id"]
    buckets = usage.event_summaries(call.repo, mid, customer, start, end, window)  # type: ignore[arg-type]
    items = [
        {
            "id": f"mtrusg_{b0}",
            "object": "billing.meter_event_summary",
            "aggregated_value": number(v),
            "end_time": b1,
            "livemode": call.scope.livemode,
            "meter": mid,
            "start_time": b0,
        }
        for b0, b1, v in reversed(buckets)  # newest first, as every list
    ]
    index = {item["id"]: i for i, item in enumerate(items)}
    cursor = page.starting_after or page.ending_before
    if cursor is not None and cursor not in index:
        raise StripeError(
            404,
            f"No such meter event summary: {cursor!r}.",
            code="resource_missing",
            param="starting_after" if page.starting_after else "ending_before",
        )
    if page.starting_after:
        rest = items[index[page.starting_after] + 1 :]
        chosen, more = rest[: page.limit], len(rest) > page.limit
    elif page.ending_before:
        before = items[: index[page.ending_before]]
        chosen, more = before[-page.limit :], len(before) > page.limit
    else:
        chosen, more = items[: page.limit], len(items) > page.limit
    return envelope(call.url, chosen, more)


def register(router: Router) -> None:
    router.add(
        "GET",
        "/v1/billing/meters/{id}/event_summaries",
        event_summaries,
        offload=True,
        list_of="billing.meter_event_summary",
    )
    router.add("POST", "/v1/billing/meters", create)
    router.add("GET", "/v1/billing/meters", list_, list_of="billing.meter")
    router.add("GET", "/v1/billing/meters/{id}", retrieve)
    router.add("POST", "/v1/billing/meters/{id}", update)
    router.add("POST", "/v1/billing/meters/{id}/deactivate", deactivate)
    router.add("POST", "/v1/billing/meters/{id}/reactivate", reactivate)
