"""The ASGI application: the request pipeline every endpoint shares.

Order: route -> body (1 MiB cap) -> auth -> decode -> writes join a batch, and on its writer
thread: [the route's `prepare`, then its `precheck` reads, before the transaction] -> one
transaction ([idempotency], [the routes' `prefetch` reads for the whole batch], handler,
unknown-parameter check, expand, render; held-back inserts sent) -> response with Request-Id,
after the commit.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import orjson

from meterline import clock
from meterline.api.routing import Route, Router
from meterline.engine.errors import RuleViolation
from meterline.ids import request_id as new_request_id
from meterline.services import ServiceError, due_work, unit
from meterline.services import accounts as accounts_service
from meterline.services import meter_event_stream as stream_service
from meterline.services import rollups as rollups_service
from meterline.store import idempotency as idem
from meterline.store.db import (
    Database,
    ItemSavepoints,
    forget_batch_memos,
    is_database_error,
    is_retryable,
)
from meterline.store.repo import CursorMissing, Repo, Scope, deferred_inserts, flush_deferred
from meterline.wire import expand as expand_mod
from meterline.wire.errors import StripeError, api_error
from meterline.wire.form import decode, decode_form, parse_pairs
from meterline.wire.params import Params

log = logging.getLogger("meterline")

DEFAULT_API_VERSION = "2026-10-28.endive"
MAX_BODY = 1024 * 1024
MAX_JSON_DEPTH = 32
MAX_BATCH = 256  # write requests sharing one transaction
BATCH_ATTEMPTS = 5
IDEMPOTENCY_TTL = 24 * 3600
MAX_CACHED_SESSIONS = 10_000  # meter event sessions a worker remembers (pruned of expired ones)
# How long a worker trusts a secret key it has resolved: a key removed from the database stops
# working in every worker within this time. Unknown keys are never remembered.
KEY_CACHE_SECONDS = 30.0
INCLUDABLE = {"tiers"}
# Expandable in Stripe's schema, always null here until their resources exist.
EXPANDABLE_LATER = {
    ("customer", "default_source"),
    ("product", "tax_code"),
}


@dataclass
class Call:
    """What a handler gets: its decoded parameters, path values, scope and transaction."""

    params: Params
    path: dict[str, str]
    scope: Scope
    url: str
    repo: Repo
    expand: list[str] = field(default_factory=list)
    api_version: str | None = None  # the request's Stripe-Version header, if it sent one
    request_id: str = ""
    prepared: Any = None  # what the route's `prepare` made of the body (see Router.add)

    def includes(self, name: str) -> bool:
        return name in self.expand or f"data.{name}" in self.expand


Handler = Callable[[Call], Any]
Resolver = Callable[[Repo, str], dict[str, Any] | None]


@dataclass
class Job:
    """A decoded request, ready to run."""

    route: Route
    data: dict[str, Any]
    path_params: dict[str, str]
    scope: Scope
    method: str
    path: str
    rid: str
    version: str | None
    key: str | None
    digest: str | None
    prepared: Any = None


class _Batch:
    """The responses a write batch will store, in order, with an index by key so that a later
    request of the same batch with the same key replays the earlier one."""

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.stored: dict[tuple[str, bool, str], dict[str, Any]] = {}

    def store(self, job: Job, status: int, body: bytes) -> None:
        now = clock.now()
        self.rows.append(
            (
                job.scope.account_id,
                job.scope.livemode,
                job.key,
                job.digest,
                now,
                status,
                body,
                job.rid,
            )
        )
        self.stored[(job.scope.account_id, job.scope.livemode, job.key)] = {  # type: ignore[index]
            "request_hash": job.digest,
            "created": now,
            "status": status,
            "response": body,
            "request_id": job.rid,
        }

    def forget_since(self, mark: int) -> None:
        for row in self.rows[mark:]:
            self.stored.pop((row[0], row[1], row[2]), None)
        del self.rows[mark:]


class _RetryBatch(Exception):
    """The database aborted the batch's transaction for a reason a new attempt can clear."""


