"""Decoding of v1 bracket forms (`a[b][0][c]=v`, `a[]=v`) into nested dicts and lists.

The decoder keeps every bracket key as a dict key, except `[]`, which appends to a list
(`a[][x]=1&a[][y]=2` is one object, `a[][x]=1&a[][x]=2` two, as in Rack).
Whether `{"0": x, "1": y}` is an array or a map with numeric keys is decided by the reader
that knows the parameter (see `params.Params.list`), so `metadata[0]=x` stays a map.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote_plus

from meterline.wire.errors import StripeError

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_SEG = re.compile(r"\[([^\[\]]*)\]")


def split_key(key: str) -> list[str]:
    """`a[b][0][]` -> `["a", "b", "0", ""]`; raises on malformed brackets."""
    m = _KEY.match(key)
    if m is None:
        raise StripeError(
            400,
            f"Invalid parameter name: {key!r}. Nested parameters are written as a[b][c]=value.",
            code="parameter_invalid",
            param=key,
        )
    segs = [m.group(1)]
    if m.group(2):
        segs.extend(_SEG.findall(m.group(2)))
    return segs


def parse_pairs(raw: bytes | str) -> list[tuple[str, str]]:
    """Split an urlencoded string into (key, value) pairs, keeping empty values."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise StripeError(400, "The request body is not valid UTF-8.", code="parameter_invalid")
    pairs: list[tuple[str, str]] = []
    if not raw:
        return pairs
    for part in raw.split("&"):
        if not part:
            continue
        k, sep, v = part.partition("=")
        pairs.append((unquote_plus(k), unquote_plus(v) if sep else ""))
    return pairs


def _conflict(path: list[str]) -> StripeError:
    name = path[0] + "".join(f"[{p}]" for p in path[1:])
    return StripeError(
        400,
        f"Invalid value for {name}: it is given both as a single value and as a nested object or list.",
        code="parameter_invalid",
        param=name,
    )


def _has_path(obj: dict[str, Any], path: list[str]) -> bool:
    if "" in path:
        return False
    node: Any = obj
    for seg in path:
        if not isinstance(node, dict) or seg not in node:
            return False
        node = node[seg]
    return True


def decode(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Build the nested structure: dicts for named or indexed keys, lists for `[]`."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        segs = split_key(key)
        node: Any = root
        for i, seg in enumerate(segs):
            last = i == len(segs) - 1
            if isinstance(node, list):
                if seg != "":
                    raise _conflict(segs[: i + 1])
                if last:
                    node.append(value)
                elif (
                    segs[i + 1] != ""
                    and node
                    and isinstance(node[-1], dict)
                    and not _has_path(node[-1], segs[i + 1 :])
                ):
                    node = node[
                        -1
                    ]  # Rack's rule: `a[][k]` adds to the last object unless it has `k`
                else:
                    child: Any = [] if segs[i + 1] == "" else {}
                    node.append(child)
                    node = child
                continue
            if last:
                if seg in node and isinstance(node[seg], (dict, list)):
                    raise _conflict(segs[: i + 1])
                if seg == "":
                    raise _conflict(segs[: i + 1])
                node[seg] = value
                continue
            want_list = segs[i + 1] == ""
            existing = node.get(seg)
            if existing is None:
                existing = [] if want_list else {}
                node[seg] = existing
            elif isinstance(existing, str) or isinstance(existing, list) != want_list:
                raise _conflict(segs[: i + 1])
            node = existing
    return root


def decode_form(raw: bytes | str) -> dict[str, Any]:
    return decode(parse_pairs(raw))
