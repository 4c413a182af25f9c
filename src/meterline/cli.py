"""The `meterline` command: serve, migrate, keys, import, usage, rollups."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from zoneinfo import ZoneInfo

import click

from meterline.engine.buckets import WINDOWS
from meterline.store.db import DEFAULT_URL, Database
from meterline.store.repo import Scope

if TYPE_CHECKING:
    from rich.console import Console

    from meterline.services.imports import Summary

DB_OPTION = click.option(
    "--database-url",
    envvar="METERLINE_DATABASE_URL",
    default=DEFAULT_URL,
    show_default=True,
    help="Where the data lives: sqlite:///path/to/file.db (embedded) or postgresql://user@host:port/db. "
    "Also read from METERLINE_DATABASE_URL.",
)


def _open(url: str) -> Database:
    try:
        return Database(url)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--database-url")


def _migrate(db: Database) -> None:
    from meterline.store.migrate import upgrade

    try:
        upgrade(db.engine)
    except Exception as e:  # an unreachable or broken database: say so plainly
        raise click.ClickException(
            f"Could not apply the migrations to {db.engine.url.render_as_string(hide_password=True)}: {e}"
        )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """meterline: a self-hosted usage-based billing engine that speaks Stripe's API.

    Start a server with `meterline serve`, then point the official Stripe SDKs at it
    (base address http://127.0.0.1:12111) with the secret key it prints.
    """


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port",
    default=12111,
    show_default=True,
    type=int,
    help="Port to listen on (12111 is stripe-mock's).",
)
@DB_OPTION
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Worker processes (each a full server on the same database).",
)
@click.option(
    "--api-key",
    envvar="METERLINE_API_KEY",
    default=None,
    help="A secret key (sk_test_... or sk_live_...) that must work; it is stored (hashed) for the default account. "
    "Also read from METERLINE_API_KEY. Without one, a key is created and printed when none exists.",
)
@click.option(
    "--rollup-interval",
    envvar="METERLINE_ROLLUP_INTERVAL",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds between folds of new meter events into the usage rollups, in each worker "
    "(0: never; answers stay exact either way, from the raw events the rollups lack).",
)
@click.option(
    "--drain-interval",
    envvar="METERLINE_DRAIN_INTERVAL",
    default=2.0,
    show_default=True,
    type=click.FloatRange(0.01),
    help="Seconds between moves of the v2 stream's accepted events from its landing log into "
    "the meter events, in each worker: longer gathers more events per move (faster ingest), "
    "shorter shows them sooner (analytics' data_refreshed_at tells how fresh an answer is).",
)
@click.option(
    "--jobs-interval",
    envvar="METERLINE_JOBS_INTERVAL",
    default=5.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds between runs of the background jobs (renewals and invoice finalizations, "
    "credit ledger entries falling due, test clock advances whose worker stopped, purging "
    "expired idempotency keys and sessions), in each worker; one worker runs a job at a time "
    "(0: never).",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def serve(
    host: str,
    port: int,
    database_url: str,
    workers: int,
    api_key: str | None,
    rollup_interval: float,
    drain_interval: float,
    jobs_interval: float,
    log_level: str,
) -> None:
    """Apply the migrations and serve Stripe's API over HTTP."""
    import uvicorn

    from meterline.services import accounts

    db = _open(database_url)
    _migrate(db)
    account = accounts.ensure_default_account(db)
    printed_key = None
    if api_key:
        try:
            accounts.check_key_format(api_key)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--api-key")
        accounts.ensure_key(db, api_key)
        printed_key = api_key
    elif not accounts.has_keys(db, account):
        _, printed_key = accounts.create_key(db)
    db.dispose()
    base = f"http://{host}:{port}"
    click.echo(
        f"meterline serving Stripe's API at {base} (database: {database_url}, workers: {workers})"
    )
    if printed_key:
        click.echo(f"Secret key (test mode): {printed_key}")
    else:
        click.echo(
            "Using the keys stored in the database; create one with `meterline keys create`."
        )
    click.echo(f'Try: curl {base}/v1/customers -u "<secret key>:"')
    sys.stdout.flush()
    os.environ["METERLINE_DATABASE_URL"] = database_url
    os.environ["METERLINE_ROLLUP_INTERVAL"] = str(rollup_interval)
    os.environ["METERLINE_JOBS_INTERVAL"] = str(jobs_interval)
    os.environ["METERLINE_DRAIN_INTERVAL"] = str(drain_interval)
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        "meterline.api.factory:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers if workers > 1 else None,
        log_level=log_level,
        access_log=False,
        http="httptools",
        loop="uvloop",
        lifespan="on",
    )


