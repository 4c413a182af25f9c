"""Backfilling meter events from a file: JSON Lines or CSV, one event per line, each validated and
stored by `meter_events.record` exactly as the API would, `batch_size` lines per transaction.

Owns: reading the two formats into `Line`s (`read_lines`), checking a line's fields as the API's
parameter readers do, running the lines in batches (`run`), and counting the outcome (`Summary`).

Always true:
- A line is accepted only when `record` stored it; every other line becomes one `Rejection` with
  Stripe's code (`resource_already_exists`, `meter_event_invalid_value`, ...) or `malformed` for
  a line that is not a JSON object or a well-formed CSV record. Blank lines are skipped.
- A batch is one transaction, run like the API's write batches: lines run one after another
  without savepoints, which is exact because a line that fails raises before it writes. Should a
  failing line have written (`Repo.wrote`), the batch is rolled back and run again with a
  savepoint per line. A deadlock with another writer runs the batch again. Any other database
  error stops the import (`ImportStopped`): the batches before it stay committed.
- Identifiers are de-duplicated as by the API, across batches and across runs; a line without
  an identifier gets a new one, so importing it twice counts it twice.
May import: engine, store, clock, ids.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from meterline.engine.errors import RuleViolation
from meterline.engine.metering import MAX_IDENTIFIER
from meterline.services import ServiceError, unit
from meterline.services.meter_events import EventInput, record
from meterline.store.db import Database, ItemSavepoints, is_database_error, is_retryable
from meterline.store.repo import Scope

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
MALFORMED = "malformed"
MAX_EVENT_NAME = 100  # as the API's event_name parameter
EXAMPLES = 3  # line numbers kept per reason
BATCH_ATTEMPTS = 5
CSV_FIELDS = ("event_name", "timestamp", "identifier")
PAYLOAD_PREFIX = "payload."
_INT = re.compile(r"\A[+-]?[0-9]{1,18}\Z")  # as the API reads an integer parameter


class SourceError(Exception):
    """The file cannot be read as events at all (unknown extension, unusable CSV header)."""


class ImportStopped(Exception):
    """The database failed in a way a new attempt cannot clear; earlier batches are committed."""

    def __init__(self, line: int, cause: BaseException) -> None:
        super().__init__(f"the import stopped at the batch starting on line {line}: {cause}")
        self.line = line
        self.cause = cause


@dataclass(frozen=True)
class Rejection:
    line: int
    code: str
    message: str
    param: str | None
    text: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "code": self.code,
            "message": self.message,
            "param": self.param,
            "text": self.text,
        }


@dataclass(frozen=True)
class Line:
    """One record of the file: the event it holds, or why it holds none."""

    number: int  # 1-based, the physical line where the record starts
    text: str  # as read, without the line break
    event: EventInput | None = None
    rejection: Rejection | None = None


@dataclass
class Reason:
    count: int = 0
    examples: list[int] = field(default_factory=list)  # the first EXAMPLES line numbers
    message: str = ""  # the first message


@dataclass
class Summary:
    accepted: int = 0
    rejected: int = 0
    reasons: dict[str, Reason] = field(default_factory=dict)
    last_line: int = 0  # the last line of the committed batches

    def add(self, r: Rejection) -> None:
        self.rejected += 1
        reason = self.reasons.setdefault(r.code, Reason(message=r.message))
        reason.count += 1
        if len(reason.examples) < EXAMPLES:
            reason.examples.append(r.line)


# -- which account --------------------------------------------------------------------------------


# -- reading --------------------------------------------------------------------------------------


def format_of(name: str) -> str:
    """ "jsonl" or "csv" from a file name's extension, or SourceError."""
    lower = name.lower()
    for ext, kind in FORMATS.items():
        if lower.endswith(ext):
            return kind
    raise SourceError(
        f"Cannot tell the format of {name!r}: name the file *.jsonl (one JSON object per line) "
        "or *.csv (a header row, then one event per row)."
    )


def read_lines(kind: str, raw_lines: Iterable[bytes]) -> Iterator[Line]:
    """The records of a file given as its raw lines (bytes, line breaks included). A CSV header
    is checked at once: a header that cannot name events raises SourceError here."""
    if kind == "jsonl":
        return _jsonl(raw_lines)
    return _csv(raw_lines)


def _reject(number: int, text: str, code: str, message: str, param: str | None = None) -> Line:
    return Line(number, text, rejection=Rejection(number, code, message, param, text))


def _decode(raw: bytes, first: bool) -> str | None:
    if first and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _invalid(param: str, message: str, code: str = "parameter_invalid") -> ServiceError:
    return ServiceError(400, message, code=code, param=param)


