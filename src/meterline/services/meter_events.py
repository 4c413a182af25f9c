"""Meter events: validated, de-duplicated by identifier, stored raw; and their cancellation.

Always true: an identifier is stored at most once per account and mode (the table's unique key,
reached with insert-if-absent, so two workers racing with one identifier store it once); a
stored event has an active meter, an existing customer of the account, a value of at most 15
significant digits and a timestamp inside the window of the moment it was received.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy.engine import Connection

from meterline import clock
from meterline.engine import metering
from meterline.engine.errors import RuleViolation
from meterline.ids import random_token
from meterline.services import ServiceError, test_clocks
from meterline.services import meters as meters_service
from meterline.store import inbox
from meterline.store import rollups as rollup_store
from meterline.store.db import BATCH_MEMOS, TRANSACTION_MEMOS
from meterline.store.repo import Repo, Scope
from meterline.store.tables import customers, meter_events


@dataclass(frozen=True)
class EventInput:
    event_name: str
    payload: dict[str, str]
    identifier: str | None
    timestamp: int | None


_CUSTOMER = ("deleted", "test_clock")  # what validation reads of a customer


class _Found:
    """Per process (SQLite): the meters and customers that validation found, in read
    transactions of one database, since its validation epoch last moved. Always true: every
    entry was read after the epoch read `epoch`, so while the epoch still reads `epoch` no
    update or delete has touched it (inserts do not move the epoch, which is why only rows that
    exist are kept: a row created since could turn a refusal into an acceptance)."""

    MAX_CUSTOMERS = 100_000

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.engine: Any = None
        self.epoch: int | None = None
        self.meters: dict[tuple[str, bool, str], dict[str, Any]] = {}
        self.customers: dict[tuple[str, bool, str], dict[str, Any]] = {}

    def at(self, repo: Repo, epoch: int) -> tuple[dict, dict]:
        """(meters, customers) valid at `epoch` in `repo`'s database (empty when it moved)."""
        with self.lock:
            engine = repo.conn.engine
            if self.engine is not engine or self.epoch != epoch:
                self.engine, self.epoch = engine, epoch
                self.meters, self.customers = {}, {}
            elif len(self.customers) > self.MAX_CUSTOMERS:
                self.customers = {}
            return self.meters, self.customers


_FOUND = _Found()


class Lookups:
    """Meters by event name and customers by id, each read once for a request that records many
    events (the stream); they do not change within the request's transaction. Read in another
    transaction (the stream validates before its write transaction), `unchanged` tells whether
    everything validation read is still the same there. With `shared` (only for lookups in a
    read transaction, never in a write transaction whose changes may roll back), rows found
    are shared with later requests of this process through `_Found` while the validation
    epoch stays (SQLite)."""

    def __init__(self, *, shared: bool = False) -> None:
        self.epoch: int | None = None  # SQLite: the validation epoch read before everything else
        self.meters: dict[str, dict[str, Any] | None] = {}
        self.customers: dict[str, dict[str, Any] | None] = {}
        self.clocks: dict[str, int] = {}  # test clock id -> frozen time
        self.shared = shared
        self._found: tuple[dict, dict] | None = None  # _Found's (meters, customers) at epoch

    def meter(self, repo: Repo, event_name: str) -> dict[str, Any] | None:
        if event_name not in self.meters:
            if self._found is not None:
                key = (repo.scope.account_id, repo.scope.livemode, event_name)
                row = self._found[0].get(key)
                if row is None:
                    row = meters_service.by_event_name(repo, event_name)
                    if row is not None:
                        self._found[0][key] = row
                self.meters[event_name] = row
            else:
                self.meters[event_name] = meters_service.by_event_name(repo, event_name)
        return self.meters[event_name]

    def customer(self, repo: Repo, customer_id: str) -> dict[str, Any] | None:
        if customer_id not in self.customers:
            self._read_customers(repo, {customer_id})
        return self.customers[customer_id]

    def prefetch_customers(self, repo: Repo, events: list[EventInput]) -> None:
        """Read every customer these events name in one statement (what validation needs of
        them: whether deleted, and the test clock whose time they live at)."""
        wanted: set[str] = set()
        for ev in events:
            meter = self.meter(repo, ev.event_name)
            if meter is not None:
                cid = ev.payload.get(meter["customer_key"])
                if cid and cid not in self.customers:
                    wanted.add(cid)
        if wanted:
            self._read_customers(repo, wanted)

    def _read_customers(self, repo: Repo, wanted: set[str]) -> None:
        scope = (repo.scope.account_id, repo.scope.livemode)
        if self._found is not None:
            shared = self._found[1]
            for cid in list(wanted):
                row = shared.get((*scope, cid))
                if row is not None:
                    self.customers[cid] = row
                    wanted.discard(cid)
            if not wanted:
                return
        found = repo.get_many(customers, sorted(wanted), _CUSTOMER)
        for cid in wanted:
            row = found.get(cid)
            self.customers[cid] = row
            if row is not None and self._found is not None:
                self._found[1][(*scope, cid)] = row

    def read_epoch(self, repo: Repo) -> None:
        """Remember the validation epoch; call it before the first lookup (SQLite; see
        `store.tables.change_epochs`)."""
        self.epoch = repo.validation_epoch()
        if self.shared and self.epoch is not None:
            self._found = _FOUND.at(repo, self.epoch)

    def unchanged(self, repo: Repo) -> bool:
        """Whether the meters, customers and test clock times read so far read the same in
        `repo`'s transaction (then validation there would give the same outcome). On SQLite an
        unmoved validation epoch says so in one read: no customer, meter or test clock has
        been updated or deleted since it was read. Inserts do not move it, so that answer only
        holds when validation found every customer and meter it looked for (a row created
        since could turn its refusal into an acceptance); otherwise everything is read again."""
        if (
            self.epoch is not None
            and None not in self.customers.values()
            and None not in self.meters.values()
            and repo.validation_epoch() == self.epoch
        ):
            return True
        for name, meter in self.meters.items():
            if meters_service.by_event_name(repo, name) != meter:
                return False
        if self.customers:
            now = repo.get_many(customers, sorted(self.customers), _CUSTOMER)
            if any(now.get(cid) != row for cid, row in self.customers.items()):
                return False
        for cid, frozen in self.clocks.items():
            if test_clocks.frozen_time(repo, cid) != frozen:
                return False
        return True