@main.command()
@DB_OPTION
def migrate(database_url: str) -> None:
    """Create or upgrade the database schema (safe to run again)."""
    db = _open(database_url)
    _migrate(db)
    db.dispose()
    click.echo(f"Migrations applied to {database_url}.")


@main.group()
def keys() -> None:
    """Secret keys: each belongs to one account, in test or live mode."""


@keys.command("create")
@DB_OPTION
@click.option(
    "--new-account",
    is_flag=True,
    help="Create a new account and its first key, instead of a key for the default account.",
)
@click.option(
    "--live",
    is_flag=True,
    help="Make a live-mode key (sk_live_...); live data is separate from test data.",
)
def keys_create(database_url: str, new_account: bool, live: bool) -> None:
    """Print a new secret key, alone on the last line (for scripts: KEY=$(meterline keys create | tail -1)).

    Works while a server runs on the same database; the server accepts the key at once.
    """
    from meterline.services import accounts

    db = _open(database_url)
    _migrate(db)
    account, key = accounts.create_key(db, new_account=new_account, livemode=live)
    db.dispose()
    click.echo(
        f"New {'live' if live else 'test'}-mode secret key for account {account}{' (new account)' if new_account else ''}:"
    )
    click.echo(key)


# -- usage rollups -----------------------------------------------------------------------------


@main.group()
def rollups() -> None:
    """Usage rollups: per-customer quarter-hour and hour cells that analytics and invoices read.

    They are derived from the raw meter events, which stay the source of truth; every server
    worker folds new events into them about once a second (`serve --rollup-interval`).
    """


@rollups.command("rebuild")
@DB_OPTION
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def rollups_rebuild(database_url: str, no_progress: bool) -> None:
    """Drop every rollup cell and build them again from the raw meter events.

    One transaction: answers use the old cells until it commits (they are exact either way).
    On SQLite it holds the write lock, so ingestion waits; on PostgreSQL it goes on.
    """
    import time

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from meterline.services import rollups as rollups_service

    db = _open(database_url)
    _migrate(db)
    started = time.monotonic()
    with Progress(
        TextColumn("[bold]rebuilding rollups"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("events"),
        TimeRemainingColumn(),
        disable=no_progress or not sys.stdout.isatty(),
    ) as progress:
        task = progress.add_task("rebuild", total=None)

        def on_progress(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        with _database_errors(db):
            n = rollups_service.rebuild(db, progress=on_progress)
    db.dispose()
    seconds = time.monotonic() - started
    click.echo(f"Rebuilt the rollups from {n:,} events in {seconds:.1f} s.")


@rollups.command("build")
@DB_OPTION
def rollups_build(database_url: str) -> None:
    """Fold the events the rollups lack (what the server does every second)."""
    from meterline.services import rollups as rollups_service

    db = _open(database_url)
    _migrate(db)
    with _database_errors(db):
        n = rollups_service.catch_up(db)
    db.dispose()
    click.echo(f"Folded {n:,} events into the rollups.")


# -- invoices ------------------------------------------------------------------------------------


@main.group()
def invoices() -> None:
    """Invoices: the billing run that every server worker also does in the background."""


@invoices.command("run")
@DB_OPTION
@click.option(
    "--now",
    "now_",
    type=int,
    default=None,
    help="Run what is due by this Unix time instead of the wall clock's now (for catching up "
    "or rehearsing a run; test clock customers always follow their clocks).",
)
@click.option(
    "--parallel",
    type=click.IntRange(1, 32),
    default=None,
    help="PostgreSQL connections to bill on at once, customers split among them "
    "(default 4; SQLite always uses one).",
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def invoices_run(
    database_url: str, now_: int | None, parallel: int | None, no_progress: bool
) -> None:
    """Renew every subscription whose period has ended and finalize every draft invoice whose
    hour has passed, with credits, in time order (what `serve` does every few seconds).

    Steps are grouped in transactions that can run while servers run: a step done by one is
    never done again by another. One customer's steps run in time order.
    """
    import time

    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from meterline import clock
    from meterline.services import due_work

    db = _open(database_url)
    _migrate(db)
    at = clock.now() if now_ is None else now_
    started = time.monotonic()
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]billing run[/] {task.completed:,} steps"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        disable=no_progress or not sys.stdout.isatty(),
    ) as progress:
        task = progress.add_task("run", total=None, rate="")

        def step(n: int) -> None:
            progress.advance(task, n)
            done = progress.tasks[0].completed
            elapsed = max(time.monotonic() - started, 1e-9)
            progress.update(task, rate=f"{done / elapsed:,.0f} steps/s")

        with _database_errors(db):
            n = due_work.bill_due(db, at, progress=step, lanes=parallel)
    db.dispose()
    seconds = time.monotonic() - started
    rate = n / seconds if seconds > 0 else 0.0
    click.echo(
        f"Ran {n:,} billing steps (renewals and finalizations) due by {at} in {seconds:.1f} s "
        f"({rate:,.0f} steps/s)."
    )


# -- meter events from a file, and usage -------------------------------------------------------

CLI_USAGE_PARAMS = {
    "start_param": "--start",
    "end_param": "--end",
    "window_param": "--window",
    "timezone_param": "--timezone",
}
_GROUP_BY_PARAM = re.compile(r"\Ameters\[\d+\]\[dimension_group_by_keys\]\[\d+\]\Z")


def _account_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--live",
        is_flag=True,
        help="Use live-mode data of --account or of the default account (test mode otherwise). "
        "With --api-key the key decides: sk_live_ keys are live.",
    )(f)
    f = click.option(
        "--account",
        "account_id",
        metavar="ACCOUNT_ID",
        default=None,
        help="The account (acct_...) to use, instead of a key.",
    )(f)
    f = click.option(
        "--api-key",
        metavar="KEY",
        default=None,
        help="A secret key (sk_test_... or sk_live_...): its account and mode are used. "
        "Without --api-key or --account: the default account, in test mode.",
    )(f)
    return f


