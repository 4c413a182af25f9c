"""Precompiled point statements (get, insert, update by id) run on the DBAPI cursor.

The request hot path (retrieve, create) spends most of its time in statement construction and
result processing when it goes through SQLAlchemy's general machinery; these statements are
built once per table and dialect, and rows are converted with the same types SQLAlchemy would
give (bool, JSON, exact Decimal). On PostgreSQL a point get by id on a reader (autocommit)
connection goes straight to libpq (`pg_get`): psycopg's cursor costs several times the
statement's own client time. Everything here is still scoped by `Repo`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson
import psycopg
import sqlalchemy as sa
from psycopg import pq

from meterline.store.types import DecimalText


def _json_out(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, (bytes, str)):
        return orjson.loads(v)
    return v  # psycopg already decoded json


def _json_in(v: Any) -> Any:
    return None if v is None else orjson.dumps(v).decode()


def json_value(v: Any) -> Any:
    """What orjson cannot write, as PostgreSQL's input reads it: exact decimals as their text,
    bytes as bytea's hex."""
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(v).hex()
    raise TypeError(f"cannot store {type(v).__name__} in a JSON row")


def _bool_out(v: Any) -> Any:
    return None if v is None else bool(v)


def _dec_out(v: Any) -> Any:
    return None if v is None else Decimal(v)


def _dec_in_sqlite(v: Any) -> Any:
    return None if v is None else str(Decimal(v))


def _dec_in_pg(v: Any) -> Any:
    return None if v is None else Decimal(v)


class CompiledTable:
    def __init__(self, table: sa.Table, dialect: str, quote: Callable[[str], str]) -> None:
        self.table = table
        self.columns = [str(c.name) for c in table.columns]  # plain str: JSON keys
        self.insert_columns = [c for c in self.columns if c != "seq"]
        ph = "?" if dialect == "sqlite" else "%s"
        self.ph = ph
        self.quote = quote
        cols = ", ".join(quote(c) for c in self.columns)
        name = quote(table.name)
        self.get_sql = (
            f"SELECT {cols} FROM {name} WHERE account_id = {ph} AND livemode = {ph} AND id = {ph}"
        )
        self.get_for_update_sql = self.get_sql + (" FOR UPDATE" if dialect == "postgresql" else "")
        ins = ", ".join(quote(c) for c in self.insert_columns)
        self.insert_sql = (
            f"INSERT INTO {name} ({ins}) VALUES ({', '.join([ph] * len(self.insert_columns))})"
        )
        # Both dialects: skip a row that would break a unique key (its id in its scope).
        self.insert_ignore_sql = self.insert_sql + " ON CONFLICT DO NOTHING"
        # PostgreSQL: any number of rows in one statement of fixed text (prepared once) with one
        # parameter, the rows as a JSON array that the server reads into the table's row type
        # (each value through its column type's input, as an insert's would be: a string too long
        # for its column is refused, a decimal stays exact).
        self.insert_rows_sql: str | None = None
        if dialect == "postgresql":
            self.insert_rows_sql = (
                f"INSERT INTO {name} ({ins}) SELECT {ins} "
                f"FROM json_populate_recordset(NULL::{name}, %s::json)"
            )
        self.name = name
        self._get_by: dict[str, str] = {}
        self._update: dict[tuple[tuple[str, ...], tuple[str, ...]], str] = {}
        self._rows_by: dict[tuple[str, str], str] = {}
        self._insert_plan: list[tuple[str, Callable[[Any], Any] | None, Any]] | None = None
        self.defaults = {
            c.name: c.default.arg
            for c in table.columns
            if c.default is not None and getattr(c.default, "is_scalar", False)
        }
        # PostgreSQL, `pg_get`: the statements with $n placeholders and their names, and how to
        # read each column's text (None: a column type it does not know, so it is not used).
        self.pg_get: dict[bool, tuple[bytes, bytes]] = {}
        for for_update in (False, True):
            sql = self.get_for_update_sql if for_update else self.get_sql
            parts = sql.split("%s")
            numbered = parts[0] + "".join(f"${i}{p}" for i, p in enumerate(parts[1:], 1))
            name = f"meterline_get{'_for_update' if for_update else ''}_{table.name}"
            self.pg_get[for_update] = (name.encode(), numbered.encode())
        self.pg_text: list[tuple[str, Callable[[bytes], Any]]] | None = []
        for c in table.columns:
            reader = _pg_text_reader(c.type)
            if reader is None:
                self.pg_text = None
                break
            self.pg_text.append((str(c.name), reader))
        self.decoders: list[tuple[int, str, Callable[[Any], Any] | None]] = []
        self.encoders: dict[str, Callable[[Any], Any]] = {}
        for i, c in enumerate(table.columns):
            dec: Callable[[Any], Any] | None = None
            if isinstance(c.type, sa.JSON):
                dec = _json_out
                self.encoders[c.name] = _json_in
            elif isinstance(c.type, sa.Boolean):
                dec = _bool_out if dialect == "sqlite" else None
            elif isinstance(c.type, DecimalText):
                dec = _dec_out
                self.encoders[c.name] = _dec_in_sqlite if dialect == "sqlite" else _dec_in_pg
            self.decoders.append((i, c.name, dec))

    def decode(self, row: tuple[Any, ...]) -> dict[str, Any]:
        out = {}
        for i, name, dec in self.decoders:
            v = row[i]
            out[name] = dec(v) if dec is not None and v is not None else v
        return out

    def encode(self, name: str, v: Any) -> Any:
        enc = self.encoders.get(name)
        return enc(v) if enc is not None else v

    def insert_params(self, values: dict[str, Any]) -> list[Any]:
        plan = self._insert_plan
        if plan is None:
            plan = self._insert_plan = [
                (c, self.encoders.get(c), self.defaults.get(c)) for c in self.insert_columns
            ]
        out = []
        for c, enc, default in plan:
            v = values.get(c, default)
            out.append(v if enc is None or v is None else enc(v))
        return out

    def insert_rows_param(self, rows: list[dict[str, Any]]) -> str:
        """Rows (as given to `insert_params`, not encoded) as the parameter of `insert_rows_sql`."""
        defaults = self.defaults
        return orjson.dumps(
            [{c: row.get(c, defaults.get(c)) for c in self.insert_columns} for row in rows],
            default=json_value,
        ).decode()

    def get_by_sql(self, column: str) -> str:
        """SELECT one row by a column that is unique in the scope (a unique index's last part)."""
        sql = self._get_by.get(column)
        if sql is None:
            sql = self.get_sql.rsplit(" id = ", 1)[0] + f" {self.quote(column)} = {self.ph}"
            self._get_by[column] = sql
        return sql

    def update_sql(self, names: list[str], expect: tuple[str, ...] = ()) -> str:
        key = (tuple(names), expect)
        sql = self._update.get(key)
        if sql is None:
            sets = ", ".join(f"{self.quote(n)} = {self.ph}" for n in names)
            ph = self.ph
            sql = f"UPDATE {self.name} SET {sets} WHERE account_id = {ph} AND livemode = {ph} AND id = {ph}"
            sql += "".join(f" AND {self.quote(c)} = {ph}" for c in expect)
            self._update[key] = sql
        return sql

    def rows_by_sql(self, column: str, order: str) -> str:
        """SELECT the rows whose `column` is a value, in `order` (a column name)."""
        key = (column, order)
        sql = self._rows_by.get(key)
        if sql is None:
            sql = (
                self.get_sql.rsplit(" id = ", 1)[0]
                + f" {self.quote(column)} = {self.ph} ORDER BY {self.quote(order)}"
            )
            self._rows_by[key] = sql
        return sql


