"""Subscriptions, their items, invoices and invoice lines; the ledger found by invoice.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

from meterline.store.types import DecimalText

revision = "0009"
down_revision = "0008"
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
        "subscriptions",
        sa.Column("customer", sa.String(255), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("interval", sa.String(8), nullable=False),
        sa.Column("interval_count", sa.Integer, nullable=False),
        sa.Column("billing_cycle_anchor", sa.BigInteger, nullable=False),
        sa.Column("start_date", sa.BigInteger, nullable=False),
        sa.Column("current_period_start", sa.BigInteger, nullable=False),
        sa.Column("current_period_end", sa.BigInteger, nullable=False),
        sa.Column("cancel_at_period_end", sa.Boolean, nullable=False),
        sa.Column("canceled_at", sa.BigInteger),
        sa.Column("ended_at", sa.BigInteger),
        sa.Column("trial_start", sa.BigInteger),
        sa.Column("trial_end", sa.BigInteger),
        sa.Column("latest_invoice", sa.String(255)),
        sa.Column("description", sa.String(500)),
        sa.Column("collection_method", sa.String(24), nullable=False),
        sa.Column("days_until_due", sa.Integer),
        sa.Column("cancellation", sa.JSON),
        sa.Column("test_clock", sa.String(255)),
        sa.Column("metadata", sa.JSON, nullable=False),
        indexes=[
            ("ix_subscriptions_customer", ["account_id", "livemode", "customer"], False),
            ("ix_subscriptions_due", ["current_period_end"], False),
        ],
    )
    _owned(
        "subscription_items",
        sa.Column("subscription", sa.String(255), nullable=False),
        sa.Column("price", sa.String(255), nullable=False),
        sa.Column("quantity", sa.BigInteger),
        sa.Column("metadata", sa.JSON, nullable=False),
        indexes=[
            (
                "ix_subscription_items_subscription",
                ["account_id", "livemode", "subscription"],
                False,
            )
        ],
    )
    _owned(
        "invoices",
        sa.Column("customer", sa.String(255), nullable=False),
        sa.Column("subscription", sa.String(255)),
        sa.Column("draft_key", sa.String(400)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("billing_reason", sa.String(40), nullable=False),
        sa.Column("collection_method", sa.String(24), nullable=False),
        sa.Column("period_start", sa.BigInteger, nullable=False),
        sa.Column("period_end", sa.BigInteger, nullable=False),
        sa.Column("subtotal", sa.BigInteger, nullable=False),
        sa.Column("credited", sa.BigInteger, nullable=False),
        sa.Column("amount_due", sa.BigInteger, nullable=False),
        sa.Column("amount_paid", sa.BigInteger, nullable=False),
        sa.Column("number", sa.String(64)),
        sa.Column("description", sa.String(500)),
        sa.Column("customer_email", sa.String(512)),
        sa.Column("customer_name", sa.String(256)),
        sa.Column("automatically_finalizes_at", sa.BigInteger),
        sa.Column("finalized_at", sa.BigInteger),
        sa.Column("paid_at", sa.BigInteger),
        sa.Column("voided_at", sa.BigInteger),
        sa.Column("due_date", sa.BigInteger),
        sa.Column("test_clock", sa.String(255)),
        sa.Column("metadata", sa.JSON, nullable=False),
        indexes=[
            (
                "ix_invoices_customer",
                ["account_id", "livemode", "customer", "created", "seq"],
                False,
            ),
            ("ix_invoices_subscription", ["account_id", "livemode", "subscription"], False),
            ("uq_invoices_draft_key", ["account_id", "livemode", "draft_key"], True),
            ("ix_invoices_finalizes", ["automatically_finalizes_at"], False),
        ],
    )
    _owned(
        "invoice_lines",
        sa.Column("invoice", sa.String(255), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("subscription", sa.String(255)),
        sa.Column("subscription_item", sa.String(255)),
        sa.Column("price", sa.String(255), nullable=False),
        sa.Column("product", sa.String(255), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("description", sa.String(500)),
        sa.Column("quantity", DecimalText, nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("credited", sa.BigInteger, nullable=False),
        sa.Column("metered", sa.Boolean, nullable=False),
        sa.Column("proration", sa.Boolean, nullable=False),
        sa.Column("period_start", sa.BigInteger, nullable=False),
        sa.Column("period_end", sa.BigInteger, nullable=False),
        sa.Column("metadata", sa.JSON, nullable=False),
        indexes=[
            (
                "ix_invoice_lines_invoice",
                ["account_id", "livemode", "invoice", "position"],
                False,
            )
        ],
    )
    op.create_index(
        "ix_credit_txns_invoice",
        "credit_balance_transactions",
        ["account_id", "livemode", "invoice"],
    )


def downgrade() -> None:
    op.drop_index("ix_credit_txns_invoice", "credit_balance_transactions")
    for name in ("invoice_lines", "invoices", "subscription_items", "subscriptions"):
        op.drop_table(name)
