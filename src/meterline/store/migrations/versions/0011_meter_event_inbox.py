"""The v2 stream's landing log: stream events are appended here at their 200 and moved into
`meter_events` in bulk by a background drain. And, on SQLite, the validation epoch: a counter
that triggers move on every update or delete of customers, meters and test clocks.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

from meterline.store.types import DecimalText

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

TABLES = ("customers", "meters", "test_clocks")  # what stream validation reads
# Not INSERT: a new row can only turn a refusal ("no such customer", "no meter") into an
# acceptance, and a request whose validation met one reads its rows again anyway
# (services.meter_events.Lookups.unchanged); so creating customers pays nothing for it.
CHANGES = ("UPDATE", "DELETE")


def upgrade() -> None:
    op.create_table(
        "meter_event_inbox",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("livemode", sa.Boolean, nullable=False),
        sa.Column("created", sa.BigInteger, nullable=False),
        sa.Column("meter", sa.String(255), nullable=False),
        sa.Column("customer", sa.String(255), nullable=False),
        sa.Column("event_name", sa.String(100), nullable=False),
        sa.Column("timestamp", sa.BigInteger, nullable=False),
        sa.Column("value", DecimalText, nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("cancelled_at", sa.BigInteger),
    )
    op.create_table(
        "change_epochs",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("n", sa.BigInteger, nullable=False),
    )
    op.execute("INSERT INTO change_epochs (name, n) VALUES ('validation', 0)")
    if op.get_bind().dialect.name == "sqlite":
        for table in TABLES:
            for what in CHANGES:
                op.execute(
                    f"CREATE TRIGGER tr_{table}_{what.lower()}_epoch AFTER {what} ON {table} "
                    "BEGIN UPDATE change_epochs SET n = n + 1 WHERE name = 'validation'; END"
                )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for table in TABLES:
            for what in CHANGES:
                op.execute(f"DROP TRIGGER tr_{table}_{what.lower()}_epoch")
    op.drop_table("change_epochs")
    op.drop_table("meter_event_inbox")
