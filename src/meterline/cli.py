"""The `meterline` command: serve, migrate, keys."""

from __future__ import annotations

import logging
import os
import sys

import click

from meterline.store.db import DEFAULT_URL, Database

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
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def serve(
    host: str, port: int, database_url: str, workers: int, api_key: str | None, log_level: str
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


if __name__ == "__main__":
    main()
