"""Small helpers the SDK-driven API tests share."""

from __future__ import annotations

import secrets

import pytest
import stripe

from openapi_check import assert_error

INF_TIERS = [{"up_to": 1000, "unit_amount": 10}, {"up_to": "inf", "unit_amount": 5}]


def uid(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(6)}"


def refused(
    call, status: int, code: str, param: str | None, type_: str = "invalid_request_error"
) -> dict:
    """Run call(); expect the SDK to raise for `status` with a valid error envelope."""
    with pytest.raises(stripe.StripeError) as ei:
        call()
    e = ei.value
    assert e.http_status == status, e.json_body
    assert_error(e.json_body, type_, code, param)
    return e.json_body["error"]


def as_dict(obj) -> dict:
    """The SDK hydrates *_decimal strings into Decimal; for_json=True gives back the strings that
    came over the wire (a number sent by the server would stay a number and fail the schema)."""
    return obj._to_dict_recursive(for_json=True)


def advance(client: stripe.StripeClient, clock_id: str, frozen_time: int, timeout: float = 60):
    """Advance a test clock as a Stripe integration does: ask, then poll until it is `ready`
    (the advance runs in the background). Returns the ready clock."""
    import time

    started = client.v1.test_helpers.test_clocks.advance(clock_id, {"frozen_time": frozen_time})
    assert started.status in ("advancing", "ready"), started
    deadline = time.monotonic() + timeout
    while True:
        clock = client.v1.test_helpers.test_clocks.retrieve(clock_id)
        if clock.status != "advancing":
            assert clock.status == "ready", clock
            assert clock.frozen_time == frozen_time, clock
            return clock
        assert time.monotonic() < deadline, f"{clock_id} still advancing after {timeout} s"
        time.sleep(0.01)