class _NeedsSavepoints(Exception):
    """A request of a batch failed after writing: run the batch again with savepoints."""

    def __init__(self, index: int, exc: Exception) -> None:
        super().__init__(index)
        self.index = index
        self.exc = exc


def _in_progress(key: str) -> StripeError:
    return StripeError(
        409,
        f"There is currently another in-progress request using this Idempotency-Key ({key}); "
        "retry this request after that one completes.",
        type="idempotency_error",
        code="idempotency_key_in_use",
    )


class _StoredFailure(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.body = body


def _json(obj: Any) -> bytes:
    return orjson.dumps(obj, default=str)


def to_stripe_error(exc: Exception) -> StripeError | None:
    if isinstance(exc, StripeError):
        return exc
    if isinstance(exc, ServiceError):
        return StripeError(exc.status, exc.message, code=exc.code, param=exc.param)
    if isinstance(exc, RuleViolation):
        return StripeError(400, exc.message, code=exc.code, param=exc.param)
    if isinstance(exc, CursorMissing):
        return StripeError(
            404, f"No such object: '{exc.id}'", code="resource_missing", param=exc.which
        )
    return None


class MeterlineApp:
    def __init__(
        self,
        db: Database,
        router: Router,
        expanders: dict[tuple[str, str], Resolver],
        *,
        rollup_interval: float = 0.0,
        jobs_interval: float = 0.0,
        drain_interval: float = 2.0,
    ) -> None:
        self.db = db
        self.router = router
        self.expanders = expanders
        self._keys: dict[str, tuple[str, bool, float]] = {}  # key -> account, livemode, until
        self._sessions: dict[str, stream_service.Session] = {}
        self._pending: list[tuple[Job, asyncio.Future]] = []
        self._flusher: asyncio.Task | None = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="meterline-writer")
        # Seconds between rollup folds in this worker (0: none); see services.rollups.
        self.rollup_interval = rollup_interval
        self._builder: rollups_service.Builder | None = None
        # Seconds between runs of the background jobs in this worker (0: none).
        self.jobs_interval = jobs_interval
        self._jobs: due_work.Jobs | None = None
        self._advancer: due_work.Advancer | None = None  # runs the test clock advances asked here
        # Seconds between moves of the stream's landing log into meter_events in this worker
        # (services.meter_event_stream.Drainer).
        self.drain_interval = drain_interval
        self._drainer: stream_service.Drainer | None = None

    # -- ASGI ------------------------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    self.db.start_checkpointer()
                    self._drainer = stream_service.Drainer(self.db, self.drain_interval)
                    self._drainer.start()
                    if self.rollup_interval > 0:
                        self._builder = rollups_service.Builder(self.db, self.rollup_interval)
                        self._builder.start()
                    self._advancer = due_work.Advancer(self.db)
                    self._advancer.start()
                    if self.jobs_interval > 0:
                        self._jobs = due_work.Jobs(self.db, self.jobs_interval)
                        self._jobs.start()
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    if self._builder is not None:
                        self._builder.stop()
                    if self._jobs is not None:
                        self._jobs.stop()
                    if self._advancer is not None:
                        self._advancer.stop()
                    self._writer.shutdown(wait=True)
                    if self._drainer is not None:
                        self._drainer.stop()
                    self.db.dispose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        rid = new_request_id()
        headers: dict[str, str] = {}
        for k, v in scope["headers"]:
            headers[k.decode("latin-1")] = v.decode("latin-1")
        version = headers.get("stripe-version") or DEFAULT_API_VERSION
        extra: list[tuple[bytes, bytes]] = []
        try:
            status, body, extra = await self._handle(scope, receive, headers, rid, version)
        except _StoredFailure as f:
            status, body = f.status, f.body
        except Exception as exc:  # every failure leaves as Stripe's envelope
            err = to_stripe_error(exc)
            if err is None:
                log.exception(
                    "unexpected error in %s %s (request id %s)", scope["method"], scope["path"], rid
                )
                err = api_error(rid)
            status, body = err.status, _json(err.body())
            extra = [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
        out_headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"request-id", rid.encode()),
            (b"stripe-version", version.encode("latin-1")),
            *extra,
        ]
        idem_key = headers.get("idempotency-key")
        if idem_key:
            out_headers.append((b"idempotency-key", idem_key.encode("latin-1")))
        await send({"type": "http.response.start", "status": status, "headers": out_headers})
        await send({"type": "http.response.body", "body": body})

    async def _handle(
        self, scope: dict[str, Any], receive: Any, headers: dict[str, str], rid: str, version: str
    ):
        method, path = scope["method"], scope["path"]
        route, path_params, allowed = self.router.match(method, path)
        if route is None:
            if allowed:
                raise StripeError(
                    405,
                    f"{path} does not support {method}; it supports {', '.join(sorted(allowed))}.",
                    code="method_not_allowed",
                    headers={"Allow": ", ".join(sorted(allowed))},
                )
            raise StripeError(
                404,
                f"Unrecognized request URL ({method}: {path}). meterline serves the endpoints listed in "
                "docs/api-coverage.md.",
            )
        body = await self._read_body(receive, headers)
        scope_ = await self._authenticate(headers, route)
        args = (
            route,
            path_params,
            scope_,
            method,
            path,
            scope.get("query_string", b""),
            body,
            headers,
            rid,
            headers.get("stripe-version"),  # handlers see what the client asked for
        )
        if route.offload:
            return await anyio.to_thread.run_sync(self._execute, *args)
        # A point read takes tens of microseconds: running it on the event loop costs less than
        # a hop to a thread. Writes that arrive together share one transaction.
        if route.write:
            return await self._submit(self._prepare(*args))
        return self._execute(*args)

    async def _read_body(self, receive: Any, headers: dict[str, str]) -> bytes:
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY:
            raise _too_large()
        chunks: list[bytes] = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                break
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                raise _too_large()
            chunks.append(chunk)
            if not msg.get("more_body"):
                break
        return b"".join(chunks)

    # -- auth ------------------------------------------------------------------------------------
    async def _authenticate(self, headers: dict[str, str], route: Route) -> Scope:
        key = _key_from(headers.get("authorization"))
        if route.auth == "meter_event_session":
            return self._session_scope(key)
        found = self._keys.get(key)
        if found is None or found[2] <= time.monotonic():
            resolved = accounts_service.resolve_key(self.db, key)
            if resolved is None:
                self._keys.pop(key, None)
                hint = key[:8] + "*" * 4 + key[-4:] if len(key) > 12 else key[:4] + "****"
                if key.startswith(stream_service.TOKEN_PREFIX):
                    raise StripeError(
                        401,
                        f"Invalid API Key provided: {hint}. A meter event session's "
                        "authentication_token works only for POST /v2/billing/meter_event_stream; "
                        "use a secret key here.",
                        headers=_CHALLENGE,
                    )
                raise StripeError(401, f"Invalid API Key provided: {hint}", headers=_CHALLENGE)
            found = (resolved[0], resolved[1], time.monotonic() + KEY_CACHE_SECONDS)
            self._keys[key] = found
        return Scope(found[0], found[1])

    def _session_scope(self, token: str) -> Scope:
        """The stream authenticates with a meter event session's token, not a secret key. A
        session never changes once made, so a worker keeps the ones it has seen until they
        expire."""
        session = self._sessions.get(token)
        if session is None:
            session = stream_service.find_session(self.db, token)
            if session is None:
                raise StripeError(
                    401,
                    "Invalid meter event session token. POST /v2/billing/meter_event_stream takes "
                    "the authentication_token of a session made with POST "
                    "/v2/billing/meter_event_session (a secret key does not work here).",
                    headers=_SESSION_CHALLENGE,
                )
            if len(self._sessions) >= MAX_CACHED_SESSIONS:
                now = clock.now()
                self._sessions = {t: s for t, s in self._sessions.items() if s.expires_at > now}
            self._sessions[token] = session
        if session.expires_at <= clock.now():
            self._sessions.pop(token, None)
            raise StripeError(
                401,
                "The meter event session has expired (sessions last 15 minutes). Create a new one "
                "with POST /v2/billing/meter_event_session.",
                type="temporary_session_expired",
                code="billing_meter_event_session_expired",
                headers=_SESSION_CHALLENGE,
            )
        return Scope(session.account_id, session.livemode)

    # -- one request, in a worker thread ------------------------------------------------------
    def _decode(
        self, method: str, path: str, query: bytes, body: bytes, headers: dict[str, str]
    ) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        if path.startswith("/v2/"):
            if method in ("GET", "DELETE") or not body.strip():
                data = decode_form(query)
                return data, None
            try:
                data = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise StripeError(
                    400, f"The request body is not valid JSON: {exc}.", code="parameter_invalid"
                )
            if not isinstance(data, dict):
                raise StripeError(
                    400, "The request body must be a JSON object.", code="parameter_invalid"
                )
            if _depth(data) > MAX_JSON_DEPTH:
                raise StripeError(
                    400,
                    f"The request body nests objects or arrays deeper than {MAX_JSON_DEPTH} levels.",
                    code="parameter_invalid",
                )
            return data, None
        ctype = headers.get("content-type", "").lower()  # media types are case-insensitive
        if method == "POST" and body and "json" in ctype:
            raise StripeError(
                400,
                "v1 endpoints take application/x-www-form-urlencoded bodies (a[b]=c), not JSON.",
                code="parameter_invalid",
            )
        pairs = parse_pairs(query) if query else []
        if method == "POST" and body:
            pairs = pairs + parse_pairs(body)
        return decode(pairs), pairs

    def _prepare(
        self,
        route: Route,
        path_params,
        scope_: Scope,
        method: str,
        path: str,
        query: bytes,
        body: bytes,
        headers: dict[str, str],
        rid: str,
        version: str | None,
    ) -> Job:
        """Decode and check what needs no database: a failure here changes nothing."""
        data, pairs = self._decode(method, path, query, body, headers)
        key = headers.get("idempotency-key") if method == "POST" and route.idempotent else None
        digest = None
        if key:
            if len(key) > 255:
                raise StripeError(
                    400,
                    "Idempotency-Key must be at most 255 characters long.",
                    code="parameter_invalid",
                    param="Idempotency-Key",
                )
            digest = hashlib.sha256(
                method.encode()
                + b" "
                + path.encode()
                + b"\n"
                + (
                    orjson.dumps(sorted(pairs))
                    if pairs is not None
                    else orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
                )
            ).hexdigest()
        return Job(route, data, path_params, scope_, method, path, rid, version, key, digest)

    def _execute(self, *args: Any):
        """Run one request to completion on this thread (reads, and routes run on a thread)."""
        job = self._prepare(*args)
        if not job.route.write:
            with unit(self.db, job.scope, write=False) as repo:
                return (
                    200,
                    self._call(
                        job.route,
                        job.data,
                        job.path_params,
                        job.scope,
                        job.path,
                        job.rid,
                        job.version,
                        repo,
                    ),
                    [],
                )
        result = self._write_batch([job])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def _perform(
        self,
        job: Job,
        repo: Repo,
        batch: _Batch,
        preloaded: tuple[bool, dict[str, Any] | None] | None,
    ):
        """One write request inside the open transaction: idempotency check, handler, and the
        response to store with it (written once for the whole batch, before the commit)."""
        if job.key:
            ident = (job.scope.account_id, job.scope.livemode, job.key)
            row = batch.stored.get(ident)
            if row is None:
                locked, row = (
                    preloaded
                    if preloaded is not None
                    else idem.lock_and_load(repo.conn, job.scope, job.key)
                )
                if not locked:
                    raise _in_progress(job.key)
            replay = self._replay(row, job.key, job.digest, repo)  # type: ignore[arg-type]
            if replay is not None:
                return replay
        out = self._call(
            job.route,
            job.data,
            job.path_params,
            job.scope,
            job.path,
            job.rid,
            job.version,
            repo,
            job.prepared,
        )
        if job.key:
            batch.store(job, 200, out)
        return 200, out, []

    def _write_batch(self, jobs: list[Job]) -> list[Any]:
        """Run write requests in one transaction (one commit, one WAL flush, one turn of
        SQLite's write lock for all of them). Each request is all-or-nothing: the fast path runs
        them one after another, which is exact as long as a request that fails has written
        nothing (services check before they write); if one fails after writing, the batch is
        rolled back and run again with a savepoint per request. Returns, per job, its result
        or exception."""
        refused = self._precheck(jobs)
        for _attempt in range(BATCH_ATTEMPTS):
            try:
                try:
                    return self._run_batch(jobs, savepoints=False, known=refused)
                except _NeedsSavepoints as again:
                    # A request that failed in Python is not run twice: its outcome is known.
                    # After a database error every request runs again, each in its savepoint.
                    known = dict(refused)
                    if not is_database_error(again.exc):
                        known[again.index] = again.exc
                    return self._run_batch(jobs, savepoints=True, known=known)
            except _RetryBatch:
                # A deadlock with another worker's batch (each batch takes its requests' locks
                # in its own order): PostgreSQL aborted this one; the other has gone on.
                continue
        log.error("a write batch kept deadlocking (request ids %s)", ", ".join(j.rid for j in jobs))
        return [api_error(job.rid) for job in jobs]

    def _precheck(self, jobs: list[Job]) -> dict[int, Exception]:
        """Before a batch's transaction, on the writer thread: the routes' `prepare` (decoding
        that needs no database), then their `precheck` reads, in one read unit; so that this
        work keeps out of SQLite's write lock (the other worker writes meanwhile) and off the
        event loop (whose Python would hold the GIL while the transaction wants it). Returns
        the failures of `prepare` by job index: those requests' answers. A precheck that fails
        leaves the handler to do the whole work in the transaction."""
        refused: dict[int, Exception] = {}
        todo = []
        for i, job in enumerate(jobs):
            if job.route.prepare is None or job.prepared is not None:
                continue
            try:
                job.prepared = job.route.prepare(job.data)
            except Exception as exc:
                refused[i] = exc
                continue
            if job.route.precheck is not None:
                todo.append(job)
        if not todo:
            return refused
        try:
            with self.db.read() as conn:
                for job in todo:
                    try:
                        job.prepared = job.route.precheck(Repo(conn, job.scope), job.prepared)  # type: ignore[misc]
                    except Exception as exc:
                        if is_database_error(exc):
                            raise
                        log.debug("precheck of request %s failed", job.rid, exc_info=True)
        except Exception:
            log.warning("the prechecks of a write batch failed; it runs without", exc_info=True)
        return refused

    def _run_batch(
        self, jobs: list[Job], *, savepoints: bool, known: dict[int, Exception] | None = None
    ) -> list[Any]:
        results: list[Any] = [None] * len(jobs)
        batch = _Batch()
        try:
            with self.db.write() as conn, deferred_inserts(conn, not savepoints):
                keyed = [(i, job) for i, job in enumerate(jobs) if job.key]
                preloaded: dict[int, Any] = {}
                if keyed:
                    loaded = idem.lock_and_load_many(
                        conn, [(job.scope, job.key) for _, job in keyed]
                    )  # type: ignore[misc]
                    preloaded = {i: row for (i, _), row in zip(keyed, loaded, strict=False)}
                savepoint = ItemSavepoints(conn) if savepoints else None
                self._prefetch(conn, jobs, known)
                for i, job in enumerate(jobs):
                    if job.route.prefetch is None:
                        forget_batch_memos(conn)
                    repo = Repo(conn, job.scope)
                    if savepoint is None:
                        if job.route.defer_inserts:
                            repo.defer_inserts = True
                        else:
                            # Held-back rows must be in the table before a request that may
                            # read it by other means than `Repo`.
                            self._flush_held(conn, grouped_rows=False)
                    mark = len(batch.rows)
                    if savepoint is not None:
                        savepoint.begin()
                    try:
                        if known and i in known:
                            raise known[i]
                        results[i] = self._perform(job, repo, batch, preloaded.get(i))
                        if savepoint is not None:
                            savepoint.ok()
                    except Exception as exc:
                        if savepoint is None and (repo.wrote or is_database_error(exc)):
                            raise _NeedsSavepoints(i, exc) from exc
                        if is_retryable(exc):
                            raise _RetryBatch() from exc
                        if savepoint is not None:
                            savepoint.failed()
                        batch.forget_since(mark)
                        results[i] = self._failed(job, exc, batch)
                if not savepoints:
                    self._flush_held(conn)
                idem.store_many(conn, batch.rows)
        except (_NeedsSavepoints, _RetryBatch):
            raise
        except Exception as exc:
            if is_retryable(exc):
                raise _RetryBatch() from exc
            # BEGIN or COMMIT failed: nothing of this batch persisted.
            log.exception(
                "a write transaction failed (request ids %s)", ", ".join(j.rid for j in jobs)
            )
            for i, job in enumerate(jobs):
                if not isinstance(results[i], StripeError) or results[i].status >= 500:
                    results[i] = api_error(job.rid)
        return results

    @staticmethod
    def _prefetch(conn: Any, jobs: list[Job], known: dict[int, Exception] | None) -> None:
        """The routes' `prefetch` reads for this batch's requests, one call per route."""
        by_route: dict[Any, list[tuple[Scope, dict[str, Any]]]] = {}
        for i, job in enumerate(jobs):
            if job.route.prefetch is not None and not (known and i in known):
                by_route.setdefault(job.route.prefetch, []).append((job.scope, job.data))
        for prefetch, requests in by_route.items():
            try:
                prefetch(conn, requests)
            except Exception as exc:
                if is_database_error(exc):
                    raise
                forget_batch_memos(conn)
                log.warning("a prefetch failed; the batch runs without", exc_info=True)

    @staticmethod
    def _flush_held(conn: Any, *, grouped_rows: bool = True) -> None:
        try:
            flush_deferred(conn, grouped_rows=grouped_rows)
        except Exception as exc:
            if is_retryable(exc):
                raise _RetryBatch() from exc
            # A held-back insert failed, of a request not known: run the batch again with a
            # savepoint per request and nothing held back.
            raise _NeedsSavepoints(-1, exc) from exc

    def _failed(self, job: Job, exc: Exception, batch: _Batch) -> Exception:
        err = to_stripe_error(exc)
        if err is not None:
            return err  # validation and state errors are not stored: nothing executed
        log.exception(
            "unexpected error in %s %s (request id %s)", job.method, job.path, job.rid, exc_info=exc
        )
        failure = _json(api_error(job.rid).body())
        if job.key:
            batch.store(job, 500, failure)
        return _StoredFailure(500, failure)

    # -- batching writes ------------------------------------------------------------------------
    async def _submit(self, job: Job):
        """Queue a write; one writer thread per worker runs the queue in batches, so the event
        loop keeps reading requests (which join the next batch) while a batch waits for the
        database."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        self._pending.append((job, fut))
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush_loop())
        result = await fut
        if isinstance(result, Exception):
            raise result
        return result

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                jobs = [job for job, _ in batch]
                try:
                    results = await loop.run_in_executor(self._writer, self._write_batch, jobs)
                except BaseException:  # never leave a request waiting
                    log.exception(
                        "the write batch runner failed (request ids %s)",
                        ", ".join(j.rid for j in jobs),
                    )
                    results = [api_error(j.rid) for j in jobs]
                for (_, fut), result in zip(batch, results, strict=False):
                    if not fut.done():
                        fut.set_result(result)
        finally:
            self._flusher = None

    def _replay(self, row: dict[str, Any] | None, key: str, digest: str, repo: Repo):
        """None to proceed; else the stored (status, body, headers). 400 on other parameters."""
        if row is None:
            return None
        if row["created"] < clock.now() - IDEMPOTENCY_TTL:
            idem.forget(repo.conn, repo.scope, key)
            return None
        if row["request_hash"] != digest:
            raise StripeError(
                400,
                "Keys for idempotent requests can only be used with the same parameters they were first used with. "
                f"Try using a key other than '{key}' if you meant to execute a different request.",
                type="idempotency_error",
            )
        return (
            row["status"],
            bytes(row["response"]),
            [(b"idempotent-replayed", b"true"), (b"original-request", row["request_id"].encode())],
        )

    def _call(
        self,
        route: Route,
        data,
        path_params,
        scope_: Scope,
        path: str,
        rid: str,
        version: str | None,
        repo: Repo,
        prepared: Any = None,
    ) -> bytes:
        params = Params(data)
        expand = params.str_list("expand") or []
        expand_mod.check_paths(expand)
        call = Call(params, path_params, scope_, path, repo, expand, version, rid, prepared)
        result = route.handler(call)
        params.done()
        walk = [p for p in expand if p.split(".")[-1] not in INCLUDABLE]
        if walk:
            expand_mod.apply(
                result,
                walk,
                lambda obj, fld, id: self._resolve(repo, obj, fld, id),
                self._expandable,
                list_of=route.list_of,
            )
        return _json(result)

    def _expandable(self, obj: str, fld: str) -> bool:
        return (obj, fld) in self.expanders or (obj, fld) in EXPANDABLE_LATER

    def _resolve(self, repo: Repo, obj: str, fld: str, id: str) -> dict[str, Any] | None:
        fn = self.expanders.get((obj, fld))
        return fn(repo, id) if fn is not None else None


# A 401 must name a scheme (RFC 9110); clients that send Basic credentials only when
# challenged (e.g. .NET's HttpClient with Credentials) need it.
_CHALLENGE = {"WWW-Authenticate": 'Basic realm="meterline"'}
_SESSION_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="meterline"'}


def _depth(v: Any) -> int:
    """How deeply objects and arrays nest in `v` (0 for a scalar), counted up to just past
    MAX_JSON_DEPTH. Iterative, and only containers are visited: a stream request holds hundreds
    of scalars."""
    if not isinstance(v, (dict, list)):
        return 0
    deepest = 0
    stack = [(v, 1)]
    while stack:
        node, level = stack.pop()
        if level > deepest:
            deepest = level
            if level > MAX_JSON_DEPTH:
                return level
        for x in node.values() if isinstance(node, dict) else node:
            if isinstance(x, (dict, list)):
                stack.append((x, level + 1))
    return deepest


def _too_large() -> StripeError:
    return StripeError(
        413,
        f"The request body is larger than the limit of {MAX_BODY} bytes (1 MiB).",
        code="request_too_large",
    )


def _key_from(auth: str | None) -> str:
    if not auth:
        raise StripeError(
            401,
            "You did not provide an API key. Send your secret key in the Authorization header, using Bearer auth "
            "(Authorization: Bearer sk_test_...) or HTTP Basic with the key as the user name.",
            headers=_CHALLENGE,
        )
    scheme, _, value = auth.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        try:
            user = base64.b64decode(value, validate=True).decode().partition(":")[0]
        except Exception:
            user = ""
        if user:
            return user
    raise StripeError(
        401,
        "Invalid Authorization header. Use 'Authorization: Bearer sk_test_...' or HTTP Basic with your secret key as the user name.",
        headers=_CHALLENGE,
    )
