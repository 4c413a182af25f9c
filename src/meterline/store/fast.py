"""Precompiled point statements (get, insert, update by id) run on the DBAPI cursor.

The request hot path (retrieve, create) spends most of its time in statement construction and
result processing when it goes through SQLAlchemy's general machinery; these statements are
built once per table and dialect, and rows are converted with the same types SQLAlchemy would
give (bool, JSON, exact Decimal). Everything here is still scoped by `Repo`.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson
import sqlalchemy as sa

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
