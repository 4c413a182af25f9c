"""Credit grants, the credit ledger and the balance summary.

The ledger is brought up to date (`settle`) before anything reads it: for every grant of the
customer, `engine.credits.due_entries` at the customer's time (its test clock's, or the wall
clock's) says which entries are due (the grant once effective; the debit of what remains once
expired or voided), and each is written under a deterministic `entry_key`, insert-if-absent, so
whichever request or job notices first writes it and nobody writes it twice.

Every writer of a customer's ledger (settle with something due, finalization, invoice void,
expire, void) first takes `lock_customer`, and reads balances after it, so two workers never
spend one credit twice. The balance summary's `available_balance` is the ledger balance less
what the customer's draft invoices would take at finalization (`reserved_by_drafts`).

Always true: a grant's ledger sums to its balance, which is never below 0; an ended grant's
balance is 0 once settled; grants and entries of one account are invisible to another.
May import: engine, store, clock, ids, other services.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from meterline import clock
from meterline.engine import credits as engine
from meterline.ids import new_id
from meterline.services import ServiceError, not_found, test_clocks
from meterline.services import catalog as catalog_service
from meterline.services import customers as customers_service
from meterline.store.repo import Repo
from meterline.store.tables import credit_balance_transactions as txns
from meterline.store.tables import credit_grants as grants_t
from meterline.store.tables import invoice_lines, invoices

MAX_PRICES = 20


@dataclass(frozen=True)
class GrantInput:
    customer: str
    currency: str
    amount: int
    category: str
    priority: int
    effective_at: int | None
    expires_at: int | None
    prices: list[str] | None  # None: price_type=metered
    name: str | None
    metadata: dict[str, str]


def _now_for(repo: Repo, customer_row: Mapping[str, Any] | None) -> int:
    return test_clocks.customer_now(repo, customer_row) if customer_row is not None else clock.now()


def as_engine(row: Mapping[str, Any]) -> engine.Grant:
    return engine.Grant(
        id=row["id"],
        currency=row["currency"],
        amount=row["amount"],
        effective_at=row["effective_at"],
        created=row["created"],
        category=row["category"],
        priority=row["priority"],
        expires_at=row["expires_at"],
        voided_at=row["voided_at"],
        prices=None if row["prices"] is None else frozenset(row["prices"]),
    )


def create(repo: Repo, g: GrantInput) -> dict[str, Any]:
    cust = customers_service.get(repo, g.customer, param="customer", allow_deleted=False)
    now = _now_for(repo, cust)
    if g.prices is not None:
        for i, pid in enumerate(g.prices):
            param = f"applicability_config[scope][prices][{i}][id]"
            price = catalog_service.get_price(repo, pid, param=param)
            if price["usage_type"] != "metered" or not price["meter"]:
                raise ServiceError(
                    400,
                    f"The price {pid} is not a metered price with a meter: credits only pay for "
                    "metered usage.",
                    code="parameter_invalid",
                    param=param,
                )
            if price["currency"] != g.currency:
                raise ServiceError(
                    400,
                    f"The price {pid} is in {price['currency']}, the grant in {g.currency}: its "
                    "credits could never apply to it.",
                    code="parameter_invalid",
                    param=param,
                )
    effective = now if g.effective_at is None else g.effective_at
    if g.expires_at is not None and g.expires_at <= effective:
        raise ServiceError(
            400,
            "expires_at must be after effective_at.",
            code="parameter_invalid",
            param="expires_at",
        )
    row = repo.insert(
        grants_t,
        {
            "id": new_id("credgr", 24),
            "created": now,
            "customer": g.customer,
            "currency": g.currency,
            "amount": g.amount,
            "category": g.category,
            "priority": g.priority,
            "effective_at": effective,
            "expires_at": g.expires_at,
            "voided_at": None,
            "prices": g.prices,
            "name": g.name,
            "test_clock": cust["test_clock"],
            "updated": now,
            "metadata": g.metadata,
        },
    )
    settle(repo, g.customer)
    return row


def get(repo: Repo, gid: str, *, param: str = "id") -> dict[str, Any]:
    row = repo.get(grants_t, gid)
    if row is None:
        raise not_found("billing credit grant", gid, param)
    return row


def list_(repo: Repo, customer: str | None, **page: Any):
    where = [] if customer is None else [grants_t.c.customer == customer]
    return repo.page(grants_t, where, **page)


def update(
    repo: Repo, gid: str, expires_at: int | None | str, metadata_change: Any
) -> dict[str, Any]:
    """`expires_at`: an int sets it, None clears it, "keep" leaves it."""
    row = get(repo, gid)
    cust = customers_service.get(repo, row["customer"], param="customer")
    now = _now_for(repo, cust)
    changes: dict[str, Any] = {}
    if expires_at != "keep":
        _check_open(row, now, "expires_at")
        if expires_at is not None and expires_at <= row["effective_at"]:
            raise ServiceError(
                400,
                "expires_at must be after the grant's effective_at.",
                code="parameter_invalid",
                param="expires_at",
            )
        changes["expires_at"] = expires_at
    if metadata_change is not None:
        changes["metadata"] = metadata_change(row["metadata"])
    if changes:
        changes["updated"] = now
        repo.update(grants_t, gid, changes)
        settle(repo, row["customer"])
    return {**row, **changes}


def _check_open(row: Mapping[str, Any], now: int, param: str) -> None:
    if row["voided_at"] is not None:
        raise ServiceError(
            400, f"The credit grant {row['id']} is voided.", code="parameter_invalid", param=param
        )
    if row["expires_at"] is not None and row["expires_at"] <= now:
        raise ServiceError(
            400,
            f"The credit grant {row['id']} has expired.",
            code="parameter_invalid",
            param=param,
        )


def _end(repo: Repo, gid: str, field: str) -> dict[str, Any]:
    """Expire (`expires_at`) or void (`voided_at`) a grant now, at the customer's time, and write
    the debit of what remains."""
    lock_customer(repo, get(repo, gid)["customer"])
    row = get(repo, gid)  # read again under the lock
    now = _now_for(repo, customers_service.get(repo, row["customer"], param="customer"))
    _check_open(row, now, "id")
    changes = {field: now, "updated": now}
    repo.update(grants_t, gid, changes)
    settle(repo, row["customer"])
    return {**row, **changes}


def expire(repo: Repo, gid: str) -> dict[str, Any]:
    return _end(repo, gid, "expires_at")


def void(repo: Repo, gid: str) -> dict[str, Any]:
    return _end(repo, gid, "voided_at")


def _entries(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[engine.Entry]]:
    out: dict[str, list[engine.Entry]] = {}
    for r in rows:
        out.setdefault(r["credit_grant"], []).append(
            engine.Entry(
                r["credit_grant"],
                r["type"],
                r["amount"],
                r["effective_at"],
                r["invoice"],
                r["invoice_line_item"],
            )
        )
    return out


_RULE_COLUMNS = (
    "id",
    "customer",
    "currency",
    "amount",
    "category",
    "priority",
    "effective_at",
    "expires_at",
    "voided_at",
    "prices",
    "created",
    "test_clock",
)


def _raw(repo: Repo, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
    """One statement on the driver's cursor (`?` placeholders, turned into the dialect's)."""
    repo.flush()
    if repo.dialect != "sqlite":
        sql = sql.replace("?", "%s")
    cur = repo.conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cur.execute(sql, args)
        return cur.fetchall()
    finally:
        cur.close()


_GRANTS_SQL = (
    f"SELECT {', '.join(_RULE_COLUMNS)} FROM credit_grants "
    "WHERE account_id = ? AND livemode = ? AND customer = ?"
)


def customer_grants(repo: Repo, customer: str) -> list[dict[str, Any]]:
    """The customer's grants, with the columns the ledger's rules read (one raw statement: every
    settle, finalization and summary reads them)."""
    out = []
    for row in _raw(repo, _GRANTS_SQL, (repo.scope.account_id, repo.scope.livemode, customer)):
        g = dict(zip(_RULE_COLUMNS, row, strict=True))
        if isinstance(g["prices"], (str, bytes)):
            g["prices"] = orjson.loads(g["prices"])
        out.append(g)
    return out


@dataclass
class Standing:
    """Where one grant's ledger stands: all that the rules read of it."""

    balance: int = 0  # granted + reinstated - applied - expired - voided
    granted: bool = False  # its credits_granted entry is written
    closings: int = 0  # credits_expired / credits_voided entries written (numbers the next key)
    last: int | None = None  # the latest effective_at among its entries

    def add(self, e: engine.Entry) -> None:
        self.balance += e.signed
        self.granted = self.granted or e.type == "credits_granted"
        self.closings += e.type in _CLOSING
        self.last = e.effective_at if self.last is None else max(self.last, e.effective_at)

    def as_entries(self, grant: str) -> list[engine.Entry]:
        """One entry standing for the ledger (the rules read its presence, sum and time)."""
        if not self.granted:
            return []
        return [engine.Entry(grant, "credits_granted", self.balance, self.last or 0)]


