"""meterline HTTP benchmark: `make bench` runs `.venv/bin/python bench/run.py`.

For SQLite (a fresh temp file) and PostgreSQL (a freshly recreated database
`meterline_bench`) it migrates, starts `meterline serve --workers 2`, creates one
customer and drives customers.retrieve and customers.create with wrk. The same wrk
settings are pointed at a bare Starlette app (bench/bare_app.py) under uvicorn, the
ceiling every meterline number is compared with, and, right after each database's
meterline phase, at the database floor (bench/floor_app.py: the same server stack
doing only the least database work each operation needs, on a fresh SQLite file or
the recreated database `meterline_floor`). Every operation is warmed up once, then
measured --repeat times; the median run by req/s is reported. Results are printed
and written to docs/PERFORMANCE.md; raw wrk output and server logs go to bench/out/.

Standard library only (plus psycopg from the venv when present, else psql).

    .venv/bin/python bench/run.py [--seconds N] [--repeat N] [--only sqlite|postgresql]
                                  [--only-bare] [--no-floor] [--no-report]

The exit status is 1 when a phase could not run or any wrk run saw errors
(non-2xx responses or socket errors); a missed throughput target is reported,
not failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import http.client
import json
import os
import platform
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
OUT = BENCH / "out"
REPORT = ROOT / "docs" / "PERFORMANCE.md"
OTHER_MARKER = "<!-- bench:other -->"

RETRIEVE_LUA = "bench/retrieve_customer.lua"
CREATE_LUA = "bench/create_customer.lua"
CREATE_BODY = b"name=bench&email=bench%40example.com"

PG_DATABASE = "meterline_bench"
PG_ADMIN_URLS = [
    os.environ.get("BENCH_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    "postgresql://postgres@127.0.0.1:5432/test",
]
PG_BENCH_URL = os.environ.get(
    "BENCH_POSTGRES_URL", f"postgresql://postgres@127.0.0.1:5432/{PG_DATABASE}"
)
FLOOR_PG_DATABASE = "meterline_floor"
FLOOR_PG_URL = os.environ.get(
    "BENCH_FLOOR_POSTGRES_URL", f"postgresql://postgres@127.0.0.1:5432/{FLOOR_PG_DATABASE}"
)
FLOOR_SEED_ID = "cus_floorseed"  # seeded by bench/floor_app.py at startup
FLOOR_LABEL = {
    "customers.retrieve": "retrieve: 1 indexed SELECT",
    "customers.create": "create: 1 INSERT, committed",
}

# meterline rps / bare rps must reach these.
TARGETS = {"customers.retrieve": 0.40, "customers.create": 0.25}
BARE_OP = {"customers.retrieve": "GET", "customers.create": "POST"}

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
PROBES = 50


class PhaseError(Exception):
    """A database (or the bare app) phase could not be measured."""


# --------------------------------------------------------------------------- wrk


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    if os.geteuid() != 0:
        sys.exit("wrk is not installed and we are not root: run `apt-get install -y wrk`.")
    print("wrk not found: installing the Debian package", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, env=env)
    path = shutil.which("wrk")
    if not path:
        sys.exit("apt-get installed wrk but it is not on PATH")
    return path


def wrk_version(wrk: str) -> str:
    proc = subprocess.run([wrk, "-v"], capture_output=True, text=True)
    first = (proc.stdout or proc.stderr).strip().splitlines()
    return first[0].split(" Copyright")[0].strip() if first else "wrk (unknown version)"


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_SI = {"": 1.0, "k": 1e3, "M": 1e6, "G": 1e9}


def to_ms(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * _UNIT_MS[m.group(2)]


@dataclasses.dataclass
class WrkResult:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    non2xx: int
    connect: int
    read: int
    write: int
    timeout: int

    @property
    def socket_errors(self) -> int:
        return self.connect + self.read + self.write + self.timeout

    @property
    def errors(self) -> int:
        return self.non2xx + self.socket_errors

    def error_text(self) -> str:
        if not self.errors:
            return "0"
        parts = [
            f"{name} {n}"
            for name, n in (
                ("non-2xx", self.non2xx),
                ("connect", self.connect),
                ("read", self.read),
                ("write", self.write),
                ("timeout", self.timeout),
            )
            if n
        ]
        return f"{self.errors} ({', '.join(parts)})"


def parse_wrk(output: str) -> WrkResult:
    """Parse wrk --latency text, cross-checked with the scripts' BENCH_RESULT line."""
    rps_m = re.search(r"^Requests/sec:\s+([0-9.]+)", output, re.M)
    if not rps_m:
        raise ValueError("no Requests/sec line in wrk output")
    dist = output.split("Latency Distribution", 1)
    if len(dist) != 2:
        raise ValueError("no Latency Distribution section in wrk output (was --latency given?)")
    pct = dict(re.findall(r"^\s*(\d+(?:\.\d+)?)%\s+([0-9.]+(?:us|ms|s|m|h))\s*$", dist[1], re.M))
    if "50" not in pct or "99" not in pct:
        raise ValueError("no 50%/99% rows in wrk's Latency Distribution")
    req_m = re.search(r"^\s*(\d+) requests in ", output, re.M)
    requests = int(req_m.group(1)) if req_m else 0

    sock = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    sock_m = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if sock_m:
        sock = dict(zip(sock, map(int, sock_m.groups()), strict=True))
    non2xx_m = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    non2xx = int(non2xx_m.group(1)) if non2xx_m else 0

    # The Lua done() line carries wrk's exact counters; trust it where present.
    lua_m = re.search(r"^BENCH_RESULT (\{.*\})\s*$", output, re.M)
    if lua_m:
        lua = json.loads(lua_m.group(1))
        requests = int(lua["requests"])
        non2xx = max(non2xx, int(lua["status"]))
        for key in sock:
            sock[key] = max(sock[key], int(lua[key]))

    return WrkResult(
        requests=requests,
        rps=float(rps_m.group(1)),
        p50_ms=to_ms(pct["50"]),
        p99_ms=to_ms(pct["99"]),
        non2xx=non2xx,
        **sock,
    )


