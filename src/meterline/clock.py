"""The one source of "now" for meterline.

Every rule that depends on the current time asks this module. Real time is Unix seconds in UTC.
Test clocks (a later resource) will supply a frozen time per customer through `Clock.for_test_clock`;
until then the system clock is the only clock. Tests may replace the process clock with `set_clock`.
Imports nothing of ours.
"""

from __future__ import annotations

import time


class Clock:
    """Wall-clock time in whole Unix seconds, UTC."""

    def now(self) -> int:
        return int(time.time())


class FixedClock(Clock):
    """A clock that stays where it is put: for tests and simulations."""

    def __init__(self, at: int) -> None:
        self.at = at

    def now(self) -> int:
        return self.at


_clock: Clock = Clock()


def now() -> int:
    return _clock.now()


def set_clock(clock: Clock) -> None:
    global _clock
    _clock = clock