def _event(event_name: Any, payload: Any, identifier: Any, timestamp: Any) -> EventInput:
    """The checks the API's parameter readers make (`api/meter_events.py`), with its codes; an
    empty string counts as absent there too."""
    if event_name is None or event_name == "":
        raise _invalid("event_name", "Missing required param: event_name.", "parameter_missing")
    if not isinstance(event_name, str):
        raise _invalid("event_name", "Invalid value for event_name: expected a string.")
    if len(event_name) > MAX_EVENT_NAME:
        raise _invalid(
            "event_name",
            f"Invalid event_name: must be at most {MAX_EVENT_NAME} characters long.",
            "parameter_invalid_string",
        )
    if payload is None or payload == "":
        raise _invalid("payload", "Missing required param: payload.", "parameter_missing")
    if not isinstance(payload, dict):
        raise _invalid("payload", 'payload must be an object of strings, e.g. {"value": "25"}.')
    for k, v in payload.items():
        if not isinstance(v, str):
            raise _invalid(
                f"payload[{k}]",
                f'payload[{k}] must be a string (write numbers as strings, e.g. "25"); '
                f"got {json.dumps(v)}.",
            )
    if identifier == "":
        identifier = None
    if identifier is not None:
        if not isinstance(identifier, str):
            raise _invalid("identifier", "Invalid value for identifier: expected a string.")
        if len(identifier) > MAX_IDENTIFIER:
            raise _invalid(
                "identifier",
                f"Invalid identifier: must be at most {MAX_IDENTIFIER} characters long.",
                "parameter_invalid_string",
            )
    ts: int | None = None
    if isinstance(timestamp, str) and _INT.match(timestamp):
        ts = int(timestamp)
    elif isinstance(timestamp, int) and not isinstance(timestamp, bool):
        ts = timestamp
    elif timestamp is not None and timestamp != "":
        raise _invalid(
            "timestamp",
            f"Invalid integer: {timestamp}. The timestamp is in Unix seconds, e.g. 1735689600.",
            "parameter_invalid_integer",
        )
    return EventInput(event_name, payload, identifier, ts)


def _to_line(number: int, text: str, build: Callable[[], EventInput]) -> Line:
    try:
        return Line(number, text, event=build())
    except ServiceError as e:
        return _reject(number, text, e.code or "parameter_invalid", e.message, e.param)


_JSONL_KEYS = {"event_name", "payload", "identifier", "timestamp"}


def _jsonl(raw_lines: Iterable[bytes]) -> Iterator[Line]:
    for number, raw in enumerate(raw_lines, 1):
        text = _decode(raw, number == 1)
        if text is None:
            shown = raw.rstrip(b"\r\n").decode("utf-8", "replace")
            yield _reject(number, shown, MALFORMED, "The line is not valid UTF-8.")
            continue
        text = text.rstrip("\r\n")
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except ValueError as e:
            yield _reject(number, text, MALFORMED, f"The line is not valid JSON: {e}.")
            continue
        if not isinstance(obj, dict):
            yield _reject(
                number,
                text,
                MALFORMED,
                'The line must hold one JSON object, e.g. {"event_name": "tokens", "payload": '
                '{"stripe_customer_id": "cus_123", "value": "25"}}.',
            )
            continue
        unknown = sorted(set(obj) - _JSONL_KEYS)
        if unknown:
            yield _reject(
                number,
                text,
                "parameter_unknown",
                f"Received unknown parameter: {unknown[0]} (a line may hold event_name, payload, "
                "identifier and timestamp).",
                unknown[0],
            )
            continue
        yield _to_line(
            number,
            text,
            lambda o=obj: _event(
                o.get("event_name"),
                o.get("payload"),
                o.get("identifier"),
                o.get("timestamp"),
            ),
        )


class _Tracked:
    """Feeds decoded lines to `csv.reader` and keeps the ones the current record used."""

    def __init__(self, raw_lines: Iterable[bytes]) -> None:
        self._it = iter(raw_lines)
        self.count = 0  # lines read so far
        self.used: list[str] = []
        self.bad_utf8 = False

    def __iter__(self) -> _Tracked:
        return self

    def __next__(self) -> str:
        raw = next(self._it)
        self.count += 1
        text = _decode(raw, self.count == 1)
        if text is None:
            self.bad_utf8 = True
            text = raw.decode("utf-8", "replace")
        self.used.append(text)
        return text

    def take(self) -> tuple[str, bool]:
        text = "".join(self.used).rstrip("\r\n")
        bad = self.bad_utf8
        self.used = []
        self.bad_utf8 = False
        return text, bad


def _csv_header(cells: list[str]) -> list[str]:
    names = [c.strip() for c in cells]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise SourceError(f"The CSV header names the column {name!r} twice.")
        seen.add(name)
        if name in CSV_FIELDS or (name.startswith(PAYLOAD_PREFIX) and name != PAYLOAD_PREFIX):
            continue
        raise SourceError(
            f"Unknown column {name!r} in the CSV header. The columns are event_name, timestamp, "
            "identifier, and payload.<key> for each payload key "
            "(e.g. payload.stripe_customer_id,payload.value)."
        )
    if "event_name" not in seen:
        raise SourceError(
            "The CSV header has no event_name column. The first row names the columns, e.g. "
            "event_name,timestamp,identifier,payload.stripe_customer_id,payload.value"
        )
    return names