# conn.info: (transaction, {scope: Lookups}): the meters and customers a write batch's event
# requests name, read by `prefetch` before they run, one statement per account and mode for the
# customers (forgotten before a request of another kind runs, see store.db.BATCH_MEMOS).
PREFETCHED = "meterline_event_lookups"
TRANSACTION_MEMOS.add(PREFETCHED)
BATCH_MEMOS.add(PREFETCHED)


def prefetch(conn: Connection, requests: list[tuple[Scope, dict[str, Any]]]) -> None:
    """Read the meters and customers that a write batch's event requests name (their decoded,
    unvalidated bodies), for `record` to validate them with. What is not a string is left out:
    validation refuses it, or reads what it needs alone."""
    events: dict[Scope, list[EventInput]] = {}
    for scope, data in requests:
        name, payload = data.get("event_name"), data.get("payload")
        if isinstance(name, str) and isinstance(payload, dict):
            strings = {k: v for k, v in payload.items() if isinstance(v, str)}
            events.setdefault(scope, []).append(EventInput(name, strings, None, None))
    held: dict[Scope, Lookups] = {}
    for scope, evs in events.items():
        held[scope] = Lookups()
        held[scope].prefetch_customers(Repo(conn, scope), evs)
    conn.info[PREFETCHED] = (conn.get_transaction(), held)


def _prefetched(repo: Repo) -> Lookups | None:
    held = repo.conn.info.get(PREFETCHED)
    if held is None or held[0] is not repo.conn.get_transaction():
        return None
    return held[1].get(repo.scope)


def validate(
    repo: Repo, ev: EventInput, *, param_prefix: str = "", lookups: Lookups | None = None
) -> dict[str, Any]:
    """The row one event would be stored as; raises ServiceError/RuleViolation with Stripe's
    meter event error codes (a duplicate identifier is found when the row is inserted)."""
    p = param_prefix
    meter = (
        lookups.meter(repo, ev.event_name)
        if lookups is not None
        else meters_service.by_event_name(repo, ev.event_name)
    )
    if meter is None:
        raise ServiceError(
            400,
            f"No active meter was found for the event_name {ev.event_name!r}. Create a meter with that "
            "event_name first (POST /v1/billing/meters).",
            code="no_meter",
            param=f"{p}event_name",
        )
    if meter["status"] != "active":
        raise ServiceError(
            400,
            f"The meter {meter['id']} for event_name {ev.event_name!r} is inactive and accepts no events.",
            code="archived_meter",
            param=f"{p}event_name",
        )
    ckey = meter["customer_key"]
    customer_id = ev.payload.get(ckey)
    if not customer_id:
        raise ServiceError(
            400,
            f"The payload has no {ckey!r} key naming the customer (the meter's customer_mapping.event_payload_key).",
            code="meter_event_no_customer_defined",
            param=f"{p}payload[{ckey}]",
        )
    cust = (
        lookups.customer(repo, customer_id)
        if lookups is not None
        else repo.get(customers, customer_id)
    )
    if cust is None or cust["deleted"]:
        raise ServiceError(
            400,
            f"No customer {customer_id!r} exists in this account (payload[{ckey}]).",
            code="meter_event_customer_not_found",
            param=f"{p}payload[{ckey}]",
        )
    vkey = meter["value_key"]
    raw_value = ev.payload.get(vkey)
    if raw_value is None and meter["formula"] == "count":
        value = Decimal(1)
    elif raw_value is None:
        raise ServiceError(
            400,
            f"The payload has no {vkey!r} key with the event's value (the meter's value_settings.event_payload_key).",
            code="meter_event_invalid_value",
            param=f"{p}payload[{vkey}]",
        )
    else:
        value = metering.parse_value(raw_value, f"{p}payload[{vkey}]")
    dims = meter["dimension_payload_keys"] or []
    missing = [k for k in dims if not ev.payload.get(k)]
    if missing:
        raise ServiceError(
            400,
            f"The payload lacks the meter's dimension keys: {', '.join(missing)}.",
            code="missing_dimension_payload_keys",
            param=f"{p}payload[{missing[0]}]",
        )
    extra = [k for k in ev.payload if k not in (ckey, vkey)]
    if len(extra) > metering.MAX_DIMENSION_KEYS:
        raise ServiceError(
            400,
            f"The payload has {len(extra)} keys besides the customer and the value; at most "
            f"{metering.MAX_DIMENSION_KEYS} are allowed.",
            code="meter_event_dimension_count_too_high",
            param=f"{p}payload",
        )
    # A customer on a test clock lives at the clock's time: the window and the default follow it.
    now = test_clocks.customer_now(repo, cust, lookups.clocks if lookups is not None else None)
    ts = now if ev.timestamp is None else ev.timestamp
    metering.check_timestamp(ts, now, f"{p}timestamp")
    identifier = ev.identifier or f"mev_{random_token(24)}"
    return dict(
        id=identifier,
        created=now,
        meter=meter["id"],
        customer=customer_id,
        event_name=ev.event_name,
        timestamp=ts,
        value=value,
        payload=ev.payload,
        cancelled_at=None,
    )