@dataclass
class Book:
    """A customer's grants and where each one's ledger stands, read at one moment."""

    grants: dict[str, dict[str, Any]]
    standing: dict[str, Standing]

    def balances(self) -> dict[str, int]:
        return {
            gid: self.standing[gid].balance if gid in self.standing else 0 for gid in self.grants
        }

    def engine_grants(self) -> list[engine.Grant]:
        return [as_engine(g) for g in self.grants.values()]


_STANDING_SQL = (
    "SELECT credit_grant, "
    "sum(CASE WHEN type IN ('credits_granted', 'credits_application_invoice_voided') "
    "THEN amount ELSE -amount END) AS balance, "
    "max(CASE WHEN type = 'credits_granted' THEN 1 ELSE 0 END) AS granted, "
    "sum(CASE WHEN type IN ('credits_expired', 'credits_voided') THEN 1 ELSE 0 END) AS closings, "
    "max(effective_at) AS last "
    "FROM credit_balance_transactions WHERE account_id = ? AND livemode = ? AND customer = ? "
    "GROUP BY credit_grant"
)

_BOOK_SQL = (
    f"SELECT {', '.join('g.' + c for c in _RULE_COLUMNS)}, "
    "s.balance, s.granted, s.closings, s.last "
    f"FROM credit_grants g LEFT JOIN ({_STANDING_SQL}) s ON s.credit_grant = g.id "
    "WHERE g.account_id = ? AND g.livemode = ? AND g.customer = ?"
)


