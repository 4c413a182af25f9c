"""Engines and transactions. The only module that knows SQLite from PostgreSQL.

SQLite runs in WAL mode with `synchronous=NORMAL` and a busy timeout, and write transactions
begin IMMEDIATE so that concurrent writers queue instead of failing on lock upgrades.
PostgreSQL URLs (`postgresql://`) use psycopg 3.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

DEFAULT_URL = "sqlite:///./meterline.db"
WRITER_CACHE_KIB = 64 * 1024  # SQLite page cache of each writer connection (the default: 2 MiB)


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


def make_engine(url: str, *, autocheckpoint: bool = True) -> Engine:
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
            if not autocheckpoint:
                # A background thread checkpoints instead (see Database.start_checkpointer):
                # an automatic checkpoint runs inside a writer's commit, while it holds the lock.
                cur.execute("PRAGMA wal_autocheckpoint=0")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Connection) -> None:
            if conn.connection.driver_connection.in_transaction:  # type: ignore[union-attr]
                return  # Database.read() began it on the driver connection
            mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine
    return sa.create_engine(
        url,
        # No automatic prepared statements: see store/fast.py (POINT). (`None` would disable even
        # the explicit ones, so the threshold is set out of reach instead.)
        connect_args={"prepare_threshold": 2**31 - 1},
        pool_size=10,
        max_overflow=40,
        pool_pre_ping=False,
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
    )


class _WriterLock:
    """Queues SQLite writers of every process on a file lock next to the database.

    SQLite's own busy handler sleeps in steps of up to 100 ms while it waits for the write lock,
    which under load wastes most of the time the lock is free; a blocking `flock` wakes the next
    writer as soon as the lock is released. A thread lock orders the threads of one process,
    since `flock` is held per open file, not per thread.
    """

    def __init__(self, database: str | None) -> None:
        self._thread_lock = threading.Lock()
        self._fd: int | None = None
        if database and database != ":memory:":
            self._fd = os.open(database + ".writelock", os.O_RDWR | os.O_CREAT, 0o644)

    def __enter__(self) -> None:
        self._thread_lock.acquire()
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except BaseException:
                self._thread_lock.release()
                raise

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._thread_lock.release()


class Database:
    """An engine plus the two kinds of transaction every request uses.

    Each thread keeps its own long-lived connections (one for reads, one for writes), so a
    request pays neither a pool checkout nor a connect. A connection that fails is dropped and
    replaced on the next use.
    """

    def __init__(self, url: str, *, background_checkpoint: bool = False) -> None:
        self.url = normalize_url(url)
        self.engine = make_engine(self.url, autocheckpoint=not background_checkpoint)
        self.dialect = self.engine.dialect.name
        self._local = threading.local()
        self._writer_lock = (
            _WriterLock(self.engine.url.database) if self.dialect == "sqlite" else None
        )

    def _conn(self, kind: str) -> Connection:
        conn = getattr(self._local, kind, None)
        if conn is None or conn.closed or conn.invalidated:
            conn = self.engine.connect()
            if kind == "writer" and self.dialect == "sqlite":
                conn = conn.execution_options(sqlite_begin="IMMEDIATE")
                # A write batch of stream requests inserts thousands of rows whose index entries
                # land on as many pages; with SQLite's default 2 MiB cache it read some of them
                # twice within one transaction.
                raw = conn.connection.driver_connection  # type: ignore[union-attr]
                raw.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
            if kind == "reader" and self.dialect == "postgresql":
                # At READ COMMITTED every statement takes its own snapshot even inside a
                # transaction, so BEGIN and ROLLBACK would only add two round trips.
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            setattr(self._local, kind, conn)
        return conn

    def close_thread(self) -> None:
        """Close this thread's connections (for a thread that is about to end: a pool's
        worker thread, whose thread-local connections would otherwise wait for the garbage
        collector)."""
        for kind in ("reader", "writer", "jobs"):
            self._drop(kind)

    def _drop(self, kind: str) -> None:
        conn = getattr(self._local, kind, None)
        setattr(self._local, kind, None)
        if conn is not None:
            try:
                conn.close()
            except Exception:  # pragma: no cover - best effort on a broken connection
                pass

    @contextmanager
    def write(self, *, durable: bool = True) -> Iterator[Connection]:
        """A read-write transaction; SQLite takes the write lock at BEGIN.
        `durable=False` lets PostgreSQL skip waiting for the WAL flush (for records whose loss
        in a crash is harmless)."""
        conn = self._conn("writer")
        if self._writer_lock is not None:
            with self._writer_lock:
                with conn.begin():
                    yield conn
            return
        try:
            with conn.begin():
                if not durable and self.dialect == "postgresql":
                    conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
                yield conn
        except sa.exc.DBAPIError as e:
            if e.connection_invalidated or self.dialect == "postgresql" and conn.invalidated:
                self._drop("writer")
            raise

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only unit: one snapshot on SQLite; on PostgreSQL, autocommit statements (each
        its own snapshot, as at READ COMMITTED inside a transaction). The transaction is driven
        on the driver connection: SQLAlchemy's own begin and rollback cost more than the point
        read they would wrap."""
        conn = self._conn("reader")
        raw = conn.connection.driver_connection  # type: ignore[union-attr]
        sqlite = self.dialect == "sqlite"
        if sqlite:
            raw.execute("BEGIN")
        try:
            yield conn
        except sa.exc.DBAPIError as e:
            if e.connection_invalidated:
                self._drop("reader")
                raise
            self._end_read(conn, raw, sqlite)
            raise
        except BaseException:
            self._end_read(conn, raw, sqlite)
            raise
        else:
            self._end_read(conn, raw, sqlite)

    def _end_read(self, conn: Connection, raw: Any, sqlite: bool) -> None:
        if conn.in_transaction():
            conn.rollback()
        elif sqlite and raw.in_transaction:
            raw.execute("ROLLBACK")

    @contextmanager
    def try_exclusive(self, name: str) -> Iterator[bool]:
        """Whether this process got `name`, held for the block: for jobs that any worker may run
        but one at a time is enough (they stay correct without it). PostgreSQL: a session
        advisory lock on a connection of this thread; SQLite: a file lock beside the database."""
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        if self.dialect == "postgresql":
            conn = self._conn("jobs")
            got = bool(
                conn.exec_driver_sql("SELECT pg_try_advisory_lock(%(k)s)", {"k": key}).scalar()
            )
            conn.commit()
            try:
                yield got
            finally:
                if got:
                    conn.exec_driver_sql("SELECT pg_advisory_unlock(%(k)s)", {"k": key})
                    conn.commit()
            return
        path = self.engine.url.database
        if not path or path == ":memory:":
            yield True
            return
        fd = os.open(f"{path}.{name.replace(':', '-')}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def start_checkpointer(self, interval: float = 0.5) -> None:
        """SQLite: copy the WAL back into the database from a thread of its own, outside any
        writer's lock (PASSIVE: it never blocks readers or writers)."""
        if self.dialect != "sqlite" or getattr(self, "_checkpointer", None) is not None:
            return
        stop = threading.Event()

        def run() -> None:
            import sqlite3

            conn = sqlite3.connect(self.engine.url.database, timeout=1, isolation_level=None)
            try:
                while not stop.wait(interval):
                    try:
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    except sqlite3.Error:
                        continue
            finally:
                conn.close()

        thread = threading.Thread(target=run, name="meterline-checkpoint", daemon=True)
        self._checkpointer = (thread, stop)
        thread.start()

    def dispose(self) -> None:
        cp = getattr(self, "_checkpointer", None)
        if cp is not None:
            cp[1].set()
            cp[0].join(timeout=5)
            self._checkpointer = None
        self._drop("reader")
        self._drop("writer")
        self._drop("jobs")
        self.engine.dispose()


def is_database_error(exc: BaseException) -> bool:
    """Whether an exception came from the database (on PostgreSQL it aborts the transaction)."""
    return isinstance(exc, sa.exc.DBAPIError) or type(exc).__module__.startswith(
        ("sqlite3", "psycopg")
    )


_RETRYABLE_SQLSTATES = {"40P01", "40001"}  # deadlock detected, serialization failure


def is_lock_busy(exc: BaseException) -> bool:
    """PostgreSQL gave up waiting for a lock (`lock_timeout`): contention, not a failure."""
    orig = getattr(exc, "orig", exc)
    return getattr(orig, "sqlstate", None) == "55P03"


def is_retryable(exc: BaseException) -> bool:
    """A database error that aborts the transaction and that a new attempt can clear."""
    orig = getattr(exc, "orig", exc)
    return getattr(orig, "sqlstate", None) in _RETRYABLE_SQLSTATES


# Keys of `Connection.info` under which code remembers something for the rest of a write
# transaction (a lock it holds, rows it read); a savepoint that rolls back forgets them all, since
# the rollback may have undone what they remember. Modules add their keys at import.
TRANSACTION_MEMOS: set[str] = set()
# Keys of `Connection.info` under which a route's `prefetch` remembers rows for the requests of a
# write batch (api.routing.Route.prefetch): forgotten before a request of any other route runs
# in the batch (it may write what they remember), and, being TRANSACTION_MEMOS too, when a
# savepoint rolls back.
BATCH_MEMOS: set[str] = set()


def forget_batch_memos(conn: Connection) -> None:
    for key in BATCH_MEMOS:
        conn.info.pop(key, None)


class ItemSavepoints:
    """One savepoint per item of a batch transaction, with the fewest round trips each dialect
    allows: on PostgreSQL the release of one item travels with the savepoint of the next, and
    COMMIT releases the last."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.raw = conn.connection.driver_connection  # type: ignore[union-attr]
        self.postgresql = conn.dialect.name == "postgresql"
        self._open = False

    def begin(self) -> None:
        if self.postgresql and self._open:
            self.raw.execute("RELEASE SAVEPOINT item; SAVEPOINT item")
        else:
            self.raw.execute("SAVEPOINT item")
        self._open = True

    def ok(self) -> None:
        if not self.postgresql:
            self.raw.execute("RELEASE SAVEPOINT item")
            self._open = False

    def failed(self) -> None:
        for key in TRANSACTION_MEMOS:  # what the savepoint may have undone is read again
            self.conn.info.pop(key, None)
        if self.postgresql:
            self.raw.execute("ROLLBACK TO SAVEPOINT item; RELEASE SAVEPOINT item")
        else:
            self.raw.execute("ROLLBACK TO SAVEPOINT item")
            self.raw.execute("RELEASE SAVEPOINT item")
        self._open = False