def duplicate(identifier: str, param: str) -> ServiceError:
    return ServiceError(
        400,
        f"An event with identifier {identifier!r} was already received; it is counted once. "
        "Use a new identifier for a new event.",
        code="resource_already_exists",
        param=param,
    )


def _ingest_lock(repo: Repo) -> None:
    if not repo.ingest_locked:
        rollup_store.hold_ingest_lock(repo.conn)
        repo.ingest_locked = True


def record(
    repo: Repo, ev: EventInput, *, param_prefix: str = "", lookups: Lookups | None = None
) -> dict[str, Any]:
    """Validate and store one event; returns the stored row. Raises before writing anything
    (a duplicate identifier is found by insert-if-absent, which writes nothing). Without
    `lookups`, those its write batch's `prefetch` read are used."""
    if lookups is None:
        lookups = _prefetched(repo)
    row = validate(repo, ev, param_prefix=param_prefix, lookups=lookups)
    _ingest_lock(repo)
    if not repo.insert_unless_exists(meter_events, row):
        raise duplicate(row["id"], f"{param_prefix}identifier")
    return {**row, "account_id": repo.scope.account_id, "livemode": repo.scope.livemode}


def record_many(
    repo: Repo, rows: list[dict[str, Any]], *, encoded: list[list[Any]] | None = None
) -> int | None:
    """Store validated rows of distinct identifiers, each unless its identifier is stored
    already (`encoded`: the rows as `Repo.encode_rows` gave them). Inside a write batch
    (`store.repo.deferred_inserts`) the rows join those of the batch's other requests in one
    statement before the commit, and None is returned; otherwise they are inserted at once and
    the number stored is returned."""
    if not rows:
        return 0
    _ingest_lock(repo)
    return repo.add_unless_exists(meter_events, rows, order="customer", encoded=encoded)


def cancel(repo: Repo, event_name: str, identifier: str, *, param: str) -> dict[str, Any]:
    """Cancel one event by identifier, within 24 hours of its receipt (an event the stream
    accepted and that still waits in its inbox is moved into `meter_events` first)."""
    row = repo.get(meter_events, identifier)
    if row is None and inbox.move_all(repo.conn):
        row = repo.get(meter_events, identifier)
    if row is None or row["event_name"] != event_name:
        raise ServiceError(
            404,
            f"No meter event with identifier {identifier!r} and event_name {event_name!r} exists.",
            code="resource_missing",
            param=param,
        )
    cust = repo.get(customers, row["customer"])
    now = test_clocks.customer_now(repo, cust) if cust is not None else clock.now()
    if row["cancelled_at"] is not None:
        raise ServiceError(
            400,
            f"The event {identifier!r} is already cancelled.",
            code="parameter_invalid",
            param=param,
        )
    if now - row["created"] > metering.CANCEL_WINDOW:
        raise ServiceError(
            400,
            f"The event {identifier!r} was received more than 24 hours ago and can no longer be cancelled.",
            code="parameter_invalid",
            param=param,
        )
    repo.update(meter_events, identifier, {"cancelled_at": now})
    meter = meters_service.get(repo, row["meter"])
    if not meter["event_time_window"]:
        # The rollup cells holding it are recomputed by the builder; queries read them raw
        # until then.
        rollup_store.queue_cancel(repo, row["customer"], row["meter"], row["timestamp"], row["seq"])
    return row


__all__ = [
    "EventInput",
    "Lookups",
    "RuleViolation",
    "cancel",
    "prefetch",
    "record",
    "record_many",
    "validate",
]
