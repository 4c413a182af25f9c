"""Metering: meters and raw meter events.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from meterline.store.types import DecimalText

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def _owned(name, *cols, indexes=()):
    op.create_table(
        name,
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("livemode", sa.Boolean, nullable=False),
        sa.Column("created", sa.BigInteger, nullable=False),
        *cols,
        sa.UniqueConstraint("id", "account_id", "livemode", name=f"uq_{name}_id"),
    )
    op.create_index(f"ix_{name}_list", name, ["account_id", "livemode", "created", "seq"])
    for ix_name, columns, unique in indexes:
        op.create_index(ix_name, name, columns, unique=unique)


def upgrade() -> None:
    _owned(
        "meters",
        sa.Column("updated", sa.BigInteger, nullable=False),
        sa.Column("display_name", sa.String(250), nullable=False),
        sa.Column("event_name", sa.String(100), nullable=False),
        sa.Column("formula", sa.String(8), nullable=False),
        sa.Column("customer_key", sa.String(100), nullable=False),
        sa.Column("value_key", sa.String(100), nullable=False),
        sa.Column("event_time_window", sa.String(8)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("deactivated_at", sa.BigInteger),
        sa.Column("dimension_payload_keys", sa.JSON, nullable=False),
        indexes=[("uq_meters_event_name", ["account_id", "livemode", "event_name"], True)],
    )
    _owned(
        "meter_events",
        sa.Column("meter", sa.String(255), nullable=False),
        sa.Column("customer", sa.String(255), nullable=False),
        sa.Column("event_name", sa.String(100), nullable=False),
        sa.Column("timestamp", sa.BigInteger, nullable=False),
        sa.Column("value", DecimalText, nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("cancelled_at", sa.BigInteger),
        indexes=[
            (
                "ix_meter_events_usage",
                ["account_id", "livemode", "customer", "meter", "timestamp"],
                False,
            )
        ],
    )


def downgrade() -> None:
    op.drop_table("meter_events")
    op.drop_table("meters")
