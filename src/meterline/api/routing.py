"""A small router: static segments and `{name}` placeholders, one table for every method."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

AUTH_KINDS = ("secret_key", "meter_event_session")


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Callable[..., Any]
    write: bool
    offload: bool
    list_of: str | None
    regex: re.Pattern[str]
    auth: str = "secret_key"
    idempotent: bool = True
    prepare: Callable[[dict[str, Any]], Any] | None = None
    precheck: Callable[[Any, Any], Any] | None = None
    defer_inserts: bool = False
    prefetch: Callable[[Any, list[tuple[Any, dict[str, Any]]]], None] | None = None


def compile_path(path: str) -> re.Pattern[str]:
    pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path)
    return re.compile(f"^{pattern}$")


class Router:
    def __init__(self) -> None:
        self.static: dict[tuple[str, str], Route] = {}
        self.dynamic: list[Route] = []
        self.paths: dict[str, set[str]] = {}

    def add(
        self,
        method: str,
        path: str,
        handler: Callable[..., Any],
        *,
        write: bool | None = None,
        offload: bool = False,
        list_of: str | None = None,
        auth: str = "secret_key",
        idempotent: bool = True,
        prepare: Callable[[dict[str, Any]], Any] | None = None,
        precheck: Callable[[Any, Any], Any] | None = None,
        defer_inserts: bool = False,
        prefetch: Callable[[Any, list[tuple[Any, dict[str, Any]]]], None] | None = None,
    ) -> None:
        """`offload=True` runs the handler on a worker thread (for work longer than a few ms);
        `list_of` names the object type a list route returns (for checking `expand[]`);
        `auth` says what the Authorization header carries: a secret key, or
        (`"meter_event_session"`) a meter event session's authentication token;
        `idempotent=False` ignores `Idempotency-Key` (neither replays nor stores the response:
        for responses that carry a secret); `prepare(data)` turns a write's decoded body into
        what its handler needs (`Call.prepared`) on the writer thread before the batch's
        transaction, so that work needing no database stays out of it (what it raises is the
        request's answer, and the handler does not run); `precheck(repo, prepared)` then does
        the reads it can there too (in a read unit, outside SQLite's write lock), and its
        result replaces `Call.prepared` (the handler must check that what it read still holds;
        if it raises, the handler gets `prepare`'s result); `defer_inserts=True` lets a write
        batch on PostgreSQL hold back the handler's `Repo.insert` rows and send those of
        consecutive such requests in one statement (for handlers that read nothing they
        inserted back, and that run no statement but through `Repo`); `prefetch(conn,
        [(scope, data)])` runs in a write batch's transaction before its requests, once for
        the batch's requests of this route, and reads in one statement what each would read
        alone, remembering it under a key of `store.db.BATCH_MEMOS` (forgotten before a request
        of another route runs; the handler must read the same without it: the data is raw and
        unvalidated, so a prefetch skips what it cannot read, and one that fails is ignored
        unless the database failed)."""
        if auth not in AUTH_KINDS:
            raise ValueError(f"unknown auth kind {auth!r}")
        route = Route(
            method,
            path,
            handler,
            method != "GET" if write is None else write,
            offload,
            list_of,
            compile_path(path),
            auth,
            idempotent,
            prepare,
            precheck,
            defer_inserts,
            prefetch,
        )
        if "{" in path:
            self.dynamic.append(route)
        else:
            self.static[(method, path)] = route
        self.paths.setdefault(path, set()).add(method)

    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], set[str]]:
        """(route, path params, allowed methods for this path if the method did not match)."""
        route = self.static.get((method, path))
        if route is not None:
            return route, {}, set()
        allowed: set[str] = set()
        for r in self.dynamic:
            m = r.regex.match(path)
            if m is None:
                continue
            if r.method == method:
                # a static path of another method wins over a placeholder (e.g. /v1/customers/search)
                if (path not in self.paths) or method in self.paths.get(path, ()):
                    return r, m.groupdict(), set()
            allowed.add(r.method)
        for meth, p in self.static:
            if p == path:
                allowed.add(meth)
        return None, {}, allowed
