"""`meterline import` and `meterline usage` against a running server: an import stores exactly the
lines the API would accept (and the analytics endpoint sees exactly those), reports every other
line by reason, and writes the rejects file; `usage` prints what the analytics endpoint answers.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import re
import subprocess
import time
import uuid
from decimal import Decimal

import pytest

from conftest import MELINE

NOW = int(time.time())
DAY = 86400


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(
        [*MELINE, *args],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "METERLINE_DATABASE_URL"},
        timeout=120,
    )
    if check and r.returncode != 0:
        raise AssertionError(f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}")
    return r


@pytest.fixture(scope="module")
def acct(server):
    """A new account with a sum meter declaring a `model` dimension."""
    key = server.new_key(new_account=True)
    with server.http(key) as http:
        event_name = f"tokens_{uuid.uuid4().hex[:8]}"
        r = http.post(
            "/v1/billing/meters",
            data={
                "display_name": "Tokens",
                "event_name": event_name,
                "default_aggregation[formula]": "sum",
                "dimension_payload_keys[0]": "model",
            },
        )
        assert r.status_code == 200, r.text
        meter = r.json()["id"]
    return key, event_name, meter


def new_customer(server, key: str) -> str:
    with server.http(key) as http:
        r = http.post("/v1/customers", data={"name": "imported"})
        assert r.status_code == 200, r.text
        return r.json()["id"]


def analytics(server, key: str, customer: str, meter: str, **extra: str) -> list[dict]:
    start = (NOW - 36 * DAY) // 60 * 60
    end = (NOW + 3600) // 60 * 60
    params = {
        "customer": customer,
        "start_time": str(start),
        "end_time": str(end),
        "meters[0][meter_id]": meter,
        **extra,
    }
    with server.http(key) as http:
        r = http.get("/v1/billing/analytics/meter_usage", params=params)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def import_args(server, key: str, path, *more: str) -> list[str]:
    return ["import", str(path), "--database-url", server.database_url, "--api-key", key, *more]


def summary_counts(out: str) -> tuple[int, int]:
    m = re.search(r"(\d+) accepted, (\d+) rejected", out)
    assert m, out
    return int(m[1]), int(m[2])


def reason_rows(out: str) -> dict[str, tuple[int, str]]:
    """code -> (count, example line numbers) from the summary table."""
    rows = {}
    for m in re.finditer(r"│ ([a-z_]+)\s+│\s+(\d+) │ ([0-9, ]+?)\s+│", out):
        rows[m[1]] = (int(m[2]), m[3])
    return rows


def the_lines(event_name: str, customer: str, tag: str) -> list[tuple[str, str | None]]:
    """(line as JSON, expected rejection code or None) for a file of every kind of line."""

    def ev(value: str, ts: int | None, ident: str | None, cust: str = customer, model="gpt-4"):
        d: dict = {
            "event_name": event_name,
            "payload": {"stripe_customer_id": cust, "value": value, "model": model},
        }
        if ident is not None:
            d["identifier"] = f"{tag}_{ident}"
        if ts is not None:
            d["timestamp"] = ts
        return json.dumps(d)

    return [
        (ev("5", NOW - 3600, "a"), None),  # line 1
        (ev("2.5", NOW - 2 * DAY, "b", model="claude"), None),  # 2
        (ev("7", NOW - 60, "a"), "resource_already_exists"),  # 3: identifier of line 1
        (ev("lots", NOW - 60, "c"), "meter_event_invalid_value"),  # 4
        (ev("3", NOW - 60, "d", cust="cus_nobody"), "meter_event_customer_not_found"),  # 5
        (ev("4", NOW - 40 * DAY, "e"), "timestamp_too_far_in_past"),  # 6
        ('{"event_name": "x", "payload": ', "malformed"),  # 7
        (ev("1", NOW - 120, None), None),  # 8: no identifier
        (ev("0.25", None, "f", model="claude"), None),  # 9: no timestamp: now
        (ev("9", NOW - 30, "b"), "resource_already_exists"),  # 10: identifier of line 2
    ]


EXPECTED_TOTAL = Decimal("8.75")  # 5 + 2.5 + 1 + 0.25
EXPECTED_BY_MODEL = {"gpt-4": Decimal("6"), "claude": Decimal("2.75")}
EXPECTED_REJECTS = {
    3: "resource_already_exists",
    4: "meter_event_invalid_value",
    5: "meter_event_customer_not_found",
    6: "timestamp_too_far_in_past",
    7: "malformed",
    10: "resource_already_exists",
}


def check_analytics(server, key: str, customer: str, meter: str) -> None:
    rows = analytics(server, key, customer, meter)
    assert len(rows) == 1
    assert Decimal(str(rows[0]["bucket_value"])) == EXPECTED_TOTAL
    grouped = analytics(
        server, key, customer, meter, **{"meters[0][dimension_group_by_keys][0]": "model"}
    )
    assert {r["dimensions"]["model"]: Decimal(str(r["bucket_value"])) for r in grouped} == (
        EXPECTED_BY_MODEL
    )


def check_summary(out: str) -> None:
    assert summary_counts(out) == (4, 6)
    rows = reason_rows(out)
    assert rows == {
        "resource_already_exists": (2, "3, 10"),
        "meter_event_invalid_value": (1, "4"),
        "meter_event_customer_not_found": (1, "5"),
        "timestamp_too_far_in_past": (1, "6"),
        "malformed": (1, "7"),
    }, out


def check_rejects(path, raw_lines: dict[int, str]) -> None:
    got = [json.loads(x) for x in path.read_text().splitlines()]
    assert [(r["line"], r["code"]) for r in got] == sorted(EXPECTED_REJECTS.items())
    for r in got:
        assert r["message"]
        assert r["text"] == raw_lines[r["line"]]
    by_line = {r["line"]: r for r in got}
    assert by_line[4]["param"] == "payload[value]"
    assert by_line[5]["param"] == "payload[stripe_customer_id]"
    assert by_line[6]["param"] == "timestamp"
    assert by_line[3]["param"] == "identifier"


def test_import_jsonl(server, acct, tmp_path):
    key, event_name, meter = acct
    customer = new_customer(server, key)
    lines = the_lines(event_name, customer, uuid.uuid4().hex[:8])
    path = tmp_path / "events.jsonl"
    path.write_text("".join(text + "\n" for text, _ in lines) + "\n   \n")  # blank lines: skipped
    rejects = tmp_path / "rejected.jsonl"
    t0 = time.time()
    r = run(*import_args(server, key, path, "--rejects", str(rejects), "--batch-size", "3"))
    assert time.time() - t0 < 60
    check_summary(r.stdout)
    assert "rejected.jsonl" in r.stdout
    assert "\x1b[" not in r.stdout  # no progress bar or colours when the output is a pipe
    check_rejects(rejects, {i: text for i, (text, _) in enumerate(lines, 1)})
    check_analytics(server, key, customer, meter)

    # Again: every line with an identifier is now a duplicate, the one without is stored again.
    r = run(*import_args(server, key, path))
    assert summary_counts(r.stdout) == (1, 9)
    assert reason_rows(r.stdout)["resource_already_exists"] == (5, "1, 2, 3")
    assert "--rejects FILE" in r.stdout
    rows = analytics(server, key, customer, meter)
    assert Decimal(str(rows[0]["bucket_value"])) == EXPECTED_TOTAL + 1


def to_csv(lines: list[tuple[str, str | None]]) -> tuple[str, dict[int, str]]:
    """The same events as CSV; the malformed JSON line becomes a row with too many cells."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")  # as spreadsheets write it
    w.writerow(
        [
            "event_name",
            "timestamp",
            "identifier",
            "payload.stripe_customer_id",
            "payload.value",
            "payload.model",
        ]
    )
    texts: dict[int, str] = {}
    for i, (text, code) in enumerate(lines, 2):
        if code == "malformed":
            row = ["x", "1", "2", "3", "4", "5", "6"]
        else:
            d = json.loads(text)
            p = d["payload"]
            row = [
                d["event_name"],
                d.get("timestamp", ""),
                d.get("identifier", ""),
                p["stripe_customer_id"],
                p["value"],
                # a comma inside a quoted cell stays in the value
                "claude, v2" if p["model"] == "claude" else p["model"],
            ]
        start = buf.tell()
        w.writerow(row)
        texts[i] = buf.getvalue()[start:].rstrip("\r\n")
    return buf.getvalue(), texts


