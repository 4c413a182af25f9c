"""Background threads (`services.Periodic`): a failed tick is logged and retried; a PostgreSQL
lock timeout (busy writers, not a failure) is logged in one line without a traceback."""

from __future__ import annotations

import logging
import threading

import psycopg.errors
import sqlalchemy as sa

from meterline.services import Periodic


class _Ticks(Periodic):
    thread_name = "meterline-test-periodic"
    what = "test work"
    logger = "meterline.test_periodic"

    def __init__(self, errors: list[Exception]) -> None:
        super().__init__(None, 0.01)  # type: ignore[arg-type]
        self.errors = errors
        self.done = threading.Event()

    def tick(self) -> None:
        if self.errors:
            raise self.errors.pop(0)
        self.done.set()


def test_a_lock_timeout_is_one_line_and_a_failure_keeps_its_traceback(caplog):
    busy = sa.exc.OperationalError(
        "SELECT pg_advisory_xact_lock(1)", {}, psycopg.errors.LockNotAvailable()
    )
    ticks = _Ticks([busy, RuntimeError("boom")])
    with caplog.at_level(logging.INFO, logger="meterline.test_periodic"):
        ticks.start()
        try:
            assert ticks.done.wait(5), "the ticks after the failures did not run"
        finally:
            ticks.stop()
    records = [r for r in caplog.records if r.name == "meterline.test_periodic"]
    assert [(r.levelno, r.exc_info is not None) for r in records] == [
        (logging.INFO, False),
        (logging.ERROR, True),
    ]
    assert "waited too long for a lock" in records[0].getMessage()
    assert "test work failed" in records[1].getMessage()
