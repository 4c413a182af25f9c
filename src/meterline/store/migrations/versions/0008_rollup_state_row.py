"""The rollup watermark's row exists from the start, so builders only ever update it (two first
folds racing to insert it could deadlock on PostgreSQL).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    exists = conn.execute(sa.text("SELECT 1 FROM rollup_state WHERE name = 'rollups'")).first()
    if exists is None:
        conn.execute(
            sa.text("INSERT INTO rollup_state (name, watermark, updated) VALUES ('rollups', 0, 0)")
        )


def downgrade() -> None:
    op.get_bind().execute(sa.text("DELETE FROM rollup_state WHERE name = 'rollups'"))
