"""GET /v1/billing/analytics/meter_usage: the seed's shape (request `start_time`, `end_time`,
`meters[i][meter_id]`; response `data_refreshed_at` and `data` rows), or, for a request whose
Stripe-Version is 2025-09-30.preview or later, Stripe's renamed shape (`starts_at`, `ends_at`,
`meters[i][meter]`; `refreshed_at` and a `rows` list of `starts_at`, `ends_at`, `value`, `meter`)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from meterline.api.app import Call
from meterline.api.routing import Router
from meterline.engine.buckets import WINDOWS
from meterline.services import usage as svc
from meterline.wire.errors import invalid

SEED_PARAMS = {
    "start_param": "start_time",
    "end_param": "end_time",
    "window_param": "value_grouping_window",
    "timezone_param": "timezone",
}


def number(v: Decimal) -> int | float:
    """A JSON number for an exact aggregate (whole values stay integers)."""
    return int(v) if v == v.to_integral_value() else float(v)


PREVIEW_SINCE = "2025-09-30"
PREVIEW_PARAMS = {
    "start_param": "starts_at",
    "end_param": "ends_at",
    "window_param": "value_grouping_window",
    "timezone_param": "timezone",
}


def preview_shape(version: str | None) -> bool:
    """Stripe renamed the request and response in 2025-09-30.preview; a request that names that
    version or a later one gets the new shape, every other request the seed's."""
    return version is not None and version[:10] >= PREVIEW_SINCE


def _meters(call: Call, meter_key: str) -> list[svc.MeterQuery] | None:
    items = call.params.obj_list("meters", max_items=50)
    if items is None:
        return None
    other = "meter" if meter_key == "meter_id" else "meter_id"
    out = []
    for m in items:
        if other in m.data and meter_key not in m.data:
            raise invalid(
                m.name(meter_key),
                f"Missing required param: {m.name(meter_key)}. With this Stripe-Version the meter is named "
                f"{meter_key}; {other} belongs to the "
                + (
                    "2025-09-30.preview shape."
                    if other == "meter"
                    else "earlier shape (start_time, end_time, meter_id)."
                ),
                "parameter_missing",
            )
        meter_id = m.str(meter_key, required=True, max_len=255)
        group_by = tuple(m.str_list("dimension_group_by_keys", max_items=10) or ())
        filters: dict[str, Any] = {}
        for name in ("dimension_filters", "tenant_filters"):
            f = m.raw(name)
            if f is None or f == "":
                continue
            if not isinstance(f, dict):
                raise invalid(
                    m.name(name), f"{m.name(name)} must be a hash: {m.name(name)}[model]=gpt-4."
                )
            for key, value in f.items():
                if isinstance(value, dict):  # an indexed list: key[0]=a&key[1]=b
                    value = [
                        value[k] for k in sorted(value, key=lambda k: int(k) if k.isdigit() else -1)
                    ]
                if isinstance(value, list) and not all(isinstance(x, str) for x in value):
                    raise invalid(f"{m.name(name)}[{key}]", "Filter values must be strings.")
                filters[key] = value
        out.append(svc.MeterQuery(meter_id, group_by, filters))  # type: ignore[arg-type]
    return out


def meter_usage(call: Call) -> dict[str, Any]:
    p = call.params
    preview = preview_shape(call.api_version)
    names = PREVIEW_PARAMS if preview else SEED_PARAMS
    start_name, end_name = names["start_param"], names["end_param"]
    for wrong, right in (
        (("start_time", "starts_at"), ("end_time", "ends_at"))
        if preview
        else (("starts_at", "start_time"), ("ends_at", "end_time"))
    ):
        if wrong in p.data and right not in p.data:
            raise invalid(
                right,
                f"Missing required param: {right}. With Stripe-Version {call.api_version or '(none)'} the range is "
                f"{start_name}/{end_name}; {wrong} belongs to the other shape (2025-09-30.preview renamed it).",
                "parameter_missing",
            )
    customer = p.str("customer", required=True, max_len=255)
    start = p.int(start_name, required=True)
    end = p.int(end_name, required=True)
    tz = p.str("timezone", max_len=64) or "UTC"
    window = p.enum("value_grouping_window", WINDOWS)
    meter_key = "meter" if preview else "meter_id"
    queries = _meters(call, meter_key)
    p.done()
    rows = svc.meter_usage(
        call.repo,
        customer,
        start,
        end,
        window,
        tz,
        queries,  # type: ignore[arg-type]
        param_names=names,
        meter_param="meters[{i}][" + meter_key + "]",
    )
    now = svc.refreshed_at(call.repo)
    if preview:
        return {
            "object": "billing.analytics.meter_usage",
            "livemode": call.scope.livemode,
            "refreshed_at": now,
            "rows": {
                "object": "list",
                "data": [
                    {
                        "id": _row_id(customer, r),
                        "object": "billing.analytics.meter_usage_row",
                        "dimensions": r.dimensions,
                        "ends_at": r.bucket_end_time,
                        "meter": r.meter_id,
                        "starts_at": r.bucket_start_time,
                        "value": number(r.bucket_value),
                    }
                    for r in rows
                ],
                "has_more": False,
                "url": call.url,
            },
        }
    return {
        "object": "billing.analytics.meter_usage",
        "data_refreshed_at": now,
        "livemode": call.scope.livemode,
        "data": [
            {
                "object": "billing.analytics.meter_usage_row",
                "bucket_start_time": r.bucket_start_time,
                "bucket_end_time": r.bucket_end_time,
                "meter_id": r.meter_id,
                "bucket_value": number(r.bucket_value),
                "dimensions": r.dimensions,
            }
            for r in rows
        ],
    }


def _row_id(customer: str, r: Any) -> str:
    import hashlib

    key = f"{customer}|{r.meter_id}|{r.bucket_start_time}|{sorted((r.dimensions or {}).items())}"
    return "mtrusgrow_" + hashlib.sha256(key.encode()).hexdigest()[:24]


def register(router: Router) -> None:
    router.add("GET", "/v1/billing/analytics/meter_usage", meter_usage, offload=True)