def book_of(repo: Repo, customer: str) -> Book:
    """The customer's grants and where each one's ledger stands, in one statement."""
    scope = (repo.scope.account_id, repo.scope.livemode, customer)
    grants: dict[str, dict[str, Any]] = {}
    standing: dict[str, Standing] = {}
    n = len(_RULE_COLUMNS)
    for row in _raw(repo, _BOOK_SQL, scope + scope):
        g = dict(zip(_RULE_COLUMNS, row[:n], strict=True))
        if isinstance(g["prices"], (str, bytes)):
            g["prices"] = orjson.loads(g["prices"])
        grants[g["id"]] = g
        bal, granted, closings, last = row[n:]
        if bal is not None:
            standing[g["id"]] = Standing(int(bal), bool(granted), int(closings), int(last))
    return Book(grants, standing)


_CLOSING = ("credits_expired", "credits_voided")


def customer_entries(repo: Repo, customer: str) -> list[dict[str, Any]]:
    repo.flush()
    return [
        dict(r)
        for r in repo.conn.execute(repo.select(txns, txns.c.customer == customer)).mappings()
    ]


Pending = list[tuple[Mapping[str, Any], engine.Entry, str]]  # (grant, entry, key) to write


def write_entries(
    repo: Repo, grant: Mapping[str, Any], entries: Sequence[engine.Entry], keys: Sequence[str]
) -> list[str | None]:
    """Insert each entry under its key unless the key is taken; the ids inserted (None where
    the key was taken)."""
    return write_pending(repo, [(grant, e, k) for e, k in zip(entries, keys, strict=True)])


def write_pending(repo: Repo, pending: Pending) -> list[str | None]:
    """Insert each (grant, entry, key) in order unless its key is taken, in one statement batch
    (PostgreSQL pipelines them: one round trip); the ids inserted, None where the key was
    taken."""
    rows = [
        {
            "id": new_id("credbtx", 24),
            "created": e.effective_at,
            "customer": grant["customer"],
            "credit_grant": e.grant,
            "entry_key": key,
            "type": e.type,
            "amount": e.amount,
            "currency": grant["currency"],
            "effective_at": e.effective_at,
            "invoice": e.invoice,
            "invoice_line_item": e.line,
            "test_clock": grant["test_clock"],
        }
        for grant, e, key in pending
    ]
    if len(rows) > 1 and repo.dialect == "postgresql":
        done = repo.insert_many_unless_exists(txns, rows)
        return [r["id"] if r["id"] in done else None for r in rows]
    return [r["id"] if repo.insert_unless_exists(txns, r) else None for r in rows]