def _csv(raw_lines: Iterable[bytes]) -> Iterator[Line]:
    src = _Tracked(raw_lines)
    reader = csv.reader(src, strict=True)
    header: list[str] | None = None
    while header is None:
        try:
            cells = next(reader)
        except StopIteration:
            raise SourceError("The CSV file is empty: it needs a header row.") from None
        except csv.Error as e:
            raise SourceError(f"The CSV header (line {src.count}) cannot be read: {e}.") from None
        _, bad = src.take()
        if bad:
            raise SourceError("The CSV header is not valid UTF-8.")
        if cells:
            header = _csv_header(cells)
    return _csv_records(src, reader, header)


def _csv_records(src: _Tracked, reader: Any, header: list[str]) -> Iterator[Line]:
    while True:
        number = src.count + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            text, _ = src.take()
            yield _reject(number, text, MALFORMED, f"The line is not valid CSV: {e}.")
            continue
        text, bad = src.take()
        if bad:
            yield _reject(number, text, MALFORMED, "The line is not valid UTF-8.")
            continue
        if not cells or (len(cells) == 1 and not cells[0].strip()):
            continue
        if len(cells) != len(header):
            yield _reject(
                number,
                text,
                MALFORMED,
                f"The line has {len(cells)} cells; the header has {len(header)}.",
            )
            continue
        values: dict[str, str] = {}
        payload: dict[str, str] = {}
        for name, cell in zip(header, cells, strict=True):
            if cell == "":
                continue
            if name.startswith(PAYLOAD_PREFIX):
                payload[name[len(PAYLOAD_PREFIX) :]] = cell
            else:
                values[name] = cell
        yield _to_line(
            number,
            text,
            lambda v=values, p=payload: _event(
                v.get("event_name"),
                p or None,
                v.get("identifier"),
                v.get("timestamp"),
            ),
        )


# -- storing --------------------------------------------------------------------------------------


class _NeedsSavepoints(Exception):
    """A failing line had written: run the batch again with a savepoint per line."""


class _Retry(Exception):
    """The database aborted the batch (a deadlock); a new attempt can clear it."""


def _run_batch(
    db: Database, scope: Scope, batch: list[Line], *, savepoints: bool
) -> list[Rejection | None]:
    out: list[Rejection | None] = []
    try:
        with unit(db, scope, write=True) as repo:
            sp = ItemSavepoints(repo.conn) if savepoints else None
            for line in batch:
                if line.event is None:
                    out.append(line.rejection)
                    continue
                repo.wrote = False
                if sp is not None:
                    sp.begin()
                try:
                    record(repo, line.event)
                except (ServiceError, RuleViolation) as e:
                    if sp is None and repo.wrote:
                        raise _NeedsSavepoints() from e
                    if sp is not None:
                        sp.failed()
                    code = e.code or "parameter_invalid"
                    out.append(Rejection(line.number, code, e.message, e.param, line.text))
                else:
                    if sp is not None:
                        sp.ok()
                    out.append(None)
    except _NeedsSavepoints:
        raise
    except Exception as e:
        if is_retryable(e):
            raise _Retry() from e
        raise
    return out


def store_batch(db: Database, scope: Scope, batch: list[Line]) -> list[Rejection | None]:
    """Store one batch in one transaction; per line, None (stored) or its Rejection."""
    if all(line.event is None for line in batch):
        return [line.rejection for line in batch]
    cause: BaseException | None = None
    for _attempt in range(BATCH_ATTEMPTS):
        try:
            try:
                return _run_batch(db, scope, batch, savepoints=False)
            except _NeedsSavepoints:
                return _run_batch(db, scope, batch, savepoints=True)
        except _Retry as e:
            cause = e.__cause__
            continue
        except Exception as e:
            if isinstance(e, sa.exc.SQLAlchemyError) or is_database_error(e):
                raise ImportStopped(batch[0].number, e) from e
            raise  # a bug: its traceback is what to report
    raise ImportStopped(batch[0].number, cause or RuntimeError("the batch kept deadlocking"))


def run(
    db: Database,
    scope: Scope,
    lines: Iterable[Line],
    *,
    batch_size: int = 1000,
    on_rejection: Callable[[Rejection], None] | None = None,
    on_batch: Callable[[Summary], None] | None = None,
) -> Summary:
    """Import `lines` into the account and mode of `scope`, `batch_size` lines per transaction.
    `on_rejection` sees every rejected line in file order; `on_batch` the running summary after
    each committed batch. Raises ImportStopped when the database fails: the batches that
    `on_batch` saw are committed, the others are not."""
    summary = Summary()
    batch: list[Line] = []

    def flush() -> None:
        results = store_batch(db, scope, batch)
        for rejection in results:
            if rejection is None:
                summary.accepted += 1
                continue
            summary.add(rejection)
            if on_rejection is not None:
                on_rejection(rejection)
        summary.last_line = batch[-1].number
        batch.clear()
        if on_batch is not None:
            on_batch(summary)

    for line in lines:
        batch.append(line)
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    return summary