def _scope(db: Database, api_key: str | None, account_id: str | None, live: bool) -> Scope:
    """The account and mode a command acts on: a key's, an account's, or the default account's."""
    from meterline.services import accounts

    if api_key and account_id:
        raise click.UsageError("Give either --api-key or --account, not both.")
    if api_key:
        try:
            accounts.check_key_format(api_key)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--api-key")
        found = accounts.resolve_key(db, api_key)
        if found is None:
            raise click.BadParameter(
                "No account in this database has this key. Check --database-url, or make a key "
                "with `meterline keys create`.",
                param_hint="--api-key",
            )
        account, livemode = found
        if live and not livemode:
            raise click.UsageError(
                "--live does not go with a test-mode key: the key's mode is the data's mode. "
                "Use an sk_live_ key, or --account with --live."
            )
        return Scope(account, livemode)
    if account_id:
        if not accounts.account_exists(db, account_id):
            raise click.BadParameter(
                f"No account {account_id!r} in this database.", param_hint="--account"
            )
        return Scope(account_id, live)
    account = accounts.default_account(db)
    if account is None:
        raise click.ClickException(
            "This database has no account yet: run `meterline serve` once, or "
            "`meterline keys create`, to make the default account."
        )
    return Scope(account, live)


@contextmanager
def _database_errors(db: Database) -> Iterator[None]:
    import sqlalchemy as sa

    try:
        yield
    except sa.exc.SQLAlchemyError as e:
        detail = getattr(e, "orig", None) or e
        raise click.ClickException(
            f"The database at {db.engine.url.render_as_string(hide_password=True)} failed: "
            f"{detail}. Is it reachable, and has `meterline migrate` run on it?"
        )


def _console() -> Console:
    from rich.console import Console

    # Piped output is not cut to 80 columns (rich's default without a terminal).
    wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(width=160 if wide else None)


def _decimal_text(d: Decimal) -> str:
    return format(d.normalize(), "f") if d != 0 else "0"


