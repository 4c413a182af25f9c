"""Engines and transactions. The only module that knows SQLite from PostgreSQL.

SQLite runs in WAL mode with `synchronous=NORMAL` and a busy timeout, and write transactions
begin IMMEDIATE so that concurrent writers queue instead of failing on lock upgrades.
PostgreSQL URLs (`postgresql://`) use psycopg 3.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

DEFAULT_URL = "sqlite:///./meterline.db"


def normalize_url(url: str) -> str:
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    if not (url.startswith("sqlite:") or url.startswith("postgresql+psycopg://")):
        raise ValueError(
            f"Unsupported database URL {url!r}: use sqlite:///path/to/file.db or postgresql://user@host:port/db"
        )
    return url


def _json_dumps(v: Any) -> str:
    return orjson.dumps(v).decode()


def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = sa.create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=16,
            max_overflow=48,
            json_serializer=_json_dumps,
            json_deserializer=orjson.loads,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn: Any, _rec: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Connection) -> None:
            mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine
    return sa.create_engine(
        url,
        pool_size=10,
        max_overflow=40,
        pool_pre_ping=False,
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
    )


class Database:
    """An engine plus the two kinds of transaction every request uses."""

    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        self.engine = make_engine(self.url)
        self.dialect = self.engine.dialect.name

    @contextmanager
    def write(self, *, durable: bool = True) -> Iterator[Connection]:
        """A read-write transaction; SQLite takes the write lock at BEGIN.
        `durable=False` lets PostgreSQL skip waiting for the WAL flush (for markers whose loss
        in a crash is harmless)."""
        with self.engine.connect() as conn:
            if self.dialect == "sqlite":
                conn = conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                if not durable and self.dialect == "postgresql":
                    conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
                yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction (one consistent snapshot); rolled back at the end."""
        with self.engine.connect() as conn:
            with conn.begin() as tx:
                yield conn
                tx.rollback()

    def dispose(self) -> None:
        self.engine.dispose()