def lock_customer(repo: Repo, customer: str) -> None:
    """Serialize the ledger writers of one customer (finalizations, voids, expiries, settles)
    until the transaction ends: a balance read after this is the balance a write may spend.
    PostgreSQL: a transaction advisory lock; SQLite runs one writer at a time already."""
    repo.lock("credits.customer", customer)


def _due(book: Book, now: int) -> list[tuple[Mapping[str, Any], list[engine.Entry], list[str]]]:
    out = []
    for g in book.grants.values():
        st = book.standing.get(g["id"]) or Standing()
        # What due_entries would find, checked without building values: the grant entry once
        # effective, the closing debit once ended with something left.
        ends = [t for t in (g["expires_at"], g["voided_at"]) if t is not None]
        if not (
            (g["effective_at"] <= now and not st.granted)
            or (ends and min(ends) <= now and (st.balance > 0 or not st.granted))
        ):
            continue
        due = engine.due_entries(as_engine(g), st.as_entries(g["id"]), now)
        if not due:
            continue
        closings = st.closings
        keys = []
        for e in due:
            if e.type == "credits_granted":
                keys.append(f"granted:{g['id']}")
            else:
                keys.append(f"closed:{g['id']}:{closings}")
                closings += 1
        out.append((g, due, keys))
    return out


def settle(
    repo: Repo,
    customer: str,
    now: int | None = None,
    *,
    locked: bool = False,
    pending: Pending | None = None,
) -> Book:
    """Write every ledger entry due by now (the customer's time) for the customer's grants, and
    return the customer's book after it. Nothing due: nothing locked. Something due: the
    customer's ledger is locked and read again (unless the caller holds the lock: `locked`), so
    a closing debit is what remains after every committed application. With `pending`, the
    entries are added to it for the caller to write (with its own, in one batch) instead."""
    if now is None:
        cust = customers_service.get(repo, customer, param="customer")
        now = _now_for(repo, cust)
    book = book_of(repo, customer)
    due = _due(book, now)
    if not due:
        return book
    if not locked:
        lock_customer(repo, customer)
        book = book_of(repo, customer)
        due = _due(book, now)
    batch: Pending = [] if pending is None else pending
    for g, entries, keys in due:
        batch.extend((g, e, k) for e, k in zip(entries, keys, strict=True))
        st = book.standing.setdefault(g["id"], Standing())
        for e in entries:
            st.add(e)
    if pending is None:
        write_pending(repo, batch)
    return book


def application(
    repo: Repo,
    customer: str,
    invoice: str,
    lines: Sequence[engine.Line],
    at: int,
    *,
    locked: bool = True,
) -> tuple[Pending, list[engine.Entry]]:
    """The ledger entries that finalizing the invoice at `at` writes, in order, written
    nowhere: what settling the ledger to `at` owes, then the `credits_applied` of each (grant,
    line) in burn order (also returned alone). The caller holds `lock_customer`."""
    pending: Pending = []
    book = settle(repo, customer, at, locked=locked, pending=pending)
    apps = engine.apply_credits(lines, book.engine_grants(), book.balances(), at)
    applied = engine.applied_entries(apps, invoice, at)
    pending += [(book.grants[e.grant], e, f"applied:{e.grant}:{e.line}") for e in applied]
    return pending, applied


def give_back(repo: Repo, customer: str, invoice: str, at: int) -> None:
    """Reinstate every application of a voided invoice to its grant at `at`, then close again
    what an ended grant got back (the caller holds `lock_customer`)."""
    grants = {g["id"]: g for g in customer_grants(repo, customer)}
    t = txns.c
    rows = repo.conn.execute(
        repo.select(txns, t.invoice == invoice, t.type == "credits_applied").order_by(t.seq)
    ).mappings()
    entries = [e for es in _entries(list(rows)).values() for e in es]
    for e in engine.give_back(entries, invoice, at):
        write_entries(repo, grants[e.grant], [e], [f"reinstated:{e.grant}:{e.line}"])
    settle(repo, customer, at)


