"""Credit grants and the credit ledger.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
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
        "credit_grants",
        sa.Column("customer", sa.String(255), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("effective_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger),
        sa.Column("voided_at", sa.BigInteger),
        sa.Column("prices", sa.JSON),
        sa.Column("name", sa.String(100)),
        sa.Column("test_clock", sa.String(255)),
        sa.Column("updated", sa.BigInteger, nullable=False),
        sa.Column("metadata", sa.JSON, nullable=False),
        indexes=[("ix_credit_grants_customer", ["account_id", "livemode", "customer"], False)],
    )
    _owned(
        "credit_balance_transactions",
        sa.Column("customer", sa.String(255), nullable=False),
        sa.Column("credit_grant", sa.String(255), nullable=False),
        sa.Column("entry_key", sa.String(400), nullable=False),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("effective_at", sa.BigInteger, nullable=False),
        sa.Column("invoice", sa.String(255)),
        sa.Column("invoice_line_item", sa.String(255)),
        sa.Column("test_clock", sa.String(255)),
        indexes=[
            (
                "ix_credit_txns_customer",
                ["account_id", "livemode", "customer", "created", "seq"],
                False,
            ),
            ("uq_credit_txns_entry", ["account_id", "livemode", "entry_key"], True),
        ],
    )


def downgrade() -> None:
    op.drop_table("credit_balance_transactions")
    op.drop_table("credit_grants")