def _pg_text_reader(t: Any) -> Callable[[bytes], Any] | None:
    """How to read a column of this type from PostgreSQL's text output, as psycopg and the
    decoders above would give it."""
    if isinstance(t, DecimalText):
        return lambda b: Decimal(b.decode())
    if isinstance(t, sa.JSON):
        return orjson.loads
    if isinstance(t, sa.Boolean):
        return lambda b: b == b"t"
    if isinstance(t, (sa.Integer, sa.BigInteger)):
        return int
    if isinstance(t, (sa.String, sa.Text)) and not isinstance(t, sa.Enum):
        return lambda b: b.decode()
    return None


_NOT_HERE = object()
_prepared: weakref.WeakKeyDictionary[Any, set[bytes]] = weakref.WeakKeyDictionary()


def pg_get(raw: Any, ct: CompiledTable, scope: Any, id: str, for_update: bool) -> Any:
    """`Repo.get` on libpq, for a connection in autocommit (the readers): one prepared statement,
    its text result read by the column types. Returns the row, None, or `pg_get.NOT_HERE` when
    the connection is in no state for it (in a transaction, or not UTF-8): the caller then uses
    the cursor. A failure raises psycopg's error for it, as the cursor would.

    Only in autocommit: psycopg deallocates every prepared statement of a connection on some
    commands (a rollback among them), ours too; outside a transaction, executing one that is
    gone fails harmlessly, and it is prepared again."""
    text = ct.pg_text
    pgconn = raw.pgconn
    if text is None or not raw.autocommit or pgconn.transaction_status != pq.TransactionStatus.IDLE:
        return _NOT_HERE
    made = _prepared.get(raw)
    if made is None:
        if raw.info.encoding != "utf-8":
            return _NOT_HERE
        made = _prepared[raw] = set()
    name, sql = ct.pg_get[for_update]
    params = [scope.account_id.encode(), b"t" if scope.livemode else b"f", id.encode()]
    for _attempt in range(2):
        if name not in made:
            res = pgconn.prepare(name, sql)
            if res.status != pq.ExecStatus.COMMAND_OK:
                raise psycopg.errors.error_from_result(res, encoding="utf-8")
            made.add(name)
        res = pgconn.exec_prepared(name, params)
        if res.status == pq.ExecStatus.TUPLES_OK:
            break
        error = psycopg.errors.error_from_result(res, encoding="utf-8")
        if error.sqlstate != "26000" or _attempt:  # 26000: no such prepared statement
            raise error
        made.clear()
    if res.ntuples == 0:
        return None
    get = res.get_value
    out = {}
    for i, (name_, read) in enumerate(text):
        v = get(0, i)
        out[name_] = None if v is None else read(v)
    return out


pg_get.NOT_HERE = _NOT_HERE  # type: ignore[attr-defined]


# PostgreSQL connections prepare nothing on their own (the threshold in db.py is out of reach): a
# generic plan made while a table was small is kept as it grows, so only statements whose plan
# cannot go wrong (by primary or unique key, and inserts) are prepared, here, explicitly.
POINT = {"postgresql": {"prepare": True}, "sqlite": {}}


_cache: dict[tuple[str, str], CompiledTable] = {}


def compiled(table: sa.Table, dialect: Any) -> CompiledTable:
    key = (table.name, dialect.name)
    ct = _cache.get(key)
    if ct is None:
        ct = CompiledTable(table, dialect.name, dialect.identifier_preparer.quote)
        _cache[key] = ct
    return ct
