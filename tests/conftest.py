"""Test fixtures: a real database (SQLite file or a fresh PostgreSQL schema), a real
`meterline serve` process on a free port, and the official Stripe SDK pointed at it.

`--db=sqlite` (default) or `--db=postgresql`. With `--db=postgresql` the URL comes from
METERLINE_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test); a database that
cannot be reached fails the run, it never skips.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import stripe

ROOT = Path(__file__).resolve().parent.parent
MELINE = [sys.executable, "-m", "meterline"]
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db",
        default="sqlite",
        choices=["sqlite", "postgresql"],
        help="database engine for the suite",
    )


@pytest.fixture(scope="session")
def db_kind(request: pytest.FixtureRequest) -> str:
    return request.config.getoption("--db")


def _pg_admin_url() -> str:
    return os.environ.get("METERLINE_TEST_POSTGRES_URL", DEFAULT_PG)


def fresh_database_url(kind: str, tmp_dir: Path) -> tuple[str, callable]:
    """A URL for an empty database, and a function that removes it."""
    if kind == "sqlite":
        path = tmp_dir / f"meterline-{secrets.token_hex(4)}.db"
        return f"sqlite:///{path}", lambda: None
    import psycopg

    admin = _pg_admin_url()
    schema = "t_" + secrets.token_hex(6)
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.OperationalError as e:
        pytest.fail(
            f"PostgreSQL at {admin} is required for --db=postgresql and could not be reached: {e}"
        )
    sep = "&" if "?" in admin else "?"

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    return f"{admin}{sep}options=-csearch_path%3D{schema}", drop


@pytest.fixture(scope="session")
def database_url(db_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url, drop = fresh_database_url(db_kind, tmp_path_factory.mktemp("db"))
    yield url
    drop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    base_url: str
    key: str
    database_url: str
    proc: subprocess.Popen

    def new_key(self, *, new_account: bool = False, live: bool = False) -> str:
        args = [*MELINE, "keys", "create", "--database-url", self.database_url]
        if new_account:
            args.append("--new-account")
        if live:
            args.append("--live")
        out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
        return out.strip().splitlines()[-1]

    def client(self, key: str | None = None, **kw) -> stripe.StripeClient:
        return stripe.StripeClient(
            key or self.key,
            base_addresses={"api": self.base_url, "meter_events": self.base_url},
            max_network_retries=0,
            **kw,
        )

    def http(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, auth=(key or self.key, ""), timeout=30)

    def wait_drained(self, timeout: float = 20.0) -> None:
        """Wait until the stream's landing log is empty: every stream event acknowledged so far
        has been moved into meter_events by the server's drain."""
        wait_drained(self.database_url, timeout)


def wait_drained(database_url: str, timeout: float = 20.0) -> None:
    from meterline.store import inbox
    from meterline.store.db import Database

    db = Database(database_url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            with db.read() as conn:
                if not inbox.pending(conn):
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"the stream's landing log did not empty within {timeout} s")
            time.sleep(0.02)
    finally:
        db.dispose()


def start_server(database_url: str, *, workers: int = 2, log: Path) -> Server:
    port = free_port()
    key = "sk_test_" + secrets.token_hex(12)
    logf = open(log, "wb")
    proc = subprocess.Popen(
        [
            *MELINE,
            "serve",
            "--port",
            str(port),
            "--database-url",
            database_url,
            "--workers",
            str(workers),
            "--api-key",
            key,
            "--log-level",
            "warning",
            # Stream events reach meter_events this long after their 200 (tests that read them
            # wait for the landing log to empty: `wait_drained`).
            "--drain-interval",
            "0.05",
        ],
        stdout=logf,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"meterline serve exited early:\n{log.read_text()}")
        try:
            r = httpx.get(base + "/v1/customers", auth=(key, ""), timeout=2)
            if r.status_code == 200:
                return Server(base, key, database_url, proc)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"meterline serve did not answer within 60 s:\n{log.read_text()}")


def stop_server(server: Server) -> None:
    import signal

    try:
        os.killpg(server.proc.pid, signal.SIGTERM)
        server.proc.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(server.proc.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(database_url, log=tmp_path_factory.mktemp("log") / "serve.log")
    yield s
    stop_server(s)


@pytest.fixture(scope="session")
def client(server: Server) -> stripe.StripeClient:
    return server.client()


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with server.http() as c:
        yield c
