"""`Repo`: scoped access to account data. Every statement on an account-owned table gets the
scope's account and livemode here, and nowhere else."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from meterline.store.fast import POINT, compiled, pg_get

_DEFERRED = "meterline_deferred_inserts"
_GROUPED = "meterline_grouped_rows"


def defer_inserts(conn: Connection, on: bool) -> None:
    """Hold back inserts on this connection and send them in groups before the next read
    through `Repo`, or at `flush_deferred`; an error of a held-back insert surfaces there.
    The rows of `Repo.add_unless_exists` (the meter events of stream requests) are sent as one
    insert-if-absent `executemany` per table and scope for the whole write batch: the group
    commit of the stream (see docs/architecture.md). On PostgreSQL the connection also gets a
    list for the single-row inserts of a `Repo` whose `defer_inserts` is on (the caller's
    promise that nothing of its request reads them back but through `Repo`): consecutive rows
    of one table go in one statement (`CompiledTable.insert_rows_sql`), so the creates of a
    write batch cost one round trip together."""
    conn.info[_DEFERRED] = [] if on and conn.dialect.name == "postgresql" else None
    conn.info[_GROUPED] = {} if on else None


@contextmanager
def deferred_inserts(conn: Connection, on: bool = True) -> Iterator[None]:
    """`defer_inserts` for the span of a block; whatever is still held back when the block fails
    is dropped with its transaction."""
    if not on:
        yield
        return
    defer_inserts(conn, True)
    try:
        yield
    finally:
        defer_inserts(conn, False)


def flush_deferred(
    conn: Connection, table: sa.Table | None = None, *, grouped_rows: bool = True
) -> None:
    """Send what is held back; with `table`, only the grouped rows of that table (a statement
    on another table cannot see them); with `grouped_rows=False`, only the single-row inserts
    (the grouped rows wait for the end of the batch)."""
    pending = conn.info.get(_DEFERRED)
    grouped = conn.info.get(_GROUPED) if grouped_rows else None
    if grouped:
        grouped = {k: rows for k, rows in grouped.items() if table is None or k[0] is table}
    if not pending and not grouped:
        return
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        if pending:
            conn.info[_DEFERRED] = []
            i = 0
            while i < len(pending):
                ct = pending[i][0]
                j = i
                while j < len(pending) and pending[j][0] is ct:
                    j += 1
                if j - i == 1:
                    cur.execute(ct.insert_sql, ct.insert_params(pending[i][1]), prepare=True)
                else:
                    rows = [row for _, row in pending[i:j]]
                    cur.execute(ct.insert_rows_sql, (ct.insert_rows_param(rows),), prepare=True)
                i = j
        if grouped:
            held = conn.info[_GROUPED]
            for key, rows in grouped.items():
                del held[key]
                tbl, _scope, order = key
                if order is not None and conn.dialect.name == "sqlite":
                    # Neighbouring keys land on the same index pages: fewer pages to read and
                    # write per transaction. The sort is stable, so rows of one key keep their
                    # arrival order (the tie-break of `last`). PostgreSQL keeps arrival order.
                    rows.sort(key=lambda r, i=order: r[i])
                cur.executemany(compiled(tbl, conn.dialect).insert_ignore_sql, rows)
    finally:
        cur.close()


@dataclass(frozen=True)
class Scope:
    account_id: str
    livemode: bool


class CursorMissing(LookupError):
    """A `starting_after`/`ending_before` id that does not exist in this scope."""

    def __init__(self, which: str, id: str) -> None:
        super().__init__(id)
        self.which = which
        self.id = id


class Repo:
    def __init__(self, conn: Connection, scope: Scope) -> None:
        self.conn = conn
        self.scope = scope
        self.dialect = conn.dialect.name
        self.wrote = False  # set by every write: a failure after a write needs a rollback
        # Inside `deferred_inserts` on PostgreSQL, `insert` holds its row back (see
        # `defer_inserts`): only for requests that read nothing back but through this `Repo`.
        self.defer_inserts = False
        self.ingest_locked = False  # PostgreSQL: holds the ingest lock (store.rollups)
        # Rows that cannot change during this unit of work, by (table, id), when a caller that
        # owns the whole transaction turns it on (the billing run: prices, products, meters;
        # services.usage also keeps the rollup watermark and the queued cancels there).
        self.memo: dict[tuple[str, str], Any] | None = None

    def get_memo(self, table: sa.Table, id: str) -> dict[str, Any] | None:
        """`get`, remembered for the unit of work when `memo` is on."""
        if self.memo is None:
            return self.get(table, id)
        key = (table.name, id)
        if key not in self.memo:
            self.memo[key] = self.get(table, id)
        return self.memo[key]

    def _own(self, table: sa.Table) -> list[Any]:
        return [
            table.c.account_id == self.scope.account_id,
            table.c.livemode == self.scope.livemode,
        ]

    def select(self, table: sa.Table, *where: Any) -> sa.Select:
        return sa.select(table).where(*self._own(table), *where)

    def _cursor(self) -> Any:
        return self.conn.connection.driver_connection.cursor()  # type: ignore[union-attr]

    def flush(self, table: sa.Table | None = None) -> None:
        """Send the inserts held back by `defer_inserts` (see there): before a statement on
        `table`, or on any table when None."""
        flush_deferred(self.conn, table)

    def get(self, table: sa.Table, id: str, *, for_update: bool = False) -> dict[str, Any] | None:
        ct = compiled(table, self.conn.dialect)
        self.flush(table)
        if self.dialect == "postgresql":
            raw = self.conn.connection.driver_connection
            try:
                row = pg_get(raw, ct, self.scope, id, for_update)
            except psycopg.Error as exc:
                if raw.pgconn.status != psycopg.pq.ConnStatus.OK:
                    self.conn.invalidate(exc)  # a new connection on the next unit of work
                raise
            if row is not pg_get.NOT_HERE:  # type: ignore[attr-defined]
                return row
        cur = self._cursor()
        try:
            cur.execute(
                ct.get_for_update_sql if for_update else ct.get_sql,
                (self.scope.account_id, self.scope.livemode, id),
                **POINT[self.dialect],
            )
            row = cur.fetchone()
        finally:
            cur.close()
        return ct.decode(row) if row is not None else None

    def get_by(self, table: sa.Table, column: str, value: Any) -> dict[str, Any] | None:
        """The row whose `column` (unique in the scope, e.g. meters.event_name) is `value`."""
        ct = compiled(table, self.conn.dialect)
        self.flush(table)
        cur = self._cursor()
        try:
            cur.execute(
                ct.get_by_sql(column),
                (self.scope.account_id, self.scope.livemode, value),
                **POINT[self.dialect],
            )
            row = cur.fetchone()
        finally:
            cur.close()
        return ct.decode(row) if row is not None else None

    def first(self, table: sa.Table, *where: Any) -> RowMapping | None:
        self.flush(table)
        return self.conn.execute(self.select(table, *where).limit(1)).mappings().first()

    def exists(self, table: sa.Table, *where: Any) -> bool:
        self.flush(table)
        q = sa.select(sa.literal(1)).select_from(table).where(*self._own(table), *where).limit(1)
        return self.conn.execute(q).first() is not None

    def insert(self, table: sa.Table, values: dict[str, Any]) -> dict[str, Any]:
        """Insert one row of this scope; returns the row as stored (without `seq`)."""
        ct = compiled(table, self.conn.dialect)
        self.wrote = True
        row = {
            **ct.defaults,
            **values,
            "account_id": self.scope.account_id,
            "livemode": self.scope.livemode,
        }
        if self.defer_inserts:
            pending = self.conn.info.get(_DEFERRED)
            if pending is not None:
                pending.append((ct, row))
                return row
        cur = self._cursor()
        try:
            cur.execute(ct.insert_sql, ct.insert_params(row), **POINT[self.dialect])
        finally:
            cur.close()
        return row

    def insert_unless_exists(self, table: sa.Table, values: dict[str, Any]) -> bool:
        """Insert one row unless its id (or another unique key) is taken; True if inserted.
        Concurrent inserts of one id store it once: PostgreSQL makes the second wait for the
        first to commit and then skips it; SQLite has one writer at a time."""
        self.flush(table)
        ct = compiled(table, self.conn.dialect)
        row = {
            **ct.defaults,
            **values,
            "account_id": self.scope.account_id,
            "livemode": self.scope.livemode,
        }
        cur = self._cursor()
        try:
            cur.execute(ct.insert_ignore_sql, ct.insert_params(row), **POINT[self.dialect])
            inserted = cur.rowcount == 1
        finally:
            cur.close()
        if inserted:
            self.wrote = True
        return inserted

    def insert_many_unless_exists(self, table: sa.Table, rows: list[dict[str, Any]]) -> set[str]:
        """Insert rows of distinct ids, each unless its id is taken; the ids inserted. One
        statement for the batch: SQLite (one writer at a time) leaves out the ids it finds, then
        inserts the rest in one executemany; PostgreSQL pipelines insert-if-absent statements
        and reads back the ids each one returns (concurrent inserts of an id store it once)."""
        if not rows:
            return set()
        self.flush(table)
        ct = compiled(table, self.conn.dialect)
        scope = {"account_id": self.scope.account_id, "livemode": self.scope.livemode}
        cur = self._cursor()
        try:
            if self.dialect == "sqlite":
                ids = [r["id"] for r in rows]
                taken: set[str] = set()
                for i in range(0, len(ids), 500):
                    part = ids[i : i + 500]
                    cur.execute(
                        f"SELECT id FROM {ct.name} WHERE account_id = ? AND livemode = ? "
                        f"AND id IN ({', '.join('?' * len(part))})",
                        [self.scope.account_id, self.scope.livemode, *part],
                    )
                    taken.update(r[0] for r in cur.fetchall())
                fresh = [r for r in rows if r["id"] not in taken]
                if fresh:
                    cur.executemany(
                        ct.insert_sql, [ct.insert_params({**r, **scope}) for r in fresh]
                    )
                    self.wrote = True
                return {r["id"] for r in fresh}
            cur.executemany(
                ct.insert_ignore_sql + " RETURNING id",
                [ct.insert_params({**r, **scope}) for r in rows],
                returning=True,
            )
            inserted: set[str] = set()
            while True:
                for (rid,) in cur.fetchall():
                    inserted.add(rid)
                if not cur.nextset():
                    break
            if inserted:
                self.wrote = True
            return inserted
        finally:
            cur.close()

    def encode_rows(self, table: sa.Table, rows: list[dict[str, Any]]) -> list[list[Any]]:
        """Rows of this scope as the parameters of `table`'s insert (for `add_unless_exists`,
        so that the encoding can happen before the write transaction)."""
        ct = compiled(table, self.conn.dialect)
        scope = {"account_id": self.scope.account_id, "livemode": self.scope.livemode}
        return [ct.insert_params({**r, **scope}) for r in rows]

    def add_unless_exists(
        self,
        table: sa.Table,
        rows: list[dict[str, Any]],
        *,
        order: str | None = None,
        encoded: list[list[Any]] | None = None,
    ) -> int | None:
        """Insert rows of distinct ids, each unless its id is taken (as `insert_many_unless_exists`),
        without saying which were new. Inside `deferred_inserts` the rows are held back and
        inserted with those of the other requests of the batch, in one statement per table and
        scope (on SQLite sorted by `order`, stable); returns None then. Otherwise they are
        inserted at once and the number stored is returned. `encoded`: the rows as
        `encode_rows` gave them, in this scope."""
        if not rows:
            return 0
        grouped = self.conn.info.get(_GROUPED)
        if grouped is None:
            return len(self.insert_many_unless_exists(table, rows))
        ct = compiled(table, self.conn.dialect)
        key = (
            table,
            (self.scope.account_id, self.scope.livemode),
            ct.insert_columns.index(order) if order is not None else None,
        )
        grouped.setdefault(key, []).extend(
            encoded if encoded is not None else self.encode_rows(table, rows)
        )
        self.wrote = True
        return None

    def validation_epoch(self) -> int | None:
        """SQLite: the counter that moves on every change of customers, meters and test clocks
        (`tables.change_epochs`); None on PostgreSQL, which keeps no such counter."""
        if self.dialect != "sqlite":
            return None
        cur = self._cursor()
        try:
            cur.execute("SELECT n FROM change_epochs WHERE name = 'validation'")
            row = cur.fetchone()
        finally:
            cur.close()
        return int(row[0]) if row is not None else None

    def get_many(
        self, table: sa.Table, ids: Sequence[str], columns: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        """`columns` of the rows of these ids that exist, by id (one statement per 500 ids)."""
        self.flush(table)
        ct = compiled(table, self.conn.dialect)
        cols = ", ".join(ct.quote(c) for c in ("id", *columns))
        decoders = [dec for name in columns for _, n, dec in ct.decoders if n == name]
        out: dict[str, dict[str, Any]] = {}
        ids = list(ids)
        cur = self._cursor()
        try:
            # The ids travel as one parameter (a JSON array on SQLite, an array on PostgreSQL),
            # so the statement's text is the same for any number of ids and stays prepared.
            if self.dialect == "sqlite":
                sql = (
                    f"SELECT {cols} FROM {ct.name} WHERE account_id = ? AND livemode = ? "
                    "AND id IN (SELECT value FROM json_each(?))"
                )
            else:
                sql = (
                    f"SELECT {cols} FROM {ct.name} WHERE account_id = %s AND livemode = %s "
                    "AND id = ANY(%s)"
                )
            for i in range(0, len(ids), 500):
                part = ids[i : i + 500]
                cur.execute(
                    sql,
                    [
                        self.scope.account_id,
                        self.scope.livemode,
                        orjson.dumps(part).decode() if self.dialect == "sqlite" else part,
                    ],
                )
                for row in cur.fetchall():
                    out[row[0]] = {
                        name: dec(v) if dec is not None and v is not None else v
                        for name, dec, v in zip(columns, decoders, row[1:], strict=True)
                    }
        finally:
            cur.close()
        return out

    def update(
        self,
        table: sa.Table,
        id: str,
        values: dict[str, Any],
        *,
        expect: dict[str, Any] | None = None,
    ) -> int:
        """Update the row `id`; with `expect`, only if its columns still hold those values (a
        compare-and-set). Returns the rows changed (0 or 1)."""
        if not values:
            return 0
        self.flush(table)
        self.wrote = True
        ct = compiled(table, self.conn.dialect)
        names = list(values)
        conds = tuple(expect or ())
        params = [ct.encode(n, values[n]) for n in names] + [
            self.scope.account_id,
            self.scope.livemode,
            id,
        ]
        params += [ct.encode(c, expect[c]) for c in conds]  # type: ignore[index]
        cur = self._cursor()
        try:
            cur.execute(ct.update_sql(names, conds), params, **POINT[self.dialect])
            return cur.rowcount
        finally:
            cur.close()

    def rows_by(
        self, table: sa.Table, column: str, value: Any, *, order: str = "seq"
    ) -> list[dict[str, Any]]:
        """Every row of the scope whose `column` is `value`, in `order` (one precompiled
        statement, e.g. an invoice's lines)."""
        ct = compiled(table, self.conn.dialect)
        self.flush(table)
        cur = self._cursor()
        try:
            cur.execute(
                ct.rows_by_sql(column, order),
                (self.scope.account_id, self.scope.livemode, value),
            )
            return [ct.decode(r) for r in cur.fetchall()]
        finally:
            cur.close()

    def update_where(self, table: sa.Table, where: Sequence[Any], values: dict[str, Any]) -> int:
        self.flush(table)
        self.wrote = True
        q = table.update().where(*self._own(table), *where).values(**values)
        return self.conn.execute(q).rowcount

    def page(
        self,
        table: sa.Table,
        where: Sequence[Any],
        *,
        limit: int,
        starting_after: str | None = None,
        ending_before: str | None = None,
    ) -> tuple[list[RowMapping], bool]:
        """Newest first (`created` desc, then insertion order desc), `limit` rows, and has_more."""
        self.flush(table)
        c_created, c_seq = table.c.created, table.c.seq
        q = self.select(table, *where)
        cursor_id = starting_after or ending_before
        if cursor_id is not None:
            cur = self.conn.execute(
                sa.select(c_created, c_seq).where(*self._own(table), table.c.id == cursor_id)
            ).first()
            if cur is None:
                raise CursorMissing(
                    "starting_after" if starting_after else "ending_before", cursor_id
                )
            created, seq = cur
            if starting_after:
                q = q.where(sa.or_(c_created < created, sa.and_(c_created == created, c_seq < seq)))
            else:
                q = q.where(sa.or_(c_created > created, sa.and_(c_created == created, c_seq > seq)))
        if ending_before:
            q = q.order_by(c_created.asc(), c_seq.asc())
        else:
            q = q.order_by(c_created.desc(), c_seq.desc())
        rows = list(self.conn.execute(q.limit(limit + 1)).mappings())
        has_more = len(rows) > limit
        rows = rows[:limit]
        if ending_before:
            rows.reverse()
        return rows, has_more

    def lock(self, kind: str, name: str) -> None:
        """Hold `name` of `kind` ("prices.lookup_key", "products.id") in this scope until the
        transaction ends, so that a check-then-insert on it cannot race another request into a
        unique violation. PostgreSQL: a transaction advisory lock on two 32-bit keys (a space apart
        from the idempotency locks' 64-bit keys; a hash collision only serializes two requests);
        SQLite already runs one writer at a time."""
        self.flush()
        if self.dialect != "postgresql":
            return
        ns, key = (
            int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big", signed=True)
            for text in (kind, f"{self.scope.account_id}|{self.scope.livemode}|{name}")
        )
        self.conn.exec_driver_sql(
            "SELECT pg_advisory_xact_lock(%(ns)s, %(key)s)", {"ns": ns, "key": key}
        )
