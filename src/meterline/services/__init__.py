"""Use cases: each function runs inside one request's transaction (a `Repo`), loads, applies the
engine's rules, and stores. The only place where business steps are sequenced. Background work
(`rollups.Builder`, `meter_event_stream.Drainer`, `due_work.Jobs`) also lives here and runs its
own transactions; `Periodic` is the thread the first two tick on.

Always true: a service raises `ServiceError` (or the engine's `RuleViolation`) before it writes
anything it would have to undo, and the caller's transaction makes a failure change nothing.
May import: engine, store, clock, ids.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from meterline.store.db import Database, is_lock_busy
from meterline.store.repo import Repo, Scope


class ServiceError(Exception):
    """A request that the current state refuses (not found, in use, conflict)."""

    def __init__(
        self, status: int, message: str, *, code: str | None = None, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param


def not_found(kind: str, id: str, param: str = "id") -> ServiceError:
    return ServiceError(404, f"No such {kind}: '{id}'", code="resource_missing", param=param)


@contextmanager
def unit(db: Database, scope: Scope, *, write: bool) -> Iterator[Repo]:
    """One transaction for one request: committed on success, rolled back on any exception."""
    with db.write() if write else db.read() as conn:
        yield Repo(conn, scope)


def created_where(column: Any, ranges: Sequence[tuple[str, int]]) -> list[Any]:
    """Conditions on a timestamp column for a list's range filter (`wire.lists.read_created`:
    ("eq" | "gt" | "gte" | "lt" | "lte", seconds) pairs)."""
    ops = {
        "eq": lambda v: column == v,
        "gt": lambda v: column > v,
        "gte": lambda v: column >= v,
        "lt": lambda v: column < v,
        "lte": lambda v: column <= v,
    }
    return [ops[op](v) for op, v in ranges]


class Periodic:
    """Calls `tick` every `interval` seconds on a daemon thread of its own (one per server
    worker) until `stop`. A tick that raises is logged and the next one tries again: background
    work here runs in its own transactions, so a failed tick has changed nothing. A PostgreSQL
    lock timeout (writers kept the lock longer than the tick would wait) is logged in one line
    at INFO: it is contention, not a failure."""

    thread_name = "meterline-periodic"
    what = "background work"  # for the log line of a failed tick
    logger = "meterline.background"

    def __init__(self, db: Database, interval: float) -> None:
        self.db = db
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def tick(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception as exc:
                if is_lock_busy(exc):  # busy writers (a PostgreSQL lock_timeout): no traceback
                    logging.getLogger(self.logger).info(
                        "%s waited too long for a lock; retrying in %.1f s",
                        self.what,
                        self.interval,
                    )
                    continue
                logging.getLogger(self.logger).exception(
                    "%s failed; retrying in %.1f s", self.what, self.interval
                )
