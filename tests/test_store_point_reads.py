"""`Repo.get` on PostgreSQL reads through libpq directly (store/fast.py, `pg_get`): it must give
exactly what the cursor path gives, in and out of a transaction, and fail as it would."""

from __future__ import annotations

from decimal import Decimal

import pytest

from conftest import fresh_database_url
from meterline.store.db import Database
from meterline.store.fast import compiled, pg_get
from meterline.store.migrate import upgrade
from meterline.store.repo import Repo, Scope
from meterline.store.tables import customers, prices

SCOPE = Scope("acct_pointreads", False)


@pytest.fixture
def db(db_kind, tmp_path):
    if db_kind != "postgresql":
        pytest.skip("the libpq point read is PostgreSQL's")
    url, drop = fresh_database_url(db_kind, tmp_path)
    database = Database(url)
    upgrade(database.engine)
    yield database
    database.dispose()
    drop()


def _via_cursor(conn, table, id):
    ct = compiled(table, conn.dialect)
    cur = conn.connection.driver_connection.cursor()
    cur.execute(ct.get_sql, (SCOPE.account_id, SCOPE.livemode, id))
    row = cur.fetchone()
    cur.close()
    return ct.decode(row)


ROWS = [
    (
        customers,
        {
            "id": "cus_pointread",
            "created": 1_700_000_000,
            "deleted": False,
            "email": "zoë@example.com",
            "name": 'Zoë "quoted" \\ back',
            "address": {"city": "Ghent", "line1": None},
            "preferred_locales": ["nl", "fr"],
            "metadata": {"k": "v"},
        },
    ),
    (
        prices,
        {
            "id": "price_pointread",
            "created": 1_700_000_000,
            "active": True,
            "product": "prod_x",
            "currency": "eur",
            "type": "recurring",
            "billing_scheme": "per_unit",
            "unit_amount_decimal": Decimal("0.000000000123456789"),
            "tiers": [{"up_to": 10, "unit_amount_decimal": "1.5"}],
            "interval": "month",
            "interval_count": 1,
            "tax_behavior": "unspecified",
            "metadata": {},
        },
    ),
]


def test_libpq_point_read_gives_what_the_cursor_gives(db):
    for table, row in ROWS:
        with db.write() as conn:
            Repo(conn, SCOPE).insert(table, row)
        with db.read() as conn:
            got = Repo(conn, SCOPE).get(table, row["id"])
            assert got is not None
            want = _via_cursor(conn, table, row["id"])
            assert got == want
            assert [type(v) for v in got.values()] == [type(v) for v in want.values()]
            assert Repo(conn, SCOPE).get(table, "missing") is None
        with db.write() as conn:
            assert Repo(conn, SCOPE).get(table, row["id"], for_update=True) == want


def test_libpq_point_read_is_only_for_autocommit_readers(db):
    with db.write() as conn:
        raw = conn.connection.driver_connection
        ct = compiled(customers, conn.dialect)
        # Not yet begun (psycopg sends BEGIN with the first statement), or begun: the cursor's.
        assert pg_get(raw, ct, SCOPE, "cus_x", True) is pg_get.NOT_HERE
        conn.exec_driver_sql("SELECT 1")
        assert pg_get(raw, ct, SCOPE, "cus_x", False) is pg_get.NOT_HERE
        assert Repo(conn, SCOPE).get(customers, "cus_x", for_update=True) is None


def test_libpq_point_read_prepares_again_what_psycopg_deallocated(db):
    with db.write() as conn:
        Repo(conn, SCOPE).insert(customers, ROWS[0][1])
    with db.read() as conn:
        assert Repo(conn, SCOPE).get(customers, "cus_pointread") is not None
        conn.exec_driver_sql("DEALLOCATE ALL")
        assert Repo(conn, SCOPE).get(customers, "cus_pointread")["name"] == ROWS[0][1]["name"]
