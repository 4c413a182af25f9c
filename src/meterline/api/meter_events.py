"""Meter events and adjustments: /v1/billing/meter_events, /v2/billing/meter_events,
/v1/billing/meter_event_adjustments and /v2/billing/meter_event_adjustments; and the v2 stream:
/v2/billing/meter_event_session and /v2/billing/meter_event_stream."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any

from meterline.api import render
from meterline.api.app import Call
from meterline.api.routing import Router
from meterline.engine.metering import MAX_IDENTIFIER
from meterline.services import meter_event_stream as stream_svc
from meterline.services import meter_events as svc
from meterline.wire.errors import invalid, missing
from meterline.wire.params import Params


def _payload(p: Params) -> dict[str, str]:
    name = p.name("payload")
    raw = p.raw("payload")
    if raw is None or raw == "":
        raise invalid(name, f"Missing required param: {name}.", "parameter_missing")
    if not isinstance(raw, dict):
        raise invalid(name, f"{name} must be a hash of strings, e.g. {name}[value]=25.")
    out: dict[str, str] = {}
    for k, v in raw.items():
        if not isinstance(v, str):
            raise invalid(
                f"{name}[{k}]",
                f'{name}[{k}] must be a string (send numbers as strings, e.g. "25").',
            )
        out[k] = v
    return out


@lru_cache(maxsize=1024)
def _parse_rfc3339(raw: str) -> int | str:
    """Unix seconds, or why `raw` is not an RFC 3339 time (remembered: a stream request's events
    mostly carry the same few timestamps)."""
    try:
        dt = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return "use RFC 3339, e.g. 2026-11-25T17:00:00.000Z."
    if dt.tzinfo is None:
        return "it must carry a time zone (Z or +hh:mm)."
    return int(dt.timestamp())


def _rfc3339(raw: str, param: str) -> int:
    ts = _parse_rfc3339(raw)
    if isinstance(ts, str):
        raise invalid(param, f"Invalid timestamp {raw!r}: {ts}")
    return ts


def _input(p: Params, *, v2: bool) -> svc.EventInput:
    event_name = p.str("event_name", required=True, max_len=100)
    payload = _payload(p)
    identifier = p.str("identifier", max_len=MAX_IDENTIFIER)
    if v2:
        if isinstance(p.data.get("timestamp"), int | float) and not isinstance(
            p.data["timestamp"], bool
        ):
            raise invalid(
                p.name("timestamp"),
                f"Invalid timestamp {p.data['timestamp']!r}: the v2 API takes an RFC 3339 string, "
                "e.g. 2026-11-25T17:00:00.000Z (Unix seconds are for /v1/billing/meter_events).",
            )
        raw_ts = p.str("timestamp", max_len=64)
        ts = _rfc3339(raw_ts, p.name("timestamp")) if raw_ts is not None else None
    else:
        ts = p.int("timestamp")
    p.done()
    return svc.EventInput(event_name, payload, identifier, ts)  # type: ignore[arg-type]


def create_v1(call: Call) -> dict[str, Any]:
    return render.meter_event(svc.record(call.repo, _input(call.params, v2=False)))


def create_v2(call: Call) -> dict[str, Any]:
    return render.v2_meter_event(svc.record(call.repo, _input(call.params, v2=True)))


def _cancel_params(p: Params) -> tuple[str, str]:
    event_name = p.str("event_name", required=True, max_len=100)
    p.enum("type", ("cancel",), required=True)
    c = p.obj("cancel", required=True)
    identifier = c.str("identifier", required=True, max_len=MAX_IDENTIFIER)  # type: ignore[union-attr]
    p.done()
    return event_name, identifier  # type: ignore[return-value]


def adjust_v1(call: Call) -> dict[str, Any]:
    event_name, identifier = _cancel_params(call.params)
    svc.cancel(call.repo, event_name, identifier, param="cancel[identifier]")
    return {
        "object": "billing.meter_event_adjustment",
        "cancel": {"identifier": identifier},
        "event_name": event_name,
        "livemode": call.scope.livemode,
        "status": "complete",
        "type": "cancel",
    }


def adjust_v2(call: Call) -> dict[str, Any]:
    from meterline import clock
    from meterline.ids import new_id

    event_name, identifier = _cancel_params(call.params)
    svc.cancel(call.repo, event_name, identifier, param="cancel.identifier")
    return {
        "id": new_id("mtradj", 24),
        "object": "v2.billing.meter_event_adjustment",
        "cancel": {"identifier": identifier},
        "created": render.rfc3339(clock.now()),
        "event_name": event_name,
        "livemode": call.scope.livemode,
        "status": "complete",
        "type": "cancel",
    }


def create_session(call: Call) -> dict[str, Any]:
    call.params.done()
    row = stream_svc.create_session(call.repo)
    return {
        "id": row["id"],
        "object": "v2.billing.meter_event_session",
        "authentication_token": row["authentication_token"],
        "created": render.rfc3339(row["created"]),
        "expires_at": render.rfc3339(row["expires_at"]),
        "livemode": row["livemode"],
    }


def stream_events(data: dict[str, Any]) -> list[svc.EventInput]:
    """The stream request's shape (a 400 stores nothing): the route's `prepare`, run on the
    writer thread before the write batch's transaction."""
    p = Params(data)
    raw = p.raw("events")
    if raw is None:
        raise missing("events")
    if not isinstance(raw, list):
        raise invalid("events", "events must be an array of meter events.")
    if len(raw) > stream_svc.MAX_EVENTS:
        raise invalid(
            "events",
            f"A stream request takes at most {stream_svc.MAX_EVENTS} events (got {len(raw)}); "
            "send the rest in further requests.",
        )
    events = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise invalid(
                f"events[{i}]",
                f"events[{i}] must be an object with event_name, payload, and optionally "
                "identifier and timestamp.",
            )
        events.append(_input(Params(item, f"events[{i}]"), v2=True))
    return events


def stream(call: Call) -> dict[str, Any]:
    """The events' meaning is validated event by event, and the invalid ones go to error reports
    (Stripe validates the stream asynchronously, so the answer never depends on them)."""
    prepared = call.prepared
    if isinstance(prepared, stream_svc.Checked):
        events, checked = prepared.events, prepared
    else:
        events = prepared if prepared is not None else stream_events(call.params.data)
        checked = None
    call.params.raw("events")
    call.params.done()
    stream_svc.record_stream(call.repo, events, call.request_id, checked)
    return {}


def register(router: Router) -> None:
    router.add("POST", "/v1/billing/meter_events", create_v1, prefetch=svc.prefetch)
    router.add("POST", "/v2/billing/meter_events", create_v2, prefetch=svc.prefetch)
    router.add("POST", "/v1/billing/meter_event_adjustments", adjust_v1)
    router.add("POST", "/v2/billing/meter_event_adjustments", adjust_v2)
    # The response carries the token in clear: never stored for idempotent replay.
    router.add("POST", "/v2/billing/meter_event_session", create_session, idempotent=False)
    router.add(
        "POST",
        "/v2/billing/meter_event_stream",
        stream,
        auth="meter_event_session",
        prepare=stream_events,
        precheck=stream_svc.check_stream,
    )