@main.command("import", short_help="Backfill meter events from a JSONL or CSV file.")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path))
@DB_OPTION
@_account_options
@click.option(
    "--batch-size",
    default=1000,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Lines stored per transaction.",
)
@click.option(
    "--rejects",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Write every rejected line to this file as JSON Lines: "
    '{"line": 7, "code": "...", "message": "...", "param": "...", "text": "<the line>"}.',
)
@click.option(
    "--no-progress",
    is_flag=True,
    help="No progress bar (there is none anyway when the output is not a terminal).",
)
def import_events(
    file: Path,
    database_url: str,
    api_key: str | None,
    account_id: str | None,
    live: bool,
    batch_size: int,
    rejects: Path | None,
    no_progress: bool,
) -> None:
    """Backfill meter events from FILE (*.jsonl or *.csv) into one account.

    Every line is checked exactly as POST /v1/billing/meter_events checks an event: an active
    meter with that event_name (create meters and customers first, through the API), an
    existing customer, a numeric value, a timestamp within the past 35 days, an identifier not
    seen before. Lines that pass are stored; the others are
    rejected and the import goes on. At the end it prints how many lines were accepted and
    rejected, and the rejections grouped by reason with example line numbers.

    \b
    events.jsonl: one JSON object per line (payload values are strings; timestamp is
    Unix seconds, optional; identifier optional):
      {"event_name": "tokens", "identifier": "req_1", "timestamp": 1767225600,
       "payload": {"stripe_customer_id": "cus_123", "value": "25", "model": "gpt-4"}}

    \b
    events.csv: a header row, then one event per row; payload.<key> columns make the
    payload; an empty cell means absent:
      event_name,timestamp,identifier,payload.stripe_customer_id,payload.value,payload.model
      tokens,1767225600,req_1,cus_123,25,gpt-4

    \b
    Example:
      meterline import events.jsonl --api-key sk_test_... --rejects rejected.jsonl

    Give every line an identifier: then running the same file again is safe (lines already
    stored are rejected as resource_already_exists). A line without one gets a new identifier
    each time, and one without a timestamp is recorded at the time of the import.
    """
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from meterline.services import imports

    try:
        kind = imports.format_of(file.name)
    except imports.SourceError as e:
        raise click.BadParameter(str(e), param_hint="FILE")
    db = _open(database_url)
    _migrate(db)
    with _database_errors(db):
        scope = _scope(db, api_key, account_id, live)
    size = file.stat().st_size
    read = 0

    def counted(f: BinaryIO) -> Iterator[bytes]:
        nonlocal read
        for raw in f:
            read += len(raw)
            yield raw

    with ExitStack() as stack:
        f = stack.enter_context(file.open("rb"))
        try:
            lines = imports.read_lines(kind, counted(f))
        except imports.SourceError as e:
            raise click.ClickException(f"{file}: {e}")
        out = None
        if rejects is not None:
            try:
                out = stack.enter_context(rejects.open("w", encoding="utf-8"))
            except OSError as e:
                raise click.BadParameter(str(e), param_hint="--rejects")

        def on_rejection(r: imports.Rejection) -> None:
            if out is not None:
                out.write(json.dumps(r.as_dict(), ensure_ascii=False) + "\n")

        progress = stack.enter_context(
            Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TextColumn("{task.fields[accepted]} accepted, {task.fields[rejected]} rejected"),
                TimeRemainingColumn(),
                disable=no_progress or not sys.stdout.isatty(),
            )
        )
        task = progress.add_task(file.name, total=size, accepted=0, rejected=0)
        done = [imports.Summary()]  # the summary after the last committed batch

        def on_batch(s: imports.Summary) -> None:
            done[0] = s
            progress.update(task, completed=read, accepted=s.accepted, rejected=s.rejected)

        failure: str | None = None
        try:
            imports.run(
                db,
                scope,
                lines,
                batch_size=batch_size,
                on_rejection=on_rejection,
                on_batch=on_batch,
            )
            progress.update(task, completed=read)
        except imports.ImportStopped as e:
            failure = f"The database failed on the batch starting at line {e.line}: {e.cause}."
        except KeyboardInterrupt:
            failure = "Interrupted."
    db.dispose()
    summary = done[0]
    _print_import_summary(file, scope, summary, rejects)
    if failure is not None:
        raise click.ClickException(
            f"{failure} The lines up to line {summary.last_line} are stored and counted above; "
            "the rest are not. To go on, import the file again: lines with an identifier that "
            "are already stored are rejected as resource_already_exists (lines without one "
            "would be stored twice)."
        )


