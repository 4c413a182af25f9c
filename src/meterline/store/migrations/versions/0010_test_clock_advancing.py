"""A test clock advances in the background: the time it is moving to, and until when the worker
running the advance holds it (another worker takes over an advance whose claim has lapsed).

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("test_clocks") as b:
        b.add_column(sa.Column("target_frozen_time", sa.BigInteger, nullable=True))
        b.add_column(sa.Column("claimed_until", sa.BigInteger, nullable=True))
    op.create_index("ix_test_clocks_advancing", "test_clocks", ["status"])


def downgrade() -> None:
    op.drop_index("ix_test_clocks_advancing", "test_clocks")
    with op.batch_alter_table("test_clocks") as b:
        b.drop_column("claimed_until")
        b.drop_column("target_frozen_time")
