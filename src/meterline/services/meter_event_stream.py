"""The v2 meter event stream: sessions with their authentication tokens, and the events of a
stream request, whose validation failures go to error reports instead of failing the request.

A stream request's valid events are appended to the landing log (`meter_event_inbox`) when the
request commits, and the `Drainer` thread of every worker moves them into `meter_events` in bulk
within a couple of seconds (`store.inbox.move`); work that must see every event received so far
moves what is pending first (`store.inbox.move_all`: cancels, billing runs, test clock advances).

Always true: a token is stored only as its SHA-256 digest (it carries 285 bits of randomness, so
a digest cannot be reversed by guessing); a stream request stores exactly its valid events (an
identifier at most once, as everywhere: a duplicate is dropped when it is moved) and writes, for
each meter its invalid events name (none for events naming no meter), one error report with the
count per error code and up to 5 sample errors per code; an event acknowledged by a 200 is in
the inbox or in `meter_events`, never lost.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from meterline import clock
from meterline.engine.errors import RuleViolation
from meterline.ids import new_id, random_token
from meterline.services import Periodic, ServiceError
from meterline.services.meter_events import EventInput, Lookups, validate
from meterline.store import inbox
from meterline.store.db import Database
from meterline.store.repo import Repo
from meterline.store.tables import (
    meter_event_error_reports,
    meter_event_inbox,
    meter_event_sessions,
)

SESSION_TTL = 15 * 60
TOKEN_PREFIX = "mes_token_"
MAX_EVENTS = 100
MAX_SAMPLES = 5
YIELD = 0.01  # seconds a drain waits between moves, so queued writers get the write lock


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_session(repo: Repo) -> dict[str, Any]:
    """A new session valid 15 minutes; the returned row alone holds the token in clear."""
    now = clock.now()
    token = TOKEN_PREFIX + random_token(48)
    row = repo.insert(
        meter_event_sessions,
        {
            "id": new_id("mes", 24),
            "created": now,
            "token_hash": token_digest(token),
            "expires_at": now + SESSION_TTL,
        },
    )
    return {**row, "authentication_token": token}


@dataclass(frozen=True)
class Session:
    account_id: str
    livemode: bool
    expires_at: int


def find_session(db: Database, token: str) -> Session | None:
    """The session a token belongs to, expired or not (the caller tells the two apart)."""
    t = meter_event_sessions
    with db.read() as conn:
        row = conn.execute(
            sa.select(t.c.account_id, t.c.livemode, t.c.expires_at).where(
                t.c.token_hash == token_digest(token)
            )
        ).first()
    return Session(row[0], bool(row[1]), row[2]) if row is not None else None


@dataclass
class _Report:
    counts: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, code: str, message: str, identifier: str | None) -> None:
        self.counts[code] = self.counts.get(code, 0) + 1
        samples = self.samples.setdefault(code, [])
        if len(samples) < MAX_SAMPLES:
            samples.append({"error_message": message, "identifier": identifier})


@dataclass(frozen=True)
class StreamResult:
    accepted: int  # valid events of distinct identifiers, appended to the inbox
    errors: int
    reports: list[dict[str, Any]]


@dataclass
class Checked:
    """A stream request's events validated in some transaction: the rows of the valid ones
    (distinct identifiers, and encoded for the insert), the error reports of the others, and
    what validation read (to tell whether it still holds in another transaction)."""

    events: list[EventInput]
    rows: list[dict[str, Any]]
    encoded: list[list[Any]]
    reports: dict[str | None, _Report]
    errors: int
    start: int
    end: int
    lookups: Lookups


def check_stream(repo: Repo, events: list[EventInput], *, shared: bool = True) -> Checked:
    """Validate each event as `meter_events.record` does; an event it refuses is left out and
    counted in its meter's error report. A duplicate identifier within the request keeps its
    first event. Reads only: the stream runs it before its write transaction, in a read
    transaction (`shared`: the meters and customers it finds may be shared with later requests,
    see `meter_events.Lookups`), where `record_stream` then stores the outcome if what it read
    has not changed."""
    start = clock.now()
    lookups = Lookups(shared=shared)
    lookups.read_epoch(repo)
    lookups.prefetch_customers(repo, events)
    reports: dict[str | None, _Report] = {}
    errors = 0
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for ev in events:
        try:
            row = validate(repo, ev, lookups=lookups)
        except (ServiceError, RuleViolation) as exc:
            errors += 1
            meter = lookups.meters.get(ev.event_name)
            report = reports.setdefault(meter["id"] if meter is not None else None, _Report())
            report.add(exc.code or "invalid", exc.message, ev.identifier)
            continue
        if row["id"] in seen:
            continue  # the first event of the request with this identifier is the one
        seen.add(row["id"])
        rows.append(row)
    encoded = repo.encode_rows(meter_event_inbox, rows)
    return Checked(events, rows, encoded, reports, errors, start, clock.now(), lookups)


def record_stream(
    repo: Repo, events: list[EventInput], request_id: str, checked: Checked | None = None
) -> StreamResult:
    """Append the valid events of a stream request to the inbox and write one error report per
    meter its invalid events name. A duplicate identifier (also within the request) is stored
    once and reported as nothing: retrying a stream request is how clients recover. `checked`:
    the events validated before this transaction (`check_stream`), used when what that
    validation read reads the same here; otherwise they are validated again here. Inside a
    write batch the events are appended with those of the batch's other stream requests, in
    one statement before the batch commits."""
    if checked is None or not checked.lookups.unchanged(repo):
        checked = check_stream(repo, events, shared=False)
    if checked.rows:
        repo.add_unless_exists(meter_event_inbox, checked.rows, encoded=checked.encoded)
    rows = [
        repo.insert(
            meter_event_error_reports,
            {
                "id": new_id("mtrerr", 24),
                "created": checked.end,
                "meter": meter_id,
                "request_id": request_id,
                "counts": report.counts,
                "samples": report.samples,
                "validation_start": checked.start,
                "validation_end": checked.end,
            },
        )
        for meter_id, report in checked.reports.items()
    ]
    return StreamResult(len(checked.rows), checked.errors, rows)


def drain(db: Database) -> int:
    """Move every event pending in the inbox into `meter_events`, CHUNK events per transaction.
    Returns the events moved (0 at once on PostgreSQL while another worker moves)."""
    total = 0
    while True:
        with db.write() as conn:
            taken, _ = inbox.move(conn)
        total += taken
        if taken < inbox.CHUNK:
            return total
        time.sleep(YIELD)


class Drainer(Periodic):
    """Moves the inbox into `meter_events` on a thread of its own (one per server worker):
    looks every `interval` seconds and drains what it finds. The interval lets a busy stream's
    events gather, so that each move writes many events per index page."""

    thread_name = "meterline-drain"
    what = "moving stream events"
    logger = "meterline.stream"

    def __init__(self, db: Database, interval: float = 2.0) -> None:
        super().__init__(db, interval)

    def tick(self) -> None:
        with self.db.read() as conn:
            if not inbox.pending(conn):
                return
        drain(self.db)


__all__ = [
    "MAX_EVENTS",
    "SESSION_TTL",
    "TOKEN_PREFIX",
    "Checked",
    "Drainer",
    "Session",
    "StreamResult",
    "check_stream",
    "create_session",
    "drain",
    "find_session",
    "record_stream",
    "token_digest",
]