def reserved_by_drafts(
    repo: Repo, customer: str, at: int, book: Book | None = None
) -> dict[str, int]:
    """What the customer's draft invoices would take from each grant if they finalized now, in
    the order they were created (the reservation `available_balance` subtracts; ours)."""
    i, ln = invoices.c, invoice_lines.c
    drafts = [
        r[0]
        for r in repo.conn.execute(
            sa.select(i.id)
            .where(
                i.account_id == repo.scope.account_id,
                i.livemode == repo.scope.livemode,
                i.customer == customer,
                i.status == "draft",
            )
            .order_by(i.created, i.seq)
        )
    ]
    if not drafts:
        return {}
    lines: dict[str, list[engine.Line]] = {d: [] for d in drafts}
    for r in repo.conn.execute(
        sa.select(ln.invoice, ln.id, ln.price, ln.currency, ln.amount, ln.metered)
        .where(
            ln.account_id == repo.scope.account_id,
            ln.livemode == repo.scope.livemode,
            ln.invoice.in_(drafts),
        )
        .order_by(ln.invoice, ln.position)
    ):
        lines[r[0]].append(engine.Line(r[1], r[2], r[3], r[4], bool(r[5])))
    if book is None:
        book = book_of(repo, customer)
    grants = book.engine_grants()
    balances = book.balances()
    reserved: dict[str, int] = {}
    for d in drafts:
        for a in engine.apply_credits(lines[d], grants, balances, at):
            balances[a.grant] -= a.amount
            reserved[a.grant] = reserved.get(a.grant, 0) + a.amount
    return reserved


def _matches_scope(g: Mapping[str, Any], price_type: str | None, prices: list[str] | None) -> bool:
    if price_type is not None:
        return g["prices"] is None
    return g["prices"] is not None and bool(set(g["prices"]) & set(prices or []))


def balance_summary(
    repo: Repo,
    customer: str,
    *,
    credit_grant: str | None = None,
    price_type: str | None = None,
    prices: list[str] | None = None,
) -> list[tuple[str, int, int]]:
    """(currency, available, ledger) per currency of the matching grants, after settling."""
    cust = customers_service.get(repo, customer, param="customer")
    if credit_grant is not None:
        g = get(repo, credit_grant, param="filter[credit_grant]")
        if g["customer"] != customer:
            raise not_found("billing credit grant", credit_grant, "filter[credit_grant]")
    now = _now_for(repo, cust)
    book = settle(repo, customer, now)
    grants = [
        g
        for g in book.grants.values()
        if (
            g["id"] == credit_grant
            if credit_grant is not None
            else _matches_scope(g, price_type, prices)
        )
    ]
    reserved = reserved_by_drafts(repo, customer, now, book)
    balances = book.balances()
    ledger: dict[str, int] = {}
    available: dict[str, int] = {}
    for g in grants:
        cur, bal = g["currency"], balances[g["id"]]
        ledger[cur] = ledger.get(cur, 0) + bal
        available[cur] = available.get(cur, 0) + max(0, bal - reserved.get(g["id"], 0))
    # Expiries are written by `settle` before this reads, so none is pending here.
    return [(cur, available[cur], ledger[cur]) for cur in sorted(ledger)]


def list_transactions(repo: Repo, customer: str, credit_grant: str | None, **page: Any):
    cust = customers_service.get(repo, customer, param="customer")
    settle(repo, customer, _now_for(repo, cust))
    where = [txns.c.customer == customer]
    if credit_grant is not None:
        where.append(txns.c.credit_grant == credit_grant)
    return repo.page(txns, where, **page)


def get_transaction(repo: Repo, tid: str) -> dict[str, Any]:
    row = repo.get(txns, tid)
    if row is None:
        raise not_found("billing credit balance transaction", tid, "id")
    return row


__all__ = [
    "GrantInput",
    "application",
    "give_back",
    "lock_customer",
    "reserved_by_drafts",
    "balance_summary",
    "create",
    "expire",
    "get",
    "get_transaction",
    "list_",
    "list_transactions",
    "settle",
    "update",
    "void",
]