def test_import_csv(server, acct, tmp_path):
    key, event_name, meter = acct
    customer = new_customer(server, key)
    content, texts = to_csv(the_lines(event_name, customer, uuid.uuid4().hex[:8]))
    path = tmp_path / "events.csv"
    path.write_bytes(("\ufeff" + content).encode())  # with the byte order mark Excel writes
    rejects = tmp_path / "rejected.jsonl"
    r = run(*import_args(server, key, path, "--rejects", str(rejects)))
    # line numbers count the header: data starts on line 2
    assert summary_counts(r.stdout) == (4, 6)
    assert reason_rows(r.stdout) == {
        "resource_already_exists": (2, "4, 11"),
        "meter_event_invalid_value": (1, "5"),
        "meter_event_customer_not_found": (1, "6"),
        "timestamp_too_far_in_past": (1, "7"),
        "malformed": (1, "8"),
    }, r.stdout
    got = [json.loads(x) for x in rejects.read_text().splitlines()]
    assert [(x["line"], x["code"]) for x in got] == [
        (n + 1, code) for n, code in sorted(EXPECTED_REJECTS.items())
    ]
    assert all(x["text"] == texts[x["line"]] for x in got)
    rows = analytics(server, key, customer, meter)
    assert Decimal(str(rows[0]["bucket_value"])) == EXPECTED_TOTAL
    grouped = analytics(
        server, key, customer, meter, **{"meters[0][dimension_group_by_keys][0]": "model"}
    )
    assert {x["dimensions"]["model"]: Decimal(str(x["bucket_value"])) for x in grouped} == {
        "gpt-4": Decimal("6"),
        "claude, v2": Decimal("2.75"),
    }