@dataclasses.dataclass
class Settings:
    wrk: str
    threads: int
    connections: int
    seconds: int
    warmup: int
    repeat: int

    def args(self, seconds: int) -> list[str]:
        return [f"-t{self.threads}", f"-c{self.connections}", f"-d{seconds}s", "--latency"]


def run_wrk(
    settings: Settings, url: str, script: str, api_key: str | None, label: str
) -> list[WrkResult]:
    """Warm up once, then measure `settings.repeat` times. Returns every run's result."""

    def command(seconds: int) -> list[str]:
        cmd = [settings.wrk, *settings.args(seconds), "-s", script]
        if api_key:
            cmd += ["-H", f"Authorization: Bearer {api_key}"]
        # The nonce keeps Idempotency-Keys unique across runs (ignored by retrieve).
        return [*cmd, url, "--", secrets.token_hex(6)]

    if settings.warmup > 0:
        warm = subprocess.run(
            command(settings.warmup),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=settings.warmup + 60,
        )
        (OUT / f"wrk-{label}-warmup.txt").write_text(warm.stdout + warm.stderr)

    results = []
    for run in range(1, settings.repeat + 1):
        cmd = command(settings.seconds)
        if run == 1:
            print(f"  $ {shlex.join(cmd)}", flush=True)
        name = f"wrk-{label}-{run}.txt"
        proc = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=settings.seconds + 60
        )
        (OUT / name).write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise PhaseError(
                f"wrk run {run} exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()}"
            )
        try:
            result = parse_wrk(proc.stdout)
        except ValueError as exc:
            raise PhaseError(f"cannot parse wrk output ({exc}); see bench/out/{name}") from exc
        if result.requests == 0:
            raise PhaseError(f"wrk run {run} completed no requests")
        if settings.repeat > 1:
            print(
                f"    run {run}: {result.rps:,.0f} req/s  p50 {result.p50_ms:.2f} ms"
                f"  p99 {result.p99_ms:.2f} ms  errors {result.error_text()}",
                flush=True,
            )
        results.append(result)
    return results


