"""`Repo`: scoped access to account data. Every statement on an account-owned table gets the
scope's account and livemode here, and nowhere else."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping


@dataclass(frozen=True)
class Scope:
    account_id: str
    livemode: bool


class CursorMissing(LookupError):
    """A `starting_after`/`ending_before` id that does not exist in this scope."""

    def __init__(self, which: str, id: str) -> None:
        super().__init__(id)
        self.which = which
        self.id = id


class Repo:
    def __init__(self, conn: Connection, scope: Scope) -> None:
        self.conn = conn
        self.scope = scope
        self.dialect = conn.dialect.name

    def _own(self, table: sa.Table) -> list[Any]:
        return [table.c.account_id == self.scope.account_id, table.c.livemode == self.scope.livemode]

    def select(self, table: sa.Table, *where: Any) -> sa.Select:
        return sa.select(table).where(*self._own(table), *where)

    def get(self, table: sa.Table, id: str, *, for_update: bool = False) -> RowMapping | None:
        q = self.select(table, table.c.id == id)
        if for_update and self.dialect == "postgresql":
            q = q.with_for_update()
        return self.conn.execute(q).mappings().first()

    def first(self, table: sa.Table, *where: Any) -> RowMapping | None:
        return self.conn.execute(self.select(table, *where).limit(1)).mappings().first()

    def exists(self, table: sa.Table, *where: Any) -> bool:
        q = sa.select(sa.literal(1)).select_from(table).where(*self._own(table), *where).limit(1)
        return self.conn.execute(q).first() is not None

    def insert(self, table: sa.Table, values: dict[str, Any]) -> None:
        self.conn.execute(
            table.insert().values(account_id=self.scope.account_id, livemode=self.scope.livemode, **values)
        )

    def update(self, table: sa.Table, id: str, values: dict[str, Any]) -> int:
        if not values:
            return 0
        q = table.update().where(*self._own(table), table.c.id == id).values(**values)
        return self.conn.execute(q).rowcount

    def update_where(self, table: sa.Table, where: Sequence[Any], values: dict[str, Any]) -> int:
        q = table.update().where(*self._own(table), *where).values(**values)
        return self.conn.execute(q).rowcount

    def page(
        self,
        table: sa.Table,
        where: Sequence[Any],
        *,
        limit: int,
        starting_after: str | None = None,
        ending_before: str | None = None,
    ) -> tuple[list[RowMapping], bool]:
        """Newest first (`created` desc, then insertion order desc), `limit` rows, and has_more."""
        c_created, c_seq = table.c.created, table.c.seq
        q = self.select(table, *where)
        cursor_id = starting_after or ending_before
        if cursor_id is not None:
            cur = self.conn.execute(
                sa.select(c_created, c_seq).where(*self._own(table), table.c.id == cursor_id)
            ).first()
            if cur is None:
                raise CursorMissing("starting_after" if starting_after else "ending_before", cursor_id)
            created, seq = cur
            if starting_after:
                q = q.where(sa.or_(c_created < created, sa.and_(c_created == created, c_seq < seq)))
            else:
                q = q.where(sa.or_(c_created > created, sa.and_(c_created == created, c_seq > seq)))
        if ending_before:
            q = q.order_by(c_created.asc(), c_seq.asc())
        else:
            q = q.order_by(c_created.desc(), c_seq.desc())
        rows = list(self.conn.execute(q.limit(limit + 1)).mappings())
        has_more = len(rows) > limit
        rows = rows[:limit]
        if ending_before:
            rows.reverse()
        return rows, has_more
