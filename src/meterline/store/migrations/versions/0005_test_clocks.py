"""Test clocks.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "test_clocks",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("livemode", sa.Boolean, nullable=False),
        sa.Column("created", sa.BigInteger, nullable=False),
        sa.Column("name", sa.String(300)),
        sa.Column("frozen_time", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("deletes_after", sa.BigInteger, nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.UniqueConstraint("id", "account_id", "livemode", name="uq_test_clocks_id"),
    )
    op.create_index(
        "ix_test_clocks_list", "test_clocks", ["account_id", "livemode", "created", "seq"]
    )


def downgrade() -> None:
    op.drop_index("ix_test_clocks_list", "test_clocks")
    op.drop_table("test_clocks")
