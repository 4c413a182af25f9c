"""The real application built in this process, served by a real uvicorn server on a thread.

For tests that need to add a route of their own (a handler that fails, a v2 echo) to the
application that `meterline serve` would run. The database is a fresh one of the kind the
suite runs on (`--db`), migrated, with one secret key.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from conftest import free_port, fresh_database_url
from meterline.api.app import MeterlineApp
from meterline.api.factory import build_app
from meterline.services.accounts import create_key
from meterline.store.db import Database
from meterline.store.migrate import upgrade


@dataclass
class Running:
    app: MeterlineApp
    base_url: str
    key: str

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, auth=(self.key, ""), timeout=30)


def fresh_app(db_kind: str, tmp_dir: Path) -> tuple[MeterlineApp, str, callable]:
    """(app, secret key, cleanup) on a new, migrated database."""
    url, drop = fresh_database_url(db_kind, tmp_dir)
    setup = Database(url)
    try:
        upgrade(setup.engine)
        _, key = create_key(setup)
    finally:
        setup.dispose()
    return build_app(url), key, drop


@contextmanager
def serve(app: MeterlineApp, key: str) -> Iterator[Running]:
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the in-process uvicorn server did not start")
        time.sleep(0.02)
    try:
        yield Running(app, f"http://127.0.0.1:{port}", key)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
