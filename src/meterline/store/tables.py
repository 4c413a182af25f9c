"""The schema, as SQLAlchemy Core tables. Migrations in `migrations/versions` create exactly this
(a test compares the two).

Every account-owned table has `seq` (insertion order, the tie-break of lists), `id` (unique per
account and mode), `account_id`, `livemode` and `created`.
"""

from __future__ import annotations

import sqlalchemy as sa

from meterline.store.types import DecimalText

metadata = sa.MetaData()


def _owned(
    name: str,
    *cols: sa.Column,  # type: ignore[type-arg]
    indexes: tuple = (),
    listed: bool = True,
) -> sa.Table:
    """A table of objects an account owns: `seq` (insertion order), `id`, `account_id`,
    `livemode`, `created`, unique ids per account and mode, and (`listed`) the index that list
    requests walk, newest first."""
    return sa.Table(
        name,
        metadata,
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
        *cols,
        sa.UniqueConstraint("id", "account_id", "livemode", name=f"uq_{name}_id"),
        *(
            (sa.Index(f"ix_{name}_list", "account_id", "livemode", "created", "seq"),)
            if listed
            else ()
        ),
        *indexes,
    )


accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("created", sa.BigInteger, nullable=False),
    sa.Column("is_default", sa.Boolean, nullable=False, default=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_hash", sa.String(64), primary_key=True),
    sa.Column("account_id", sa.String(64), sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("livemode", sa.Boolean, nullable=False),
    sa.Column("key_hint", sa.String(32), nullable=False),
    sa.Column("created", sa.BigInteger, nullable=False),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("account_id", sa.String(64), primary_key=True),
    sa.Column("livemode", sa.Boolean, primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("created", sa.BigInteger, nullable=False),
    sa.Column("status", sa.Integer, nullable=True),
    sa.Column("response", sa.LargeBinary, nullable=True),
    sa.Column("request_id", sa.String(64), nullable=False),
    sa.Index("ix_idempotency_keys_created", "created"),
)

customers = _owned(
    "customers",
    sa.Column("deleted", sa.Boolean, nullable=False, default=False),
    sa.Column("email", sa.String(512)),
    sa.Column("name", sa.String(256)),
    sa.Column("description", sa.Text),
    sa.Column("phone", sa.String(64)),
    sa.Column("address", sa.JSON),
    sa.Column("preferred_locales", sa.JSON),
    sa.Column("invoice_prefix", sa.String(32)),
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("test_clock", sa.String(255)),
    indexes=(sa.Index("ix_customers_email", "account_id", "livemode", "email"),),
)

products = _owned(
    "products",
    sa.Column("updated", sa.BigInteger, nullable=False),
    sa.Column("deleted", sa.Boolean, nullable=False, default=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("name", sa.String(512), nullable=False),
    sa.Column("description", sa.Text),
    sa.Column("images", sa.JSON, nullable=False),
    sa.Column("unit_label", sa.String(64)),
    sa.Column("url", sa.String(2048)),
    sa.Column("statement_descriptor", sa.String(64)),
    sa.Column("shippable", sa.Boolean),
    sa.Column("default_price", sa.String(255)),
    sa.Column("metadata", sa.JSON, nullable=False),
)

prices = _owned(
    "prices",
    sa.Column("deleted", sa.Boolean, nullable=False, default=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("product", sa.String(255), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("billing_scheme", sa.String(16), nullable=False),
    sa.Column("unit_amount", sa.BigInteger),
    sa.Column("unit_amount_decimal", DecimalText),
    sa.Column("tiers", sa.JSON),
    sa.Column("tiers_mode", sa.String(16)),
    sa.Column("transform_divide_by", sa.BigInteger),
    sa.Column("transform_round", sa.String(8)),
    sa.Column("interval", sa.String(8)),
    sa.Column("interval_count", sa.Integer),
    sa.Column("usage_type", sa.String(16)),
    sa.Column("meter", sa.String(255)),
    sa.Column("trial_period_days", sa.Integer),
    sa.Column("nickname", sa.String(512)),
    sa.Column("lookup_key", sa.String(200)),
    sa.Column("tax_behavior", sa.String(16), nullable=False),
    sa.Column("metadata", sa.JSON, nullable=False),
    indexes=(
        sa.Index("ix_prices_product", "account_id", "livemode", "product"),
        sa.Index("uq_prices_lookup_key", "account_id", "livemode", "lookup_key", unique=True),
    ),
)

meters = _owned(
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
    indexes=(
        sa.Index("uq_meters_event_name", "account_id", "livemode", "event_name", unique=True),
    ),
)

# Raw meter events: the source of truth for every aggregate. `id` is the event's identifier.
meter_events = _owned(
    "meter_events",
    sa.Column("meter", sa.String(255), nullable=False),
    sa.Column("customer", sa.String(255), nullable=False),
    sa.Column("event_name", sa.String(100), nullable=False),
    sa.Column("timestamp", sa.BigInteger, nullable=False),
    sa.Column("value", DecimalText, nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("cancelled_at", sa.BigInteger),
    indexes=(
        sa.Index(
            "ix_meter_events_usage", "account_id", "livemode", "customer", "meter", "timestamp"
        ),
    ),
    # No list index: nothing lists meter events, and every insert paid for it (migration 0012).
    listed=False,
)

# The v2 stream's landing log: events of stream requests that passed validation, appended when
# the request commits (its 200), moved into `meter_events` in bulk and in key order by
# `store.inbox.move` (a background drain in every worker), which deletes them here in the same
# transaction. Columns are `meter_events`' (less `seq`, which the move assigns there); `seq` here
# is arrival order. No index: appending costs one table page per few events.
meter_event_inbox = sa.Table(
    "meter_event_inbox",
    metadata,
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

# SQLite only: a counter that triggers on `customers`, `meters` and `test_clocks` move on every
# update or delete of their rows (migration 0011), so that a stream request validated before its
# write transaction knows, with one read there, whether anything its validation read may have
# changed since (services.meter_events.Lookups; inserts need no trigger, see there). PostgreSQL
# has the table but no triggers: there, many workers write at once, and one counter row would
# queue them all.
change_epochs = sa.Table(
    "change_epochs",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("n", sa.BigInteger, nullable=False),
)
VALIDATION_EPOCH = "validation"
VALIDATION_TABLES = ("customers", "meters", "test_clocks")

# v2 meter event stream sessions. Only the SHA-256 digest of the authentication token is stored;
# the token is looked up by digest, before the account is known.
meter_event_sessions = _owned(
    "meter_event_sessions",
    sa.Column("token_hash", sa.String(64), nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
    indexes=(sa.Index("uq_meter_event_sessions_token", "token_hash", unique=True),),
)

# Events of a stream request that failed validation, per request and meter (`meter` is null for
# events naming no meter): counts per error code and up to 5 sample errors per code, to be sent as
# `v1.billing.meter.error_report_triggered` (or `v1.billing.meter.no_meter_found`).
meter_event_error_reports = _owned(
    "meter_event_error_reports",
    sa.Column("meter", sa.String(255)),
    sa.Column("request_id", sa.String(64), nullable=False),
    sa.Column("counts", sa.JSON, nullable=False),
    sa.Column("samples", sa.JSON, nullable=False),
    sa.Column("validation_start", sa.BigInteger, nullable=False),
    sa.Column("validation_end", sa.BigInteger, nullable=False),
)

# Derived state: per customer, meter, declared dimension values (`dims`, the JSON list of the
# values of the meter's `dimension_payload_keys` in sorted key order) and aligned UTC cell of
# `resolution` seconds (900 or 3600), the mergeable partial of the counting events (see
# engine.aggregate.Partial). It holds exactly the events with seq <= the rollup watermark, less
# the cancellations still queued in `meter_event_cancels`. Meters with an `event_time_window`
# have no rollups. Dropped and rebuilt from `meter_events` by `meterline rollups rebuild`.
meter_usage_rollups = sa.Table(
    "meter_usage_rollups",
    metadata,
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

# The rollup watermark: every meter event with seq <= watermark is folded into the rollups.
rollup_state = sa.Table(
    "rollup_state",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("watermark", sa.BigInteger, nullable=False),
    sa.Column("updated", sa.BigInteger, nullable=False),
)

# Cancellations of events of rollup meters, queued until the rollup builder has recomputed the
# cells they touch; until then queries read those cells from raw events.
meter_event_cancels = sa.Table(
    "meter_event_cancels",
    metadata,
    sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("account_id", sa.String(64), nullable=False),
    sa.Column("livemode", sa.Boolean, nullable=False),
    sa.Column("customer", sa.String(255), nullable=False),
    sa.Column("meter", sa.String(255), nullable=False),
    sa.Column("timestamp", sa.BigInteger, nullable=False),
    sa.Column("event_seq", sa.BigInteger, nullable=False),
    sa.Index("ix_meter_event_cancels_customer", "account_id", "livemode", "customer"),
)

# Test clocks: simulated time for the customers created on them. Deleting one marks it deleted.
# While `advancing`, `target_frozen_time` is where it goes and `claimed_until` (wall clock) how
# long the worker running the advance holds it.
test_clocks = _owned(
    "test_clocks",
    sa.Column("name", sa.String(300)),
    sa.Column("frozen_time", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("deletes_after", sa.BigInteger, nullable=False),
    sa.Column("deleted", sa.Boolean, nullable=False, default=False),
    sa.Column("target_frozen_time", sa.BigInteger),
    sa.Column("claimed_until", sa.BigInteger),
    sa.Index("ix_test_clocks_advancing", "status"),
)

# Credit grants. `prices` is the JSON list of price ids of a price-scoped grant, or null for the
# scope price_type=metered.
credit_grants = _owned(
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
    indexes=(sa.Index("ix_credit_grants_customer", "account_id", "livemode", "customer"),),
)

# The credit ledger. `entry_key` makes each entry exactly once whoever writes it first
# (`granted:<grant>`, `expired:<grant>:<n>`, `applied:<grant>:<line>`, ...).
credit_balance_transactions = _owned(
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
    indexes=(
        sa.Index("ix_credit_txns_customer", "account_id", "livemode", "customer", "created", "seq"),
        sa.Index("uq_credit_txns_entry", "account_id", "livemode", "entry_key", unique=True),
        sa.Index("ix_credit_txns_invoice", "account_id", "livemode", "invoice"),
    ),
)

# Subscriptions. The current period is on the subscription (rendered on each item, as the current
# API version puts it there); `interval`/`interval_count` are the items' prices' (all alike).
subscriptions = _owned(
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
    indexes=(
        sa.Index("ix_subscriptions_customer", "account_id", "livemode", "customer"),
        sa.Index("ix_subscriptions_due", "current_period_end"),
    ),
)

subscription_items = _owned(
    "subscription_items",
    sa.Column("subscription", sa.String(255), nullable=False),
    sa.Column("price", sa.String(255), nullable=False),
    sa.Column("quantity", sa.BigInteger),
    sa.Column("metadata", sa.JSON, nullable=False),
    indexes=(
        sa.Index("ix_subscription_items_subscription", "account_id", "livemode", "subscription"),
    ),
)

# Invoices. `draft_key` makes each cycle's invoice exactly once whoever renews first
# (`cycle:<subscription>:<period end>`); the amounts are those of the last finalization or draft
# computation; `credited` is total_pretax_credit_amounts' sum.
invoices = _owned(
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
    indexes=(
        sa.Index("ix_invoices_customer", "account_id", "livemode", "customer", "created", "seq"),
        sa.Index("ix_invoices_subscription", "account_id", "livemode", "subscription"),
        sa.Index("uq_invoices_draft_key", "account_id", "livemode", "draft_key", unique=True),
        sa.Index("ix_invoices_finalizes", "automatically_finalizes_at"),
    ),
)

# Invoice lines, in invoice order (`position`). `quantity` is a decimal (metered usage may be
# fractional); `credited` is the sum of the line's pretax credit amounts.
invoice_lines = _owned(
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
    indexes=(
        sa.Index("ix_invoice_lines_invoice", "account_id", "livemode", "invoice", "position"),
    ),
)