def _print_import_summary(file: Path, scope: Scope, summary: Summary, rejects: Path | None) -> None:
    from rich.markup import escape
    from rich.table import Table

    console = _console()
    mode = "live" if scope.livemode else "test"
    console.print(
        f"{escape(file.name)}: [green]{summary.accepted} accepted[/], "
        f"[{'red' if summary.rejected else 'green'}]{summary.rejected} rejected[/] "
        f"(account {scope.account_id}, {mode} mode)",
        highlight=False,
    )
    if not summary.rejected:
        return
    console.print("Rejected lines by reason:")
    table = Table()
    table.add_column("reason", no_wrap=True)
    table.add_column("lines", justify="right", no_wrap=True)
    table.add_column("e.g. line", no_wrap=True)
    table.add_column("first message", overflow="fold")
    reasons = sorted(summary.reasons.items(), key=lambda kv: (-kv[1].count, kv[0]))
    for code, reason in reasons:
        examples = ", ".join(str(n) for n in reason.examples)
        table.add_row(code, str(reason.count), examples, escape(reason.message))
    console.print(table, highlight=False)
    if rejects is not None:
        console.print(f"Every rejected line, with its message: {escape(str(rejects))}")
    else:
        console.print("Add --rejects FILE to write every rejected line with its message.")


