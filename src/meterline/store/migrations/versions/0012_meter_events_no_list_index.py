"""`meter_events` loses `ix_meter_events_list` (account, livemode, created, seq): no request
lists meter events (Stripe has no such list), and every reader of the table goes by the usage
index, the identifier or `seq`; the index cost about 15% of each insert into the table
(measured on the stream's bulk moves).

Revision ID: 0012
Revises: 0011
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_meter_events_list", table_name="meter_events")


def downgrade() -> None:
    op.create_index(
        "ix_meter_events_list", "meter_events", ["account_id", "livemode", "created", "seq"]
    )
