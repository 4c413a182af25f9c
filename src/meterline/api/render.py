"""Stored rows to Stripe objects. Every field of the schema is rendered, `null` when absent."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy.engine import RowMapping


def _dec(v: Any) -> str | None:
    if v is None:
        return None
    d = Decimal(v)
    # Stripe writes decimals without exponent and without trailing zeros beyond the value
    s = format(d.normalize(), "f") if d != d.to_integral() else str(int(d))
    return s


def customer(row: RowMapping) -> dict[str, Any]:
    if row["deleted"]:
        return deleted(row["id"], "customer")
    return {
        "id": row["id"],
        "object": "customer",
        "address": _address(row["address"]),
        "balance": 0,
        "business_name": None,
        "created": row["created"],
        "currency": None,
        "customer_account": None,
        "default_source": None,
        "delinquent": False,
        "description": row["description"],
        "discount": None,
        "email": row["email"],
        "individual_name": None,
        "invoice_prefix": row["invoice_prefix"],
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": None,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": row["livemode"],
        "metadata": row["metadata"] or {},
        "name": row["name"],
        "next_invoice_sequence": 1,
        "phone": row["phone"],
        "preferred_locales": row["preferred_locales"] or [],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": row["test_clock"],
    }


def _address(a: dict[str, Any] | None) -> dict[str, Any] | None:
    if a is None:
        return None
    return {k: a.get(k) for k in ("city", "country", "line1", "line2", "postal_code", "state")}


def product(row: RowMapping) -> dict[str, Any]:
    if row["deleted"]:
        return deleted(row["id"], "product")
    return {
        "id": row["id"],
        "object": "product",
        "active": row["active"],
        "created": row["created"],
        "default_price": row["default_price"],
        "description": row["description"],
        "images": row["images"] or [],
        "livemode": row["livemode"],
        "marketing_features": [],
        "metadata": row["metadata"] or {},
        "name": row["name"],
        "package_dimensions": None,
        "shippable": row["shippable"],
        "statement_descriptor": row["statement_descriptor"],
        "tax_code": None,
        "tax_details": None,
        "type": "service",
        "unit_label": row["unit_label"],
        "updated": row["updated"],
        "url": row["url"],
    }


def _tiers(row: RowMapping) -> list[dict[str, Any]] | None:
    if row["tiers"] is None:
        return None
    out = []
    for t in row["tiers"]:
        out.append(
            {
                "flat_amount": t.get("flat_amount"),
                "flat_amount_decimal": _dec(
                    t.get("flat_amount_decimal")
                    if t.get("flat_amount_decimal") is not None
                    else t.get("flat_amount")
                ),
                "unit_amount": t.get("unit_amount"),
                "unit_amount_decimal": _dec(
                    t.get("unit_amount_decimal")
                    if t.get("unit_amount_decimal") is not None
                    else t.get("unit_amount")
                ),
                "up_to": t.get("up_to"),
            }
        )
    return out


def _unit_amounts(row: RowMapping) -> tuple[int | None, str | None]:
    """Stripe fills both: `unit_amount` when the decimal is whole, `unit_amount_decimal` always."""
    if row["billing_scheme"] == "tiered":
        return None, None
    if row["unit_amount"] is not None:
        return row["unit_amount"], _dec(row["unit_amount"])
    d = row["unit_amount_decimal"]
    whole = int(d) if d is not None and d == d.to_integral() else None
    return whole, _dec(d)


def _transform(row: RowMapping) -> dict[str, Any] | None:
    if row["transform_divide_by"] is None:
        return None
    return {"divide_by": row["transform_divide_by"], "round": row["transform_round"]}


def price(row: RowMapping, *, include_tiers: bool = False) -> dict[str, Any]:
    if row["deleted"]:
        return deleted(row["id"], "price")
    unit_amount, unit_amount_decimal = _unit_amounts(row)
    recurring = None
    if row["type"] == "recurring":
        recurring = {
            "interval": row["interval"],
            "interval_count": row["interval_count"],
            "meter": row["meter"],
            "trial_period_days": row["trial_period_days"],
            "usage_type": row["usage_type"],
        }
    out = {
        "id": row["id"],
        "object": "price",
        "active": row["active"],
        "billing_scheme": row["billing_scheme"],
        "created": row["created"],
        "currency": row["currency"],
        "custom_unit_amount": None,
        "livemode": row["livemode"],
        "lookup_key": row["lookup_key"],
        "metadata": row["metadata"] or {},
        "nickname": row["nickname"],
        "product": row["product"],
        "recurring": recurring,
        "tax_behavior": row["tax_behavior"],
        "tiers_mode": row["tiers_mode"],
        "transform_quantity": _transform(row),
        "type": row["type"],
        "unit_amount": unit_amount,
        "unit_amount_decimal": unit_amount_decimal,
    }
    if include_tiers:
        out["tiers"] = _tiers(row)
    return out


def plan(row: RowMapping) -> dict[str, Any]:
    if row["deleted"]:
        return deleted(row["id"], "plan")
    amount, amount_decimal = _unit_amounts(row)
    return {
        "id": row["id"],
        "object": "plan",
        "active": row["active"],
        "amount": amount,
        "amount_decimal": amount_decimal,
        "billing_scheme": row["billing_scheme"],
        "created": row["created"],
        "currency": row["currency"],
        "interval": row["interval"],
        "interval_count": row["interval_count"],
        "livemode": row["livemode"],
        "metadata": row["metadata"] or {},
        "meter": row["meter"],
        "nickname": row["nickname"],
        "product": row["product"],
        "tiers": _tiers(row),
        "tiers_mode": row["tiers_mode"],
        "transform_usage": _transform(row),
        "trial_period_days": row["trial_period_days"],
        "usage_type": row["usage_type"],
    }


def deleted(id: str, object: str) -> dict[str, Any]:
    return {"id": id, "object": object, "deleted": True}


def meter(row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "billing.meter",
        "created": row["created"],
        "customer_mapping": {"event_payload_key": row["customer_key"], "type": "by_id"},
        "default_aggregation": {"formula": row["formula"]},
        "dimension_payload_keys": list(row["dimension_payload_keys"] or []),
        "display_name": row["display_name"],
        "event_name": row["event_name"],
        "event_time_window": row["event_time_window"],
        "livemode": row["livemode"],
        "status": row["status"],
        "status_transitions": {"deactivated_at": row["deactivated_at"]},
        "updated": row["updated"],
        "value_settings": {"event_payload_key": row["value_key"]},
    }


def meter_event(row) -> dict[str, Any]:
    return {
        "object": "billing.meter_event",
        "created": row["created"],
        "event_name": row["event_name"],
        "identifier": row["id"],
        "livemode": row["livemode"],
        "payload": row["payload"],
        "timestamp": row["timestamp"],
    }


def rfc3339(ts: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def v2_meter_event(row) -> dict[str, Any]:
    return {
        "object": "v2.billing.meter_event",
        "created": rfc3339(row["created"]),
        "event_name": row["event_name"],
        "identifier": row["id"],
        "livemode": row["livemode"],
        "payload": row["payload"],
        "timestamp": rfc3339(row["timestamp"]),
    }