def test_import_checks_fields_as_the_api_does(server, acct, tmp_path):
    key, event_name, meter = acct
    customer = new_customer(server, key)
    good = {"stripe_customer_id": customer, "value": "1", "model": "m"}
    cases = [
        ({"event_name": event_name, "payload": {**good, "value": 1}}, "parameter_invalid"),
        ({"event_name": event_name, "payload": good, "extra": 1}, "parameter_unknown"),
        ({"payload": good}, "parameter_missing"),
        ({"event_name": event_name, "payload": good, "timestamp": "soon"}, None),
        ({"event_name": "no_such_meter_here", "payload": good}, "no_meter"),
        ({"event_name": event_name, "payload": {"value": "1", "model": "m"}}, None),
        (["not", "an", "object"], "malformed"),
        ({"event_name": event_name, "payload": good, "identifier": "x" * 101}, None),
        ({"event_name": event_name, "payload": {**good, "model": ""}}, None),
    ]
    path = tmp_path / "fields.jsonl"
    path.write_text("".join(json.dumps(obj) + "\n" for obj, _ in cases) + "\xff\n")
    rejects = tmp_path / "r.jsonl"
    r = run(*import_args(server, key, path, "--rejects", str(rejects)))
    assert summary_counts(r.stdout) == (0, len(cases) + 1)
    codes = [json.loads(x)["code"] for x in rejects.read_text().splitlines()]
    assert codes == [
        "parameter_invalid",
        "parameter_unknown",
        "parameter_missing",
        "parameter_invalid_integer",
        "no_meter",
        "meter_event_no_customer_defined",
        "malformed",
        "parameter_invalid_string",
        "missing_dimension_payload_keys",
        "malformed",  # not UTF-8
    ]
    assert analytics(server, key, customer, meter) == []


