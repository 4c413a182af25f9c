"""The database floor: the least database work each benchmarked operation needs.

The same two routes as bench/bare_app.py, under the same uvicorn settings, but every
request touches the database the way meterline's would at the very least, and does
nothing else: no auth, no idempotency, no Stripe wire encoding.

- GET /v1/customers/{id}: one indexed point SELECT of a customer row by id.
- POST /v1/customers: one INSERT of a customer row, committed durably, and a small JSON.

Each worker process opens one connection with the plain driver (sqlite3 or psycopg 3)
at startup, creates the table if it is missing (shaped like meterline's customers
table, with its indexes) and seeds one row, `cus_floorseed`. Queries run directly in
the handlers, blocking the event loop, as meterline's do. Writes are durable: SQLite
runs in WAL mode with synchronous=NORMAL; PostgreSQL keeps the server's default
synchronous_commit (on). Each INSERT runs in its own implicit transaction (autocommit),
which commits when the statement ends: the same durability as BEGIN/INSERT/COMMIT
without the two extra round trips.

Configured by the environment:

    FLOOR_DATABASE_URL  a SQLite file path (or sqlite:///path) or a postgresql:// URL

Run by bench/run.py as

    FLOOR_DATABASE_URL=... uvicorn bench.floor_app:app --workers 2 --http httptools --loop uvloop
"""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ACCOUNT = "acct_floor"
SEED_ID = "cus_floorseed"

# meterline's customers table (src/meterline/store/tables.py), column for column.
COLUMNS = (
    "id, account_id, livemode, created, deleted, email, name, description, phone,"
    " address, preferred_locales, invoice_prefix, metadata, test_clock"
)
SELECT_COLUMNS = "seq, " + COLUMNS
TABLE = {
    "sqlite": """
        CREATE TABLE IF NOT EXISTS customers (
            seq INTEGER PRIMARY KEY,
            id VARCHAR(255) NOT NULL,
            account_id VARCHAR(64) NOT NULL,
            livemode BOOLEAN NOT NULL,
            created BIGINT NOT NULL,
            deleted BOOLEAN NOT NULL,
            email VARCHAR(512),
            name VARCHAR(256),
            description TEXT,
            phone VARCHAR(64),
            address JSON,
            preferred_locales JSON,
            invoice_prefix VARCHAR(32),
            metadata JSON NOT NULL,
            test_clock VARCHAR(255),
            CONSTRAINT uq_customers_id UNIQUE (id, account_id, livemode)
        )""",
    "postgresql": """
        CREATE TABLE IF NOT EXISTS customers (
            seq BIGSERIAL PRIMARY KEY,
            id VARCHAR(255) NOT NULL,
            account_id VARCHAR(64) NOT NULL,
            livemode BOOLEAN NOT NULL,
            created BIGINT NOT NULL,
            deleted BOOLEAN NOT NULL,
            email VARCHAR(512),
            name VARCHAR(256),
            description TEXT,
            phone VARCHAR(64),
            address JSON,
            preferred_locales JSON,
            invoice_prefix VARCHAR(32),
            metadata JSON NOT NULL,
            test_clock VARCHAR(255),
            CONSTRAINT uq_customers_id UNIQUE (id, account_id, livemode)
        )""",
}
INDEXES = (
    "CREATE INDEX IF NOT EXISTS ix_customers_list"
    " ON customers (account_id, livemode, created, seq)",
    "CREATE INDEX IF NOT EXISTS ix_customers_email ON customers (account_id, livemode, email)",
)


def _sql(dialect: str, text: str) -> str:
    return text if dialect == "sqlite" else text.replace("?", "%s")


SELECT = f"SELECT {SELECT_COLUMNS} FROM customers WHERE id = ? AND account_id = ? AND livemode = ?"
INSERT = (
    f"INSERT INTO customers ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, NULL,"
    " NULL, ?, NULL)"
)
SEED = INSERT + " ON CONFLICT (id, account_id, livemode) DO NOTHING"


def database_target() -> tuple[str, str]:
    """('sqlite', path) or ('postgresql', url) from FLOOR_DATABASE_URL."""
    url = os.environ.get("FLOOR_DATABASE_URL", "")
    if not url:
        raise RuntimeError("FLOOR_DATABASE_URL is not set")
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        return "postgresql", url
    if url.startswith("sqlite:///"):
        return "sqlite", url[len("sqlite:///") :]
    if "://" in url:
        raise RuntimeError(f"FLOOR_DATABASE_URL: unsupported URL {url!r}")
    return "sqlite", url


class Floor:
    """One connection, the two statements."""

    def __init__(self) -> None:
        self.dialect, target = database_target()
        self.select = _sql(self.dialect, SELECT)
        self.insert = _sql(self.dialect, INSERT)
        if self.dialect == "sqlite":
            # isolation_level=None: autocommit, each INSERT commits on its own.
            self.conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
            self.conn.execute("PRAGMA busy_timeout=30000")
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
        else:
            import psycopg

            self.conn = psycopg.connect(target, autocommit=True)
        self._setup()

    def _setup(self) -> None:
        """Create the table and indexes if missing and seed one row; serialized across
        the workers (SQLite: the write lock; PostgreSQL: an advisory lock)."""
        seed = (SEED_ID, ACCOUNT, False, int(time.time()), False, "seed@example.com", "seed", "{}")
        statements = [TABLE[self.dialect], *INDEXES]
        if self.dialect == "sqlite":
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                for stmt in statements:
                    self.conn.execute(stmt)
                self.conn.execute(SEED, seed)
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            return
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(74150231)")
            for stmt in statements:
                self.conn.execute(stmt)
            self.conn.execute(_sql("postgresql", SEED), seed)
            self.conn.execute("ANALYZE customers")

    def get(self, customer_id: str) -> tuple | None:
        return self.conn.execute(self.select, (customer_id, ACCOUNT, False)).fetchone()

    def create(self, row: tuple) -> None:
        self.conn.execute(self.insert, row)

    def close(self) -> None:
        self.conn.close()


class ORJSONResponse(Response):
    media_type = "application/json"

    def render(self, content: object) -> bytes:
        return orjson.dumps(content)


_floor: Floor | None = None


async def retrieve_customer(request: Request) -> Response:
    row = _floor.get(request.path_params["id"])
    if row is None:
        return ORJSONResponse({"error": {"type": "invalid_request_error"}}, status_code=404)
    metadata = row[13]
    return ORJSONResponse(
        {
            "id": row[1],
            "object": "customer",
            "created": row[4],
            "email": row[6],
            "livemode": bool(row[3]),
            "metadata": orjson.loads(metadata) if isinstance(metadata, str) else metadata,
            "name": row[7],
        }
    )


async def create_customer(request: Request) -> Response:
    form = dict(parse_qsl((await request.body()).decode()))
    customer_id = "cus_" + os.urandom(12).hex()
    created = int(time.time())
    email, name = form.get("email"), form.get("name")
    _floor.create((customer_id, ACCOUNT, False, created, False, email, name, "{}"))
    return ORJSONResponse(
        {
            "id": customer_id,
            "object": "customer",
            "created": created,
            "email": email,
            "livemode": False,
            "metadata": {},
            "name": name,
        }
    )


@asynccontextmanager
async def lifespan(_app: Starlette):
    global _floor
    _floor = Floor()
    try:
        yield
    finally:
        _floor.close()
        _floor = None


app = Starlette(
    routes=[
        Route("/v1/customers/{id}", retrieve_customer, methods=["GET"]),
        Route("/v1/customers", create_customer, methods=["POST"]),
    ],
    lifespan=lifespan,
)
