"""Storage: SQLAlchemy Core tables, scoped queries, migrations; SQLite and PostgreSQL.

Owns: the schema (`tables`), engines and transactions (`db`), and `Repo`, the one gate through
which services read and write account data.
Always true: every query a request makes on account data goes through `Repo`, which adds the
account and livemode of its `Scope` to every statement, so no caller can reach another account's
rows. The system jobs that look across accounts (the rollup builder in `rollups`, the stream's
drain in `inbox`, and the background jobs' search for customers with ledger entries due) only
find work there: what they write is keyed by each row's own account, or written through a
`Repo` of that account.
Money columns are integers in minor units; decimal amounts use `DecimalText`, exact on both
dialects. Dialect differences live in `db` (and in one function per dialect where SQL differs).
May import: SQLAlchemy, Alembic, the standard library; nothing of ours above it.
"""