def test_import_into_the_default_account_and_by_account_id(server, tmp_path):
    """Without --api-key: the default account in test mode (the server's key sees it)."""
    with server.http() as http:
        event_name = f"calls_{uuid.uuid4().hex[:8]}"
        meter = http.post(
            "/v1/billing/meters",
            data={
                "display_name": "Calls",
                "event_name": event_name,
                "default_aggregation[formula]": "count",
            },
        ).json()["id"]
        customer = http.post("/v1/customers", data={"name": "d"}).json()["id"]
    path = tmp_path / "calls.jsonl"
    line = {"event_name": event_name, "payload": {"stripe_customer_id": customer}}
    path.write_text(json.dumps(line) + "\n")
    r = run("import", str(path), "--database-url", server.database_url)
    assert summary_counts(r.stdout) == (1, 0)
    account = re.search(r"account (acct_\w+), test mode", r.stdout)[1]
    r = run("import", str(path), "--database-url", server.database_url, "--account", account)
    assert summary_counts(r.stdout) == (1, 0)
    assert analytics(server, server.key, customer, meter)[0]["bucket_value"] == 2
    # live mode of the same account has no such meter
    r = run("import", str(path), "--database-url", server.database_url, "--live")
    assert summary_counts(r.stdout) == (0, 1) and "no_meter" in r.stdout


def test_import_errors_exit_nonzero(server, acct, tmp_path):
    key, _, _ = acct
    db = ["--database-url", server.database_url]
    r = run("import", str(tmp_path / "missing.jsonl"), *db, check=False)
    assert r.returncode != 0 and "does not exist" in r.stderr
    txt = tmp_path / "events.txt"
    txt.write_text("{}\n")
    r = run("import", str(txt), *db, check=False)
    assert r.returncode != 0 and ".jsonl" in r.stderr and ".csv" in r.stderr
    ok = tmp_path / "events.jsonl"
    ok.write_text("")
    r = run("import", str(ok), *db, "--api-key", "sk_test_notakeyofours", check=False)
    assert r.returncode != 0 and "No account in this database has this key" in r.stderr
    r = run("import", str(ok), *db, "--api-key", "pk_test_nope", check=False)
    assert r.returncode != 0 and "sk_test_" in r.stderr
    r = run("import", str(ok), *db, "--account", "acct_nobody", check=False)
    assert r.returncode != 0 and "acct_nobody" in r.stderr
    r = run("import", str(ok), *db, "--api-key", key, "--account", "acct_x", check=False)
    assert r.returncode != 0 and "not both" in r.stderr
    r = run("import", str(ok), *db, "--api-key", key, "--live", check=False)
    assert r.returncode != 0 and "--live" in r.stderr
    bad_csv = tmp_path / "events.csv"
    bad_csv.write_text("event_name,value\nx,1\n")
    r = run("import", str(bad_csv), *db, check=False)
    assert r.returncode != 0 and "Unknown column 'value'" in r.stderr
    # an empty JSONL file was read: nothing to do, and success
    r = run("import", str(ok), *db, "--api-key", key)
    assert summary_counts(r.stdout) == (0, 0)


def test_import_shows_a_progress_bar_on_a_terminal(server, acct, tmp_path):
    key, event_name, _ = acct
    customer = new_customer(server, key)
    path = tmp_path / "events.jsonl"
    ev = {"event_name": event_name, "payload": {"stripe_customer_id": customer, "value": "1"}}
    path.write_text(
        "".join(
            json.dumps({**ev, "payload": {**ev["payload"], "model": "m"}}) + "\n" for _ in range(50)
        )
    )
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*MELINE, *import_args(server, key, path, "--batch-size", "10")],
        stdout=slave,
        stderr=slave,
        env={**os.environ, "COLUMNS": "160", "TERM": "xterm"},
    )
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=60) == 0
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.decode())
    assert "50 accepted, 0 rejected" in text
    assert "━" in text  # the bar