@main.command(short_help="Show a customer's usage per time bucket, with totals.")
@click.option(
    "--customer",
    required=True,
    metavar="CUSTOMER_ID",
    help="The customer (cus_...) whose usage to show.",
)
@click.option(
    "--meter",
    "meter_ids",
    multiple=True,
    metavar="METER_ID",
    help="A meter (mtr_...); repeat for several. Default: every meter with usage in the range.",
)
@click.option(
    "--start",
    metavar="TIME",
    default=None,
    help="Start of the range (included): Unix seconds, or ISO 8601 such as 2026-01-01, "
    "2026-01-01T08:00 (in --timezone) or 2026-01-01T08:00:00Z. Whole minutes only. "
    "Default: 30 days before --end.",
)
@click.option(
    "--end",
    metavar="TIME",
    default=None,
    help="End of the range (excluded), written like --start. Default: now, rounded up to the "
    "minute.",
)
@click.option(
    "--window",
    type=click.Choice(WINDOWS),
    default="day",
    show_default=True,
    help="The size of each bucket, in local time of --timezone.",
)
@click.option(
    "--timezone",
    "tz",
    default="UTC",
    show_default=True,
    metavar="ZONE",
    help="An IANA time zone (Europe/Berlin, America/New_York): where buckets start, and how "
    "times are shown.",
)
@click.option(
    "--group-by",
    "group_by",
    multiple=True,
    metavar="KEY",
    help="Split each bucket by a dimension the meters declare (dimension_payload_keys), "
    "e.g. model; repeat for several. Needs --meter.",
)
@DB_OPTION
@_account_options
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the rows as JSON, exactly as GET /v1/billing/analytics/meter_usage gives them.",
)
def usage(
    customer: str,
    meter_ids: tuple[str, ...],
    start: str | None,
    end: str | None,
    window: str,
    tz: str,
    group_by: tuple[str, ...],
    database_url: str,
    api_key: str | None,
    account_id: str | None,
    live: bool,
    as_json: bool,
) -> None:
    """Show a customer's metered usage per time bucket, with a total per meter.

    The numbers are those of GET /v1/billing/analytics/meter_usage: each meter's formula
    (sum, count or last) over the customer's events, per bucket of --window.

    \b
    Examples:
      meterline usage --customer cus_123
      meterline usage --customer cus_123 --meter mtr_abc --group-by model \\
          --start 2026-01-01 --end 2026-02-01 --window week --timezone Europe/Berlin
      meterline usage --customer cus_123 --api-key sk_live_... --json
    """
    from meterline import clock
    from meterline.engine.buckets import zone_of
    from meterline.engine.errors import RuleViolation
    from meterline.services import ServiceError, unit
    from meterline.services import usage as svc

    if group_by and not meter_ids:
        raise click.UsageError("--group-by needs the meters to group: name them with --meter.")
    try:
        zone = zone_of(tz, "--timezone")
        end_ts = _instant(end, zone, "--end") if end else -(-clock.now() // 60) * 60
        start_ts = _instant(start, zone, "--start") if start else (end_ts - 30 * 86400) // 60 * 60
        db = _open(database_url)
        with _database_errors(db):
            scope = _scope(db, api_key, account_id, live)
            queries = [svc.MeterQuery(m, tuple(group_by)) for m in meter_ids] or None
            with unit(db, scope, write=False) as repo:
                kw = dict(param_names=CLI_USAGE_PARAMS, meter_param="--meter")
                rows = svc.meter_usage(repo, customer, start_ts, end_ts, window, tz, queries, **kw)
                totals = svc.meter_usage(
                    repo,
                    customer,
                    start_ts,
                    end_ts,
                    None,
                    tz,
                    [svc.MeterQuery(m) for m in meter_ids] or None,
                    **kw,
                )
        db.dispose()
    except (ServiceError, RuleViolation) as e:
        param = e.param
        if param == "customer":
            param = "--customer"
        elif param and _GROUP_BY_PARAM.match(param):
            param = "--group-by"
        raise click.ClickException(f"{e.message}" + (f" (param: {param})" if param else ""))
    if as_json:
        from meterline.api.analytics import number

        data = [
            {
                "object": "billing.analytics.meter_usage_row",
                "bucket_start_time": r.bucket_start_time,
                "bucket_end_time": r.bucket_end_time,
                "meter_id": r.meter_id,
                "bucket_value": number(r.bucket_value),
                "dimensions": r.dimensions,
            }
            for r in rows
        ]
        click.echo(json.dumps(data, indent=2))
        return
    _print_usage(customer, rows, totals, meter_ids, start_ts, end_ts, window, zone)


def _instant(value: str, zone: ZoneInfo, option: str) -> int:
    """Unix seconds from Unix seconds or ISO 8601 (a time without an offset is in `zone`)."""
    text = value.strip()
    if re.fullmatch(r"[+-]?[0-9]+", text):
        return int(text)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither Unix seconds nor an ISO 8601 time "
            "(e.g. 1767225600, 2026-01-01, 2026-01-01T08:00 or 2026-01-01T08:00:00+01:00).",
            param_hint=option,
        )
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=zone)
    return int(dt.timestamp() // 1)


def _print_usage(
    customer: str,
    rows: list[Any],
    totals: list[Any],
    meter_ids: tuple[str, ...],
    start: int,
    end: int,
    window: str,
    zone: ZoneInfo,
) -> None:
    from itertools import groupby

    from rich.table import Table

    def local(ts: int) -> str:
        return datetime.fromtimestamp(ts, zone).isoformat(timespec="minutes")

    console = _console()
    span = f"{local(start)} to {local(end)}"
    if not rows:
        console.print(f"No usage for {customer} from {span} ({zone.key}).", highlight=False)
        return
    total_of = {r.meter_id: r.bucket_value for r in totals}
    console.print(f"Usage of {customer}, {span}, by {window} ({zone.key}):", highlight=False)
    table = Table()
    table.add_column("meter", no_wrap=True)
    table.add_column("bucket start", no_wrap=True)
    table.add_column("bucket end", no_wrap=True)
    table.add_column("dimensions")
    table.add_column("value", justify="right", no_wrap=True)
    for meter_id, group in groupby(rows, key=lambda r: r.meter_id):
        for i, r in enumerate(group):
            dims = ", ".join(
                f"{k}={'(none)' if v is None else v}" for k, v in (r.dimensions or {}).items()
            )
            table.add_row(
                meter_id if i == 0 else "",
                local(r.bucket_start_time),
                local(r.bucket_end_time),
                dims,
                _decimal_text(r.bucket_value),
            )
        table.add_row(
            "total",
            local(start),
            local(end),
            "",
            _decimal_text(total_of.get(meter_id, Decimal(0))),
            style="bold",
            end_section=True,
        )
    console.print(table, highlight=False)
    missing = [m for m in meter_ids if m not in total_of]
    if missing:
        console.print(f"No usage in this range for: {', '.join(missing)}", highlight=False)


if __name__ == "__main__":
    main()
