"""Stripe's error envelope: every failure that leaves the server is a StripeError."""

from __future__ import annotations

from typing import Any


class StripeError(Exception):
    """An error rendered as `{"error": {"type", "code", "message", "param"}}`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code is not None:
            err["code"] = self.code
            err["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        if self.param is not None:
            err["param"] = self.param
        return {"error": err}


def invalid(param: str | None, message: str, code: str | None = "parameter_invalid") -> StripeError:
    return StripeError(400, message, code=code, param=param)


def missing(param: str, message: str | None = None) -> StripeError:
    return StripeError(
        400, message or f"Missing required param: {param}.", code="parameter_missing", param=param
    )


def unknown(param: str, message: str | None = None) -> StripeError:
    return StripeError(
        400,
        message or f"Received unknown parameter: {param}",
        code="parameter_unknown",
        param=param,
    )


def exclusive(a: str, b: str) -> StripeError:
    return StripeError(
        400,
        f"You may only specify one of these parameters: {a}, {b}.",
        code="parameters_exclusive",
        param=b,
    )


def not_found(kind: str, id: str, param: str = "id") -> StripeError:
    return StripeError(404, f"No such {kind}: '{id}'", code="resource_missing", param=param)


def api_error(request_id: str) -> StripeError:
    return StripeError(
        500,
        "An unexpected error occurred on meterline's side; it has been logged with request id "
        f"{request_id}. Retrying may succeed; if it keeps failing, report that request id.",
        type="api_error",
    )