def median_run(runs: list[WrkResult]) -> WrkResult:
    """The median run by req/s (the lower middle one for an even count), with the error
    counters summed over all runs so that no run's errors go unreported."""
    ordered = sorted(runs, key=lambda r: r.rps)
    mid = ordered[(len(ordered) - 1) // 2]
    return dataclasses.replace(
        mid,
        non2xx=sum(r.non2xx for r in runs),
        connect=sum(r.connect for r in runs),
        read=sum(r.read for r in runs),
        write=sum(r.write for r in runs),
        timeout=sum(r.timeout for r in runs),
    )


# ------------------------------------------------------------------------ servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(
    method: str,
    url: str,
    api_key: str | None = None,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    if api_key:
        req.add_header("Authorization", f"Bearer {api_key}")
    if body is not None:
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def descendants(pid: int) -> list[int]:
    """The descendants of `pid` (a server's uvicorn workers), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def run_logged(cmd: list[str], log: Path, timeout: float = 600) -> str:
    """Run a command from the repository root, its output appended to `log`; its stdout, or
    PhaseError when it fails."""
    with log.open("ab") as fh:
        fh.write(f"$ {shlex.join(cmd)}\n".encode())
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    with log.open("a") as fh:
        fh.write(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise PhaseError(
            f"{shlex.join(cmd)} exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()}"
        )
    return proc.stdout


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:]) or "(empty log)"


class Server:
    """A server process in its own process group, output to a log file."""

    def __init__(self, name: str, cmd: list[str], log: Path, env: dict[str, str] | None = None):
        self.name = name
        self.cmd = cmd
        self.log = log
        self.env = env
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("ab") as fh:
            fh.write(f"\n$ {shlex.join(self.cmd)}\n".encode())
            fh.flush()
            self.proc = subprocess.Popen(
                self.cmd,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, probe, timeout: float = START_TIMEOUT) -> None:
        """Poll `probe()` (returns None when ready, else a description) until ready."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if not self.alive():
                code = self.proc.returncode if self.proc else None
                raise PhaseError(
                    f"{self.name} exited with status {code} before answering; "
                    f"log tail ({self.log.relative_to(ROOT)}):\n{log_tail(self.log)}"
                )
            try:
                problem = probe()
            except (OSError, http.client.HTTPException) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if problem is None:
                return
            last = problem
            time.sleep(0.25)
        raise PhaseError(
            f"{self.name} did not become ready in {timeout:.0f}s (last: {last}); "
            f"log tail ({self.log.relative_to(ROOT)}):\n{log_tail(self.log)}"
        )

    def check_alive(self) -> None:
        if not self.alive():
            raise PhaseError(
                f"{self.name} died during the benchmark; log tail:\n{log_tail(self.log)}"
            )

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        pgid = self.proc.pid  # start_new_session: the group id is the leader's pid
        for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                print(f"  {self.name} ignored {sig.name} for {wait:.0f}s", flush=True)
        # Reap any worker left in the group after the leader exited.
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# --------------------------------------------------------------------- databases


def recreate_postgres_database(name: str = PG_DATABASE) -> str:
    """Drop and create the database `name`; returns the server version."""
    errors = []
    try:
        import psycopg
    except ImportError:
        psycopg = None
    for admin in PG_ADMIN_URLS:
        if psycopg is not None:
            try:
                with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    conn.execute(f'CREATE DATABASE "{name}"')
                    return str(conn.execute("SHOW server_version").fetchone()[0])
            except psycopg.Error as exc:
                errors.append(f"{admin}: {exc}")
                continue
        psql = shutil.which("psql")
        if psql:
            statements = [
                f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
                f'CREATE DATABASE "{name}"',
                "SHOW server_version",
            ]
            cmd = [psql, admin, "-v", "ON_ERROR_STOP=1", "-qtA"]
            for stmt in statements:
                cmd += ["-c", stmt]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            if proc.returncode == 0:
                return proc.stdout.strip().splitlines()[-1]
            errors.append(f"{admin} (psql): {proc.stderr.strip()}")
    raise PhaseError(f"cannot recreate the PostgreSQL database {name}: " + "; ".join(errors))


def meterline_cli() -> str:
    for candidate in (
        ROOT / ".venv" / "bin" / "meterline",
        Path(sys.executable).parent / "meterline",
    ):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("meterline")
    if found:
        return found
    raise PhaseError("the meterline CLI is not installed (run `make install`)")


# ---------------------------------------------------------------------- phases


@dataclasses.dataclass
class Row:
    database: str
    operation: str
    result: WrkResult | None = None  # the median run, errors summed over all runs
    failure: str | None = None
    note: str | None = None
    runs: list[WrkResult] = dataclasses.field(default_factory=list)

    @property
    def kind(self) -> str:
        if self.database == "bare":
            return "bare"
        return "floor" if self.database.endswith(" floor") else "meterline"

    @property
    def engine(self) -> str:
        """The database (sqlite, postgresql) of a meterline or floor row."""
        return self.database.removesuffix(" floor")


def probe_error(method: str, url: str, api_key: str | None, body: bytes | None) -> str:
    """Requests like the failing run's, to show what one of the errors was."""
    status, text = 0, ""
    for _ in range(PROBES):
        headers = {"Idempotency-Key": f"bench-probe-{secrets.token_hex(8)}"} if body else {}
        try:
            status, payload = call(method, url, api_key, body, headers)
        except (OSError, http.client.HTTPException) as exc:
            return f"a sample {method} failed: {type(exc).__name__}: {exc}"
        text = payload.decode(errors="replace").strip().replace("\n", " ")
        if not 200 <= status < 400:
            return f"a sample {method} answered {status}: {text[:300]}"
    return f"{PROBES} sample {method} requests after the run all answered {status}"


def measure(
    settings: Settings,
    server: Server,
    database: str,
    operation: str,
    url: str,
    api_key: str | None,
    label: str,
) -> Row:
    method = "POST" if operation in ("customers.create", "POST") else "GET"
    script = CREATE_LUA if method == "POST" else RETRIEVE_LUA
    print(f"- {database} {operation}", flush=True)
    runs = run_wrk(settings, url, script, api_key, label)
    server.check_alive()
    result = median_run(runs)
    row = Row(database, operation, result, runs=runs)
    median = " (median)" if len(runs) > 1 else ""
    print(
        f"  {result.rps:,.0f} req/s{median}  p50 {result.p50_ms:.2f} ms  "
        f"p99 {result.p99_ms:.2f} ms  errors {result.error_text()}",
        flush=True,
    )
    if result.errors:
        row.note = probe_error(method, url, api_key, CREATE_BODY if method == "POST" else None)
        print(f"  ! {row.note}", flush=True)
    return row


UVICORN_ARGS = [
    "--workers",
    "2",
    "--http",
    "httptools",
    "--loop",
    "uvloop",
    "--no-access-log",
    "--log-level",
    "warning",
]


def uvicorn_cmd(app: str, port: int) -> list[str]:
    """The bare and floor apps' server: the same uvicorn settings for both."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *UVICORN_ARGS,
    ]


def bare_phase(settings: Settings) -> list[Row]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = OUT / "bare.log"
    log.write_text("")
    server = Server("bare Starlette app", uvicorn_cmd("bench.bare_app:app", port), log)

    def ready():
        status, _ = call("GET", f"{base}/v1/customers/cus_ready", timeout=2)
        return None if status == 200 else f"GET answered {status}"

    rows = []
    try:
        print("\n== bare Starlette handler", flush=True)
        server.start()
        server.wait_ready(ready)
        for op in ("GET", "POST"):
            url = f"{base}/v1/customers/cus_bare" if op == "GET" else f"{base}/v1/customers"
            try:
                rows.append(measure(settings, server, "bare", op, url, None, f"bare-{op.lower()}"))
            except PhaseError as exc:
                rows.append(Row("bare", op, failure=str(exc)))
                print(f"  FAILED: {exc}", flush=True)
    except PhaseError as exc:
        print(f"  FAILED: {exc}", flush=True)
        rows = [Row("bare", op, failure=str(exc)) for op in ("GET", "POST")]
    finally:
        server.stop()
    return rows


def measure_ops(settings, server, name, ops, targets, api_key, label_prefix, rows) -> None:
    """Measure each operation in turn into `rows`; stop early if the server died."""
    for op in ops:
        label = f"{label_prefix}-{op.split('.')[1]}"
        try:
            rows.append(measure(settings, server, name, op, targets[op], api_key, label))
        except PhaseError as exc:
            print(f"  FAILED: {exc}", flush=True)
            rows.append(Row(name, op, failure=str(exc)))
            if not server.alive():
                break


def meterline_phase(settings: Settings, database: str, api_key: str, info: dict) -> list[Row]:
    log = OUT / f"meterline-{database}.log"
    log.write_text("")
    tmpdir = None
    server = None
    rows: list[Row] = []
    ops = ("customers.retrieve", "customers.create")
    print(f"\n== meterline on {database}", flush=True)
    try:
        cli = meterline_cli()
        if database == "sqlite":
            tmpdir = tempfile.mkdtemp(prefix="meterline-bench-")
            url = f"sqlite:///{tmpdir}/bench.db"
        else:
            info["postgresql"] = recreate_postgres_database()
            url = PG_BENCH_URL

        migrate = [cli, "migrate", "--database-url", url]
        with log.open("ab") as fh:
            fh.write(f"$ {shlex.join(migrate)}\n".encode())
            fh.flush()
            proc = subprocess.run(
                migrate, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, timeout=300
            )
        if proc.returncode != 0:
            raise PhaseError(
                f"meterline migrate exited {proc.returncode}; log tail:\n{log_tail(log)}"
            )

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = Server(
            f"meterline serve ({database})",
            [
                cli,
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--database-url",
                url,
                "--workers",
                "2",
                "--api-key",
                api_key,
            ],
            log,
        )

        def ready():
            status, body = call("GET", f"{base}/v1/customers/x", api_key, timeout=2)
            if status != 404:
                return f"GET /v1/customers/x answered {status}, expected 404"
            try:
                json.loads(body)
            except ValueError:
                return "GET /v1/customers/x answered 404 without a JSON body"
            return None

        server.start()
        server.wait_ready(ready)

        status, body = call(
            "POST",
            f"{base}/v1/customers",
            api_key,
            CREATE_BODY,
            {"Idempotency-Key": f"bench-setup-{secrets.token_hex(8)}"},
        )
        try:
            customer_id = json.loads(body)["id"] if status == 200 else None
        except (ValueError, KeyError, TypeError):
            customer_id = None
        if not customer_id:
            raise PhaseError(f"POST /v1/customers answered {status}: {body[:300]!r}")
        status, body = call("GET", f"{base}/v1/customers/{customer_id}", api_key)
        if status != 200:
            raise PhaseError(f"GET /v1/customers/{customer_id} answered {status}: {body[:300]!r}")

        targets = {
            "customers.retrieve": f"{base}/v1/customers/{customer_id}",
            "customers.create": f"{base}/v1/customers",
        }
        measure_ops(settings, server, database, ops, targets, api_key, database, rows)
    except (PhaseError, subprocess.TimeoutExpired, OSError, http.client.HTTPException) as exc:
        print(f"  FAILED: {exc}", flush=True)
        done = {r.operation for r in rows}
        rows += [Row(database, op, failure=str(exc)) for op in ops if op not in done]
    finally:
        if server is not None:
            server.stop()
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)
    done = {r.operation for r in rows}
    rows += [
        Row(database, op, failure="not run: the server stopped") for op in ops if op not in done
    ]
    return rows


def floor_phase(settings: Settings, database: str, info: dict) -> list[Row]:
    """The database floor (bench/floor_app.py) on a fresh database of the given kind."""
    name = f"{database} floor"
    log = OUT / f"floor-{database}.log"
    log.write_text("")
    tmpdir = None
    server = None
    rows: list[Row] = []
    ops = ("customers.retrieve", "customers.create")
    print(f"\n== database floor on {database}", flush=True)
    try:
        if database == "sqlite":
            tmpdir = tempfile.mkdtemp(prefix="meterline-floor-")
            url = f"{tmpdir}/floor.db"
        else:
            info["postgresql"] = recreate_postgres_database(FLOOR_PG_DATABASE)
            url = FLOOR_PG_URL
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = Server(
            f"floor app ({database})",
            uvicorn_cmd("bench.floor_app:app", port),
            log,
            env=dict(os.environ, FLOOR_DATABASE_URL=url),
        )

        def ready():
            status, _ = call("GET", f"{base}/v1/customers/{FLOOR_SEED_ID}", timeout=2)
            return None if status == 200 else f"GET answered {status}"

        server.start()
        server.wait_ready(ready)
        status, body = call("POST", f"{base}/v1/customers", None, CREATE_BODY)
        if status != 200:
            raise PhaseError(f"POST /v1/customers answered {status}: {body[:300]!r}")

        targets = {
            "customers.retrieve": f"{base}/v1/customers/{FLOOR_SEED_ID}",
            "customers.create": f"{base}/v1/customers",
        }
        measure_ops(settings, server, name, ops, targets, None, f"floor-{database}", rows)
    except (PhaseError, subprocess.TimeoutExpired, OSError, http.client.HTTPException) as exc:
        print(f"  FAILED: {exc}", flush=True)
        done = {r.operation for r in rows}
        rows += [Row(name, op, failure=str(exc)) for op in ops if op not in done]
    finally:
        if server is not None:
            server.stop()
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)
    done = {r.operation for r in rows}
    rows += [Row(name, op, failure="not run: the server stopped") for op in ops if op not in done]
    return rows


# ----------------------------------------------------------------------- report


def with_first_failure(rows: list[Row]) -> list[tuple[Row, str | None]]:
    """Pairs each failed row with a pointer to an earlier row with the same failure."""
    first: dict[str, Row] = {}
    out = []
    for r in rows:
        prev = first.setdefault(r.failure or "", r)
        out.append((r, None if prev is r else f"same failure as {prev.database} {prev.operation}"))
    return out


def machine_info(wrk: str) -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:
        nproc = os.cpu_count() or 0
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    return {
        "nproc": nproc,
        "cpu": cpu,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "kernel": platform.release(),
        "wrk": wrk_version(wrk),
        "commit": commit.stdout.strip() if commit.returncode == 0 else "(no commit yet)",
    }


def fmt_rate(result: WrkResult) -> str:
    return f"{result.rps:,.0f}"


def fmt_spread(runs: list[WrkResult]) -> str:
    if len(runs) < 2:
        return "(1 run)"
    rates = [r.rps for r in runs]
    return f"{min(rates):,.0f}–{max(rates):,.0f}"


def ratio_text(res: WrkResult, base: WrkResult | None) -> str:
    return f"{res.rps / base.rps:.1%}" if base and base.rps > 0 else "n/a"


def table_rows(rows: list[Row]) -> list[list[str]]:
    bare = {r.operation: r.result for r in rows if r.kind == "bare" and r.result}
    floor = {(r.engine, r.operation): r.result for r in rows if r.kind == "floor" and r.result}
    out = []
    for row in rows:
        res = row.result
        if row.kind == "bare":
            label = {"GET": "GET /v1/customers/{id}", "POST": "POST /v1/customers"}[row.operation]
            cells = ["bare Starlette", label]
        elif row.kind == "floor":
            cells = [row.database, FLOOR_LABEL[row.operation]]
        else:
            cells = [row.database, row.operation]
        target = TARGETS.get(row.operation) if row.kind == "meterline" else None
        target_s = f"≥ {target:.0%}" if target is not None else ""
        if res is None:
            met = "no (failed)" if target is not None else ""
            out.append([*cells, "FAILED", "", "", "", "see below", "", "", target_s, met])
            continue
        measured = [
            fmt_rate(res),
            fmt_spread(row.runs),
            f"{res.p50_ms:.2f}",
            f"{res.p99_ms:.2f}",
            res.error_text(),
        ]
        if row.kind == "bare":
            out.append([*cells, *measured, "100% (baseline)", "", "", ""])
            continue
        base = bare.get(BARE_OP[row.operation])
        if row.kind == "floor":
            out.append([*cells, *measured, ratio_text(res, base), "100% (floor)", "", ""])
            continue
        if base and base.rps > 0:
            if res.errors:
                met = "no (errors)"
            else:
                met = "yes" if res.rps / base.rps >= target else "no"
        else:
            met = "n/a (no bare run)"
        floor_res = floor.get((row.engine, row.operation))
        floor_s = ratio_text(res, floor_res) if floor_res else "n/a (no floor run)"
        out.append([*cells, *measured, ratio_text(res, base), floor_s, target_s, met])
    return out


HEADER = [
    "database",
    "operation",
    "req/s",
    "spread req/s",
    "p50 ms",
    "p99 ms",
    "errors",
    "ratio to bare handler",
    "ratio to floor",
    "target",
    "met?",
]


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADER)]
    line = "  ".join(h.ljust(w) for h, w in zip(HEADER, widths, strict=True))
    print("\n" + line)
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


def markdown_table(rows: list[list[str]]) -> str:
    def esc(cell: str) -> str:
        return cell.replace("|", "\\|")

    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def write_report(
    rows: list[Row], settings: Settings, info: dict, argv: list[str], started: dt.datetime
) -> None:
    wrk_args = " ".join(settings.args(settings.seconds))
    invocation = ".venv/bin/python bench/run.py" + (" " + shlex.join(argv) if argv else "")
    partial = any(a.startswith(("--only", "--no-floor")) for a in argv)
    warm = f"a {settings.warmup} s warm-up" if settings.warmup > 0 else "no warm-up"
    runs = (
        f"{settings.repeat} measured runs of {settings.seconds} s"
        if settings.repeat > 1
        else f"one measured run of {settings.seconds} s"
    )
    shown = (
        "the median run by req/s" + (" (the lower middle one)" if settings.repeat % 2 == 0 else "")
        if settings.repeat > 1
        else "that run"
    )
    uvicorn = " ".join(UVICORN_ARGS)
    pg = f"PostgreSQL {info['postgresql']}" if info.get("postgresql") else None

    md = [
        "# Performance",
        "",
        "<!-- Generated by bench/run.py (`make bench`); edits above the bench:other marker"
        " are overwritten. -->",
        "",
        f"- Date: {started.strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']},"
        f" {info['python']}, {info['wrk']}" + (f", {pg}" if pg else ""),
        f"- meterline commit: {info['commit']}",
        f"- Command: `make bench` → `{invocation}`",
        f"- Load: `wrk {wrk_args}`, client and servers on the same machine, 127.0.0.1."
        f" Each operation gets {warm}, then {runs}; the table shows {shown}"
        + (
            " (req/s, p50 and p99 all of that run), spread req/s is the lowest–highest req/s"
            " of the runs, and errors are summed over all runs."
            if settings.repeat > 1
            else "."
        ),
        "  - customers.retrieve: `wrk … -s bench/retrieve_customer.lua -H 'Authorization:"
        " Bearer sk_test_…' http://127.0.0.1:PORT/v1/customers/cus_…`",
        "  - customers.create: `wrk … -s bench/create_customer.lua -H 'Authorization:"
        " Bearer sk_test_…' http://127.0.0.1:PORT/v1/customers` — form body"
        " `name=bench&email=bench%40example.com`, a unique `Idempotency-Key` per request.",
        "- Servers: `meterline serve --workers 2` on SQLite (fresh temp file) and PostgreSQL"
        f" (database `{PG_DATABASE}` dropped and recreated); the bare handler is"
        f" `uvicorn bench.bare_app:app {uvicorn}`; the database floor is"
        f" `uvicorn bench.floor_app:app {uvicorn}` on a fresh SQLite file or the database"
        f" `{FLOOR_PG_DATABASE}` (dropped and recreated), run right after meterline on the"
        " same database.",
        "- Database floor: the same server stack doing only the least database work each"
        " operation needs — retrieve is one indexed point SELECT of a customer row by id,"
        " create is one INSERT of a customer row committed durably (SQLite in WAL mode with"
        " synchronous=NORMAL, PostgreSQL with synchronous_commit on) — through one"
        " plain-driver connection per worker, in a table shaped like meterline's customers"
        " table, with no auth, no idempotency and no Stripe encoding. It is what the database"
        " alone allows on this machine with this server stack: the gap between the floor and"
        " the bare handler is the database's cost, not meterline's, and the ratio to floor"
        " shows how much of what the database allows meterline keeps. The floor commits every"
        " INSERT on its own, so meterline, whose concurrent writes share one commit, can"
        " exceed it on create.",
        "- Ratios: meterline (or floor) req/s ÷ bare handler req/s for the same method"
        " (retrieve vs GET, create vs POST), and meterline req/s ÷ floor req/s for the same"
        " database and operation. Targets are against the bare handler; the floor is context."
        " A run with errors does not meet its target.",
    ]
    if partial:
        md += ["", f"**Partial run** (`{shlex.join(argv)}`): only the rows below were measured."]
    md += ["", markdown_table(table_rows(rows)), ""]
    failures = [r for r in rows if r.failure]
    notes = [r for r in rows if r.note]
    if failures or notes:
        md += ["## Failures", ""]
        for r, same in with_first_failure(failures):
            if same:
                md += [f"- {r.database} {r.operation}: {same}.", ""]
                continue
            md += [f"- {r.database} {r.operation}: failed.", "", "  ```"]
            md += ["  " + line for line in r.failure.splitlines()]
            md += ["  ```", ""]
        for r in notes:
            md += [f"- {r.database} {r.operation}: {r.result.error_text()} errors; {r.note}", ""]
    md += ["Raw wrk output and server logs of the last run: `bench/out/` (not committed).", ""]

    preserved = OTHER_MARKER + "\n"
    if REPORT.exists():
        existing = REPORT.read_text()
        lines = existing.splitlines(keepends=True)
        for i, line in enumerate(lines):
            if line.strip() == OTHER_MARKER:
                preserved = "".join(lines[i:])
                if not preserved.endswith("\n"):
                    preserved += "\n"
                break
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("\n".join(md) + "\n" + preserved)
    print(f"\nwrote {REPORT}")


# ------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds",
        type=int,
        default=int(os.environ.get("BENCH_SECONDS", "10")),
        help="measured wrk duration per run (default: $BENCH_SECONDS or 10)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=2,
        help="warm-up seconds before each operation's measured runs (0: none)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="measured runs per operation; the median run by req/s is reported (default 3)",
    )
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument(
        "--only",
        choices=["sqlite", "postgresql"],
        action="append",
        help="benchmark only this database and its floor (repeatable); the bare handler"
        " always runs",
    )
    parser.add_argument(
        "--only-bare", action="store_true", help="benchmark only the bare Starlette handler"
    )
    parser.add_argument(
        "--no-floor", action="store_true", help="skip the database floor (bench/floor_app.py)"
    )
    parser.add_argument("--no-report", action="store_true", help="do not write docs/PERFORMANCE.md")
    args = parser.parse_args(argv)
    if args.only_bare and args.only:
        parser.error("--only-bare and --only exclude each other")
    if args.seconds < 1:
        parser.error("--seconds must be at least 1")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    started = dt.datetime.now(dt.UTC)
    OUT.mkdir(parents=True, exist_ok=True)
    wrk = ensure_wrk()
    settings = Settings(wrk, args.threads, args.connections, args.seconds, args.warmup, args.repeat)
    info = machine_info(wrk)
    print(
        f"{info['nproc']} CPUs ({info['cpu']}), {info['python']}, {info['wrk']}; "
        f"wrk {' '.join(settings.args(settings.seconds))}, {settings.repeat} run(s) per operation",
        flush=True,
    )

    databases = [] if args.only_bare else (args.only or ["sqlite", "postgresql"])
    api_key = "sk_test_bench" + secrets.token_hex(12)

    rows: list[Row] = []
    try:
        rows += bare_phase(settings)
        for database in databases:
            rows += meterline_phase(settings, database, api_key, info)
            if not args.no_floor:
                rows += floor_phase(settings, database, info)
    except KeyboardInterrupt:
        print("\ninterrupted: no report written", file=sys.stderr)
        return 130

    table = table_rows(rows)
    print_table(table)
    failed = [r for r in rows if r.failure]
    with_errors = [r for r in rows if r.result and r.result.errors]
    for r, same in with_first_failure(failed):
        print(f"\nFAILED {r.database} {r.operation}: " + (same or f"\n{r.failure}").rstrip())
    for r in with_errors:
        print(f"\nERRORS {r.database} {r.operation}: {r.result.error_text()}; {r.note}")

    (OUT / "results.json").write_text(
        json.dumps(
            {
                "started": started.isoformat(),
                "machine": info,
                "wrk_args": settings.args(settings.seconds),
                "repeat": settings.repeat,
                "warmup": settings.warmup,
                "rows": [dataclasses.asdict(r) for r in rows],
            },
            indent=2,
        )
    )
    if not args.no_report:
        write_report(rows, settings, info, argv, started)
    return 1 if failed or with_errors else 0


if __name__ == "__main__":
    sys.exit(main())
