"""The v2 meter event stream: sessions (token digests) and validation error reports.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
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
        "meter_event_sessions",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        indexes=[("uq_meter_event_sessions_token", ["token_hash"], True)],
    )
    _owned(
        "meter_event_error_reports",
        sa.Column("meter", sa.String(255)),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("counts", sa.JSON, nullable=False),
        sa.Column("samples", sa.JSON, nullable=False),
        sa.Column("validation_start", sa.BigInteger, nullable=False),
        sa.Column("validation_end", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("meter_event_error_reports")
    op.drop_table("meter_event_sessions")
