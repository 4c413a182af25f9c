"""Meter usage rollups (quarter-hour and hour cells), their watermark, the cancellation queue.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from meterline.store.types import DecimalText

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "meter_usage_rollups",
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("livemode", sa.Boolean, nullable=False),
        sa.Column("customer", sa.String(255), nullable=False),
        sa.Column("meter", sa.String(255), nullable=False),
        sa.Column("resolution", sa.Integer, nullable=False),
        sa.Column("bucket", sa.BigInteger, nullable=False),
        sa.Column("dims", sa.String(2000), nullable=False),
        sa.Column("sum", DecimalText, nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("last_ts", sa.BigInteger, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("last_value", DecimalText, nullable=False),
        sa.PrimaryKeyConstraint(
            "account_id",
            "livemode",
            "customer",
            "meter",
            "resolution",
            "bucket",
            "dims",
            name="pk_meter_usage_rollups",
        ),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "rollup_state",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("watermark", sa.BigInteger, nullable=False),
        sa.Column("updated", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "meter_event_cancels",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("livemode", sa.Boolean, nullable=False),
        sa.Column("customer", sa.String(255), nullable=False),
        sa.Column("meter", sa.String(255), nullable=False),
        sa.Column("timestamp", sa.BigInteger, nullable=False),
        sa.Column("event_seq", sa.BigInteger, nullable=False),
    )
    op.create_index(
        "ix_meter_event_cancels_customer",
        "meter_event_cancels",
        ["account_id", "livemode", "customer"],
    )


def downgrade() -> None:
    op.drop_index("ix_meter_event_cancels_customer", "meter_event_cancels")
    op.drop_table("meter_event_cancels")
    op.drop_table("rollup_state")
    op.drop_table("meter_usage_rollups")