def test_usage_json_equals_the_api(server, acct, tmp_path):
    key, event_name, meter = acct
    customer = new_customer(server, key)
    lines = the_lines(event_name, customer, uuid.uuid4().hex[:8])
    path = tmp_path / "events.jsonl"
    path.write_text("".join(text + "\n" for text, _ in lines))
    run(*import_args(server, key, path))
    start = (NOW - 10 * DAY) // 3600 * 3600
    end = (NOW + 3600) // 3600 * 3600
    base = ["usage", "--customer", customer, "--database-url", server.database_url]
    base += ["--api-key", key]
    for args, params in [
        (
            ["--start", str(start), "--end", str(end)],
            {"value_grouping_window": "day", "timezone": "UTC"},
        ),
        (
            ["--meter", meter, "--group-by", "model", "--start", str(start), "--end", str(end)],
            {
                "value_grouping_window": "day",
                "meters[0][meter_id]": meter,
                "meters[0][dimension_group_by_keys][0]": "model",
            },
        ),
        (
            [
                "--meter",
                meter,
                "--window",
                "hour",
                "--timezone",
                "Asia/Kolkata",
                "--start",
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
                "--end",
                str(end),
            ],
            {
                "value_grouping_window": "hour",
                "timezone": "Asia/Kolkata",
                "meters[0][meter_id]": meter,
            },
        ),
    ]:
        got = json.loads(run(*base, *args, "--json").stdout)
        with server.http(key) as http:
            r = http.get(
                "/v1/billing/analytics/meter_usage",
                params={"customer": customer, "start_time": start, "end_time": end, **params},
            )
        assert r.status_code == 200, r.text
        assert got == r.json()["data"]
        assert got  # not vacuous
    # the defaults: the last 30 days up to now, by UTC day
    got = json.loads(run(*base, "--json").stdout)
    assert sum(Decimal(str(x["bucket_value"])) for x in got) == EXPECTED_TOTAL
    assert all(x["bucket_end_time"] - x["bucket_start_time"] <= DAY for x in got)


def test_usage_table_shows_buckets_and_totals(server, acct, tmp_path):
    key, event_name, meter = acct
    customer = new_customer(server, key)
    lines = the_lines(event_name, customer, uuid.uuid4().hex[:8])
    path = tmp_path / "events.jsonl"
    path.write_text("".join(text + "\n" for text, _ in lines))
    run(*import_args(server, key, path))
    base = ["usage", "--customer", customer, "--database-url", server.database_url]
    base += ["--api-key", key]
    out = run(*base, "--meter", meter, "--timezone", "Europe/Berlin").stdout
    assert customer in out and meter in out and "Europe/Berlin" in out
    total = re.search(r"│ total .*│\s+([0-9.]+) │", out)
    assert total and Decimal(total[1]) == EXPECTED_TOTAL, out
    assert re.search(r"\d{4}-\d\d-\d\dT00:00\+0[12]:00", out)  # local midnight in Berlin
    out = run(*base, "--meter", meter, "--group-by", "model").stdout
    assert "model=gpt-4" in out and "model=claude" in out
    assert Decimal(re.search(r"│ total .*│\s+([0-9.]+) │", out)[1]) == EXPECTED_TOTAL
    other = new_customer(server, key)
    out = run(
        "usage", "--customer", other, "--database-url", server.database_url, "--api-key", key
    ).stdout
    assert "No usage" in out


def test_usage_errors_exit_nonzero(server, acct):
    key, _, meter = acct
    base = ["usage", "--database-url", server.database_url, "--api-key", key]
    r = run(*base, "--customer", "cus_nobody", check=False)
    assert r.returncode != 0
    assert "No such customer: 'cus_nobody'" in r.stderr and "--customer" in r.stderr
    customer = new_customer(server, key)
    base += ["--customer", customer]
    for args, words in [
        (["--start", "1767225601", "--end", "1767229200"], ["minute", "--start"]),
        (["--start", "yesterday"], ["ISO 8601", "--start"]),
        (["--timezone", "Mars/Olympus"], ["Mars/Olympus", "--timezone"]),
        (["--meter", "mtr_nope"], ["mtr_nope", "--meter"]),
        (["--meter", meter, "--group-by", "region"], ["region", "--group-by"]),
        (["--group-by", "model"], ["--meter"]),
        (["--start", "2026-01-02", "--end", "2026-01-01"], ["--end"]),
    ]:
        r = run(*base, *args, check=False)
        assert r.returncode != 0, (args, r.stdout)
        for w in words:
            assert w in r.stderr, (args, r.stderr)


