"""GET /v1/billing/analytics/meter_usage, in the seed's shape (request `start_time`, `end_time`,
`meters[i][meter_id]`; response `data_refreshed_at` and `data` rows)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from meterline import clock
from meterline.api.app import Call
from meterline.api.routing import Router
from meterline.engine.buckets import WINDOWS
from meterline.services import usage as svc
from meterline.wire.errors import StripeError, invalid

SEED_PARAMS = {
    "start_param": "start_time",
    "end_param": "end_time",
    "window_param": "value_grouping_window",
    "timezone_param": "timezone",
}


def number(v: Decimal) -> int | float:
    """A JSON number for an exact aggregate (whole values stay integers)."""
    return int(v) if v == v.to_integral_value() else float(v)


def _meters(call: Call) -> list[svc.MeterQuery] | None:
    items = call.params.obj_list("meters", max_items=50)
    if items is None:
        return None
    out = []
    for m in items:
        if "meter" in m.data and "meter_id" not in m.data:
            raise invalid(
                m.name("meter_id"),
                f"Missing required param: {m.name('meter_id')}. This API shape names the meter meter_id; "
                "meters[i][meter] is the name in the 2025-09-30.preview shape, which is not served yet.",
                "parameter_missing",
            )
        meter_id = m.str("meter_id", required=True, max_len=255)
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
    if call.api_version >= "2025-09-30" and ("starts_at" in p.data or "ends_at" in p.data):
        raise StripeError(
            400,
            "This meterline release serves the seed shape of meter usage (start_time, end_time, "
            "meters[i][meter_id]); the 2025-09-30.preview shape is not available yet.",
            code="parameter_unknown",
            param="starts_at" if "starts_at" in p.data else "ends_at",
        )
    customer = p.str("customer", required=True, max_len=255)
    start = p.int("start_time", required=True)
    end = p.int("end_time", required=True)
    tz = p.str("timezone", max_len=64) or "UTC"
    window = p.enum("value_grouping_window", WINDOWS)
    queries = _meters(call)
    p.done()
    rows = svc.meter_usage(
        call.repo,
        customer,
        start,
        end,
        window,
        tz,
        queries,  # type: ignore[arg-type]
        param_names=SEED_PARAMS,
        meter_param="meters[{i}][meter_id]",
    )
    return {
        "object": "billing.analytics.meter_usage",
        "data_refreshed_at": clock.now(),  # raw events are read directly: nothing is pending
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


def register(router: Router) -> None:
    router.add("GET", "/v1/billing/analytics/meter_usage", meter_usage, offload=True)
