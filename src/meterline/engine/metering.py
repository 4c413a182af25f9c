"""The rules of meters and meter events, as pure functions.

Values are exact decimals with at most 15 significant digits; timestamps must lie within the
past 35 days and at most 5 minutes ahead of the clock the caller passes in.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from meterline.engine.errors import RuleViolation

FORMULAS = ("count", "last", "sum")
EVENT_TIME_WINDOWS = ("day", "hour")
MAX_SIGNIFICANT_DIGITS = 15
PAST_WINDOW = 35 * 24 * 3600
FUTURE_WINDOW = 5 * 60
MAX_DIMENSION_KEYS = 10
MAX_IDENTIFIER = 100
CANCEL_WINDOW = 24 * 3600

_NUMBER = re.compile(r"\A[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,3})?\Z")


def parse_value(raw: object, param: str) -> Decimal:
    """A meter event value: a decimal number (negatives allowed), at most 15 significant digits."""
    if not isinstance(raw, str) or not _NUMBER.match(raw.strip()):
        raise RuleViolation(
            param,
            f'The value of {param} must be a number written as a string, such as "25" or "0.5" (got {raw!r}).',
            "meter_event_invalid_value",
        )
    try:
        value = Decimal(raw.strip())
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid literals
        raise RuleViolation(
            param, f"Invalid number {raw!r} in {param}.", "meter_event_invalid_value"
        ) from None
    digits = value.normalize().as_tuple().digits if value != 0 else (0,)
    if len(digits) > MAX_SIGNIFICANT_DIGITS:
        raise RuleViolation(
            param,
            f"The value of {param} has {len(digits)} significant digits; at most {MAX_SIGNIFICANT_DIGITS} are allowed.",
            "meter_event_value_too_many_digits",
        )
    return value


def check_timestamp(ts: int, now: int, param: str = "timestamp") -> None:
    if ts < now - PAST_WINDOW:
        raise RuleViolation(
            param,
            f"The event timestamp {ts} is more than 35 days in the past (the earliest accepted now is {now - PAST_WINDOW}).",
            "timestamp_too_far_in_past",
        )
    if ts > now + FUTURE_WINDOW:
        raise RuleViolation(
            param,
            f"The event timestamp {ts} is more than 5 minutes in the future (the latest accepted now is {now + FUTURE_WINDOW}).",
            "timestamp_in_future",
        )


def window_start(ts: int, event_time_window: str) -> int:
    """The UTC hour or day an event of a pre-aggregated meter belongs to."""
    size = 3600 if event_time_window == "hour" else 86400
    return ts - ts % size