def test_help_texts_have_examples():
    for cmd in ("import", "usage"):
        out = run(cmd, "--help").stdout
        assert "Example" in out and f"meterline {cmd} " in out
    out = run("import", "--help").stdout
    for opt in ("--api-key", "--account", "--live", "--batch-size", "--rejects", "--no-progress"):
        assert opt in out
    out = run("usage", "--help").stdout
    for opt in ("--customer", "--meter", "--start", "--end", "--window", "--timezone", "--json"):
        assert opt in out


def test_a_line_that_fails_after_writing_is_undone_alone(server, acct, monkeypatch):
    """The batch pattern's safety net: should a line fail after it wrote (which `record` never
    does), the batch runs again with a savepoint per line; only that line is undone."""
    from meterline.services import ServiceError, accounts, imports
    from meterline.services.meter_events import EventInput
    from meterline.store.db import Database
    from meterline.store.repo import Scope

    key, event_name, meter = acct
    customer = new_customer(server, key)
    real = imports.record
    calls = []

    def writes_then_fails(repo, ev):
        calls.append(ev.identifier)
        real(repo, ev)
        if ev.identifier.endswith("_bad"):
            raise ServiceError(400, "refused after writing", code="test_refusal")

    monkeypatch.setattr(imports, "record", writes_then_fails)
    tag = uuid.uuid4().hex[:8]
    payload = {"stripe_customer_id": customer, "value": "1", "model": "m"}
    lines = [
        imports.Line(i, "", event=EventInput(event_name, payload, f"{tag}_{i}{suffix}", NOW - 60))
        for i, suffix in enumerate(["", "_bad", "", "_bad", ""], 1)
    ]
    db = Database(server.database_url)
    try:
        account, livemode = accounts.resolve_key(db, key)
        summary = imports.run(db, Scope(account, livemode), lines, batch_size=10)
    finally:
        db.dispose()
    assert (summary.accepted, summary.rejected) == (3, 2)
    assert summary.reasons["test_refusal"].examples == [2, 4]
    assert len(calls) == 2 + 5  # up to the first failure, then every line with a savepoint
    assert analytics(server, key, customer, meter)[0]["bucket_value"] == 3


def test_a_database_failure_stops_the_import_and_says_what_is_stored(
    server, acct, tmp_path, monkeypatch
):
    import sqlalchemy as sa
    from click.testing import CliRunner

    from meterline.cli import main
    from meterline.services import imports

    key, event_name, meter = acct
    customer = new_customer(server, key)
    real = imports.record

    def fails_on_boom(repo, ev):
        if ev.identifier.endswith("_boom"):
            raise sa.exc.OperationalError("INSERT", {}, Exception("disk I/O error"))
        return real(repo, ev)

    monkeypatch.setattr(imports, "record", fails_on_boom)
    tag = uuid.uuid4().hex[:8]
    path = tmp_path / "events.jsonl"
    with path.open("w") as f:
        for i, suffix in enumerate(["", "", "", "", "", "_boom", ""], 1):
            payload = {"stripe_customer_id": customer, "value": "1", "model": "m"}
            ev = {"event_name": event_name, "payload": payload, "identifier": f"{tag}{i}{suffix}"}
            f.write(json.dumps(ev) + "\n")
    result = CliRunner().invoke(main, import_args(server, key, path, "--batch-size", "2"))
    assert result.exit_code == 1, result.output
    assert summary_counts(result.output) == (4, 0)
    assert "batch starting at line 5" in result.output and "disk I/O error" in result.output
    assert "up to line 4 are stored" in result.output
    assert analytics(server, key, customer, meter)[0]["bucket_value"] == 4
