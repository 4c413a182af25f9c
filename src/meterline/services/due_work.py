"""Work that falls due with time: test clock advances and the background jobs of a worker.

`advance_clock` sets a test clock `advancing`; `finish_advance` (run by the `Advancer` thread of
the worker that took the request, or by the jobs after a restart) moves it and runs, for the
subscriptions, invoices and customers on it, everything that fell due up to the new time in time
order (`run_billing`: renewals and draft finalizations, each at its own time, each finalization
first settling the ledger to its time), settles the ledger at the new time and makes it `ready`,
in one transaction. `bill_due` is the same for the wall clock, up to 50
steps per transaction; on PostgreSQL on several connections at once, split by customer (one
customer's steps stay in time order on one connection). `Jobs` runs in every `meterline serve` worker: each job name is held
by one worker at a time (a database lock), so several workers never run one job twice, and a job
works from the database's state, so whatever fell due while no worker ran is caught up.

Always true: every job is idempotent (ledger entries are written under unique keys), so a job
that runs again, or a request that settles first, changes nothing twice; one customer's billing
steps run one after another in time order, whatever the number of connections.
May import: engine, store, clock, other services.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from meterline import clock
from meterline.services import credits, invoices, subscriptions, test_clocks
from meterline.store import inbox
from meterline.store.db import Database
from meterline.store.repo import Repo, Scope
from meterline.store.tables import (
    credit_balance_transactions,
    credit_grants,
    customers,
    idempotency_keys,
    meter_event_sessions,
)
from meterline.store.tables import invoices as invoices_t
from meterline.store.tables import subscriptions as subscriptions_t
from meterline.store.tables import test_clocks as test_clocks_t

log = logging.getLogger("meterline.jobs")

IDEMPOTENCY_TTL = 24 * 3600
BATCH = 500  # due steps read at a time by the billing job
STEPS_PER_TRANSACTION = 50  # one commit per this many steps (a failing step is then run alone)
ANALYZE_EVERY = 2000  # PostgreSQL: steps of a run between refreshes of its tables' statistics
LANES = 4  # PostgreSQL connections the billing run uses at once (customers split among them)
SESSION_KEEP = 24 * 3600  # expired stream sessions are kept a day (their 401 says "expired")


def run_billing(repo: Repo, upto: int, test_clock: str | None) -> int:
    """Run, in time order, every renewal and draft finalization due by `upto` for the
    subscriptions and invoices on that clock (None: on none), each at its own time. Returns the
    steps run. At one instant, drafts finalize before renewals make new ones."""
    steps = 0
    while True:
        drafts = invoices.due_drafts(repo, upto, test_clock, limit=1)
        subs = subscriptions.due(repo, upto, test_clock, limit=1)
        if not drafts and not subs:
            return steps
        if drafts and (not subs or drafts[0][0] <= subs[0][0]):
            at, iid = drafts[0]
            invoices.finalize(repo, iid, at)
        else:
            at, sid = subs[0]
            subscriptions.renew(repo, sid, at)
        steps += 1


def advance_clock(repo: Repo, clock_id: str, frozen_time: int) -> dict[str, Any]:
    """A test clock advance request: the clock turns `advancing`, and once this transaction
    commits this process's `Advancer` runs it (`finish_advance`); a worker's jobs take over an
    advance whose runner is gone. Without an Advancer in the process (the library used in
    process, no server), the advance runs here, in this transaction, and returns `ready`."""
    row = test_clocks.start_advance(repo, clock_id, frozen_time)
    advancer = _ADVANCER
    if advancer is None or advancer.db.engine is not repo.conn.engine:
        _run_advance(repo, clock_id, frozen_time)
        repo.update(
            test_clocks_t,
            clock_id,
            {"status": "ready", "target_frozen_time": None, "frozen_time": frozen_time},
        )
        return {**row, "status": "ready", "target_frozen_time": None, "frozen_time": frozen_time}
    advancer.request(repo.scope, clock_id, frozen_time)
    return row


def _run_advance(repo: Repo, clock_id: str, frozen_time: int) -> None:
    """Move the clock to `frozen_time` and run, in time order, what fell due on the way for its
    subscriptions, invoices and customers; then settle its customers' ledgers there. Stream
    events still in the inbox are moved into `meter_events` first, so that invoices count them."""
    inbox.move_all(repo.conn)
    test_clocks.move(repo, clock_id, frozen_time)
    run_billing(repo, frozen_time, clock_id)
    c = customers.c
    for (cid,) in repo.conn.execute(
        sa.select(c.id).where(
            c.account_id == repo.scope.account_id,
            c.livemode == repo.scope.livemode,
            c.test_clock == clock_id,
            c.deleted.is_(False),
        )
    ):
        credits.settle(repo, cid, frozen_time)


CLAIM_SECONDS = 300  # how long a runner holds an advance; a lapsed claim is taken over


def finish_advance(db: Database, scope: Scope, clock_id: str, now: int) -> str:
    """Run an `advancing` clock's advance: claim it (unless another runner holds it), run what
    fell due up to its target and make it `ready` there, all in one transaction; a failure
    leaves it `internal_failure` (as on Stripe) with nothing of the advance written. Returns
    "done", "failed", "claimed" (another runner holds it), or "none" (not advancing)."""
    tc = test_clocks_t.c
    own = [
        tc.account_id == scope.account_id,
        tc.livemode == scope.livemode,
        tc.id == clock_id,
        tc.status == "advancing",
        tc.deleted.is_(False),
    ]
    until = now + CLAIM_SECONDS
    with db.read() as conn:  # a look first, so that waiting for a commit takes no write lock
        state = conn.execute(sa.select(tc.claimed_until).where(*own)).first()
    if state is None:
        return "none"
    if state[0] is not None and state[0] >= now:
        return "claimed"
    with db.write() as conn:
        taken = conn.execute(
            test_clocks_t.update()
            .where(*own, sa.or_(tc.claimed_until.is_(None), tc.claimed_until < now))
            .values(claimed_until=until)
        ).rowcount
    if not taken:
        return "claimed"
    try:
        with db.write() as conn:
            repo = Repo(conn, scope)
            row = test_clocks.get(repo, clock_id)
            _run_advance(repo, clock_id, row["target_frozen_time"])
            done = repo.update(
                test_clocks_t,
                clock_id,
                {"status": "ready", "target_frozen_time": None, "claimed_until": None},
                expect={"status": "advancing", "claimed_until": until},
            )
            if done != 1:
                raise _LostClaim()
    except _LostClaim:
        log.warning(
            "test clock %s: the advance outlived its claim; another runner has it", clock_id
        )
        return "claimed"
    except Exception:
        log.exception("test clock %s: the advance failed; the clock is internal_failure", clock_id)
        with db.write() as conn:
            conn.execute(
                test_clocks_t.update()
                .where(*own, tc.claimed_until == until)
                .values(status="internal_failure", claimed_until=None)
            )
        return "failed"
    return "done"


class _LostClaim(Exception):
    pass


def run_advances(db: Database, now: int) -> int:
    """The job: finish every advance that no runner holds (its runner died, or none was
    asked, e.g. after a restart). Returns the clocks made ready."""
    tc = test_clocks_t.c
    with db.read() as conn:
        todo = conn.execute(
            sa.select(tc.account_id, tc.livemode, tc.id).where(
                tc.status == "advancing",
                tc.deleted.is_(False),
                sa.or_(tc.claimed_until.is_(None), tc.claimed_until < now),
            )
        ).all()
    return sum(finish_advance(db, Scope(a, bool(lm)), cid, now) == "done" for a, lm, cid in todo)


class Advancer:
    """A thread in each server worker that runs the advances requested in this process as soon
    as the request that asked commits (it retries the claim briefly: the request's transaction
    may not have committed yet)."""

    WAIT_FOR_COMMIT = 10.0  # seconds to wait for a requesting transaction to commit

    def __init__(self, db: Database) -> None:
        self.db = db
        self._queue: queue.Queue[tuple[Scope, str, int] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="meterline-advance", daemon=True)

    def start(self) -> None:
        global _ADVANCER
        _ADVANCER = self
        self._thread.start()

    def stop(self) -> None:
        global _ADVANCER
        if _ADVANCER is self:
            _ADVANCER = None
        self._queue.put(None)
        self._thread.join(timeout=10)

    def request(self, scope: Scope, clock_id: str, target: int) -> None:
        self._queue.put((scope, clock_id, target))

    def _settled(self, scope: Scope, clock_id: str, target: int) -> bool:
        """Whether the clock is gone or past this advance (another runner finished it)."""
        with self.db.read() as conn:
            row = Repo(conn, scope).get(test_clocks_t, clock_id)
        return row is None or row["deleted"] or row["frozen_time"] >= target

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            scope, clock_id, target = item
            deadline = time.monotonic() + self.WAIT_FOR_COMMIT
            try:
                while finish_advance(self.db, scope, clock_id, clock.now()) == "none":
                    if time.monotonic() > deadline or self._settled(scope, clock_id, target):
                        break  # the request rolled back, or the advance is over already
                    time.sleep(0.005)
            except Exception:  # the jobs take over a claimed advance once its claim lapses
                log.exception("test clock %s: the advance runner failed", clock_id)


_ADVANCER: Advancer | None = None


def bill_due(
    db: Database,
    now: int,
    progress: Callable[[int], Any] | None = None,
    lanes: int | None = None,
) -> int:
    """Renew and finalize everything on the wall clock due by `now`, in every account, up to
    STEPS_PER_TRANSACTION steps (renewals or finalizations) per transaction. Returns the steps
    run.

    Order: one customer's steps run in time order, one after another (its credits burn in the
    order its invoices fall due). Different customers share nothing the run writes (each
    finalization holds its customer's lock), so on PostgreSQL their steps run on `lanes`
    connections at once (default LANES; SQLite has one writer, so one lane): a customer's
    steps all go to one lane. When a step fails, its chunk is run again one step per
    transaction: the failing step is logged and left for the next run, the others go on."""
    if lanes is None:
        lanes = LANES if db.dialect == "postgresql" else 1
    lanes = max(1, lanes)
    s, i = subscriptions_t.c, invoices_t.c
    failed: set[str] = set()
    counted = threading.Lock()
    total = 0

    def run_lane(items: list[tuple]) -> None:
        nonlocal total
        for k in range(0, len(items), STEPS_PER_TRANSACTION):
            done = _run_chunk(db, items[k : k + STEPS_PER_TRANSACTION], now, failed, counted)
            with counted:
                total += done  # a step another worker did first is not counted
                if progress is not None and done:
                    progress(done)

    analyzed = 0
    moved = False
    while True:
        if db.dialect == "postgresql" and total - analyzed >= ANALYZE_EVERY:
            _analyze(db)
            analyzed = total
        with db.read() as conn:
            due_subs = conn.execute(
                sa.select(
                    s.current_period_end,
                    s.account_id,
                    s.livemode,
                    s.id,
                    sa.literal(1),
                    s.customer,
                )
                .where(
                    s.test_clock.is_(None),
                    s.current_period_end <= now,
                    s.status.in_(subscriptions.LIVE),
                )
                .order_by(s.current_period_end)
                .limit(BATCH + len(failed))
            ).all()
            due_drafts = conn.execute(
                sa.select(
                    i.automatically_finalizes_at,
                    i.account_id,
                    i.livemode,
                    i.id,
                    sa.literal(0),
                    i.customer,
                )
                .where(
                    i.test_clock.is_(None),
                    i.status == "draft",
                    i.automatically_finalizes_at <= now,
                )
                .order_by(i.automatically_finalizes_at)
                .limit(BATCH + len(failed))
            ).all()
        work = sorted(
            (tuple(r) for r in [*due_subs, *due_drafts] if r[3] not in failed),
            key=lambda r: (r[0], r[4]),
        )[:BATCH]
        if not work:
            return total
        if not moved:  # invoices count every event received so far (only when any is due:
            with db.write() as conn:  # a move holds the write lock while it runs)
                inbox.move_all(conn)
            moved = True
        if lanes == 1:
            run_lane(work)
            continue
        split: list[list[tuple]] = [[] for _ in range(lanes)]
        for r in work:
            split[zlib.crc32(f"{r[1]}|{r[2]}|{r[5]}".encode()) % lanes].append(r)
        _run_lanes(db, run_lane, [part for part in split if part])


def _run_lanes(db: Database, run_lane: Callable[[list[tuple]], None], parts: list[list]) -> None:
    """Run each part on a thread of its own and wait for all; each thread closes its
    connections when done. The first failure is raised once every lane has stopped."""
    errors: list[BaseException] = []

    def lane(part: list[tuple]) -> None:
        try:
            run_lane(part)
        except BaseException as exc:  # re-raised below, on the caller's thread
            errors.append(exc)
        finally:
            db.close_thread()

    threads = [
        threading.Thread(target=lane, args=(part,), name="meterline-billing", daemon=True)
        for part in parts
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _analyze(db: Database) -> None:
    """Refresh PostgreSQL's statistics of the tables a long billing run grows, as autovacuum
    would once it noticed. Without them (a new database, or autovacuum off) the planner may take
    an (account, livemode) index for a lookup by id and scan every row of the account, a cost
    that grows with the run."""
    with db.write() as conn:
        conn.exec_driver_sql(f"ANALYZE {', '.join(_GROWN)}")


_GROWN = ("invoices", "invoice_lines", "credit_balance_transactions", "subscriptions")


def _run_chunk(
    db: Database, chunk: list[tuple], now: int, failed: set[str], guard: threading.Lock
) -> int:
    try:
        with db.write() as conn:
            repos: dict[tuple[str, bool], Repo] = {}
            return sum(_step(conn, *item[:5], now, repos) for item in chunk)
    except Exception:
        # The chunk rolled back: run its steps one transaction each, so that the one that
        # fails is left for the next run and the others go on.
        log.warning("a billing chunk failed; running its steps one by one", exc_info=True)
    done = 0
    for item in chunk:
        try:
            with db.write() as conn:
                done += _step(conn, *item[:5], now)
        except Exception:
            log.exception(
                "billing step for %s at %s failed; it is retried next run", item[3], item[0]
            )
            with guard:
                failed.add(item[3])
    return done


def _step(
    conn: Any,
    at: int,
    account: str,
    live: Any,
    oid: str,
    kind: int,
    now: int,
    repos: dict[tuple[str, bool], Repo] | None = None,
) -> int:
    """Run one due step; the steps done (0 when another worker or request did it first; 2 for
    a renewal whose draft was due too, finalized at once). `repos`: one Repo per scope for the
    steps of one transaction, remembering the prices, products and meters they read (the run
    changes none of them)."""
    scope = (account, bool(live))
    repo = repos.get(scope) if repos is not None else None
    if repo is None:
        repo = Repo(conn, Scope(*scope))
        if repos is not None:
            repo.memo = {}
            repos[scope] = repo
    if kind == 0:
        return int(invoices.finalize_due(repo, oid, at))
    if subscriptions.renew(repo, oid, at, finalize_by=now) is None:
        return 0
    return 2 if at + invoices.FINALIZE_AFTER <= now else 1


def settle_due_grants(db: Database, now: int) -> int:
    """Settle every wall-clock customer with a grant whose next ledger entry is due: effective
    without its grant entry, or ended (expired or voided) since. Returns the customers settled."""
    g, t = credit_grants.c, credit_balance_transactions.c
    granted = sa.exists().where(
        t.account_id == g.account_id,
        t.livemode == g.livemode,
        t.credit_grant == g.id,
        t.type == "credits_granted",
    )
    closed = sa.exists().where(
        t.account_id == g.account_id,
        t.livemode == g.livemode,
        t.credit_grant == g.id,
        t.type.in_(("credits_expired", "credits_voided")),
    )
    ended = sa.or_(g.expires_at <= now, g.voided_at.is_not(None))
    q = (
        sa.select(g.account_id, g.livemode, g.customer)
        .where(g.test_clock.is_(None))
        .where(sa.or_(sa.and_(g.effective_at <= now, ~granted), sa.and_(ended, ~closed)))
        .distinct()
    )
    with db.read() as conn:
        due = [(a, bool(lm), c) for a, lm, c in conn.execute(q)]
    for account, live, customer in due:
        with db.write() as conn:
            credits.settle(Repo(conn, Scope(account, live)), customer, now)
    return len(due)


def purge(db: Database, now: int) -> None:
    with db.write() as conn:
        k, s = idempotency_keys.c, meter_event_sessions.c
        conn.execute(idempotency_keys.delete().where(k.created < now - IDEMPOTENCY_TTL))
        conn.execute(meter_event_sessions.delete().where(s.expires_at < now - SESSION_KEEP))


JOBS: dict[str, Callable[[Database, int], Any]] = {
    "billing": bill_due,
    "credits.settle": settle_due_grants,
    "test_clocks.advance": run_advances,
    "purge": purge,
}


class Jobs:
    """Runs every job about every `interval` seconds on a thread of its own."""

    def __init__(self, db: Database, interval: float = 5.0) -> None:
        self.db = db
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="meterline-jobs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def run_once(self) -> None:
        for name, job in JOBS.items():
            with self.db.try_exclusive(f"job:{name}") as mine:
                if not mine:
                    continue
                try:
                    job(self.db, clock.now())
                except Exception:  # one job's failure changes nothing and stops no other
                    log.exception("job %s failed; retrying in %.0f s", name, self.interval)

    def _run(self) -> None:
        self.run_once()  # catch up on what fell due while no worker ran
        while not self._stop.wait(self.interval):
            self.run_once()


__all__ = [
    "JOBS",
    "Advancer",
    "Jobs",
    "advance_clock",
    "bill_due",
    "finish_advance",
    "purge",
    "run_advances",
    "run_billing",
    "settle_due_grants",
]
