"""The `meterline` command: help texts, key handling, migrations, environment variables."""

from __future__ import annotations

import os
import re
import subprocess
import time

import httpx
import sqlalchemy as sa

from conftest import MELINE, free_port, fresh_database_url
from meterline.store.db import Database


def run(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*MELINE, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=check,
        timeout=60,
    )


def test_every_command_has_help():
    for args in ([], ["serve"], ["migrate"], ["keys"], ["keys", "create"]):
        out = run(*args, "--help").stdout
        assert "Usage:" in out
    serve = run("serve", "--help").stdout
    for opt in (
        "--host",
        "--port",
        "--database-url",
        "--workers",
        "--api-key",
        "METERLINE_DATABASE_URL",
        "METERLINE_API_KEY",
    ):
        assert opt in serve
    assert "--new-account" in run("keys", "create", "--help").stdout
    assert "--database-url" in run("migrate", "--help").stdout


def test_bad_api_key_is_refused_clearly(database_url):
    r = run(
        "serve",
        "--database-url",
        database_url,
        "--api-key",
        "pk_test_nope",
        "--port",
        str(free_port()),
        check=False,
    )
    assert r.returncode != 0
    assert "sk_test_" in r.stderr and "sk_live_" in r.stderr


def test_bad_database_url_is_refused_clearly():
    r = run("migrate", "--database-url", "mysql://x", check=False)
    assert r.returncode != 0 and "sqlite:///" in r.stderr


def test_keys_create_works_while_the_server_runs(server):
    key = (
        run("keys", "create", "--database-url", server.database_url).stdout.strip().splitlines()[-1]
    )
    assert re.fullmatch(r"sk_test_[A-Za-z0-9]{32}", key)
    r = httpx.post(server.base_url + "/v1/customers", data={"name": "k"}, auth=(key, ""))
    assert r.status_code == 200
    # the default account: the server's own key sees what the new key made
    assert (
        httpx.get(
            server.base_url + f"/v1/customers/{r.json()['id']}", auth=(server.key, "")
        ).status_code
        == 200
    )


def test_new_account_keys_are_separate(server):
    key = (
        run("keys", "create", "--new-account", "--database-url", server.database_url)
        .stdout.strip()
        .splitlines()[-1]
    )
    cid = httpx.post(server.base_url + "/v1/customers", data={"name": "n"}, auth=(key, "")).json()[
        "id"
    ]
    assert (
        httpx.get(server.base_url + f"/v1/customers/{cid}", auth=(server.key, "")).status_code
        == 404
    )


def test_keys_are_stored_hashed(server):
    db = Database(server.database_url)
    try:
        with db.read() as conn:
            rows = conn.execute(sa.text("SELECT key_hash, key_hint FROM api_keys")).all()
    finally:
        db.dispose()
    assert rows
    for key_hash, hint in rows:
        assert server.key not in key_hash and server.key not in hint
        assert re.fullmatch(r"[0-9a-f]{64}", key_hash)


def test_migrate_is_repeatable_and_reads_the_environment(db_kind, tmp_path):
    url, drop = fresh_database_url(db_kind, tmp_path)
    try:
        assert "Migrations applied" in run("migrate", env={"METERLINE_DATABASE_URL": url}).stdout
        assert "Migrations applied" in run("migrate", "--database-url", url).stdout
    finally:
        drop()


def test_serve_without_a_key_creates_and_prints_one(db_kind, tmp_path):
    url, drop = fresh_database_url(db_kind, tmp_path)
    port = free_port()
    proc = subprocess.Popen(
        [*MELINE, "serve", "--port", str(port), "--database-url", url, "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        lines = []
        key = None
        deadline = time.time() + 30
        while time.time() < deadline and key is None:
            line = proc.stdout.readline()
            lines.append(line)
            m = re.search(r"(sk_test_[A-Za-z0-9]+)", line)
            if m:
                key = m.group(1)
        assert key, "".join(lines)
        assert any(f"http://127.0.0.1:{port}" in line for line in lines)
        for _ in range(100):
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/v1/customers", auth=(key, ""))
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert r.status_code == 200 and r.json()["object"] == "list"
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        drop()
