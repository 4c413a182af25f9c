"""`expand[]`: replace id strings in a rendered object by the objects they name.

Paths are dotted (`data.customer`, `product.default_price`) and at most 4 levels deep.
The resolver, given by the API layer, loads and renders one object by its id and field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from meterline.wire.errors import invalid

MAX_DEPTH = 4
Resolver = Callable[[str, str, str], dict[str, Any] | None]
"""resolver(object_type, field, id) -> rendered object, or None if the field is not expandable."""


def check_paths(paths: list[str]) -> None:
    for i, path in enumerate(paths):
        if not path or any(not seg for seg in path.split(".")):
            raise invalid(f"expand[{i}]", f"Invalid expand path {path!r}: write fields joined by dots, e.g. data.customer.", "parameter_invalid")
        if len(path.split(".")) > MAX_DEPTH:
            raise invalid(f"expand[{i}]", f"You cannot expand more than {MAX_DEPTH} levels of a property ({path}).", "parameter_invalid")


def apply(obj: dict[str, Any], paths: list[str], resolver: Resolver) -> None:
    """Expand in place. Raises a 400 naming the path if a segment cannot be expanded."""
    for i, path in enumerate(paths):
        _walk(obj, path.split("."), path, i, resolver)


def _walk(node: Any, segs: list[str], path: str, index: int, resolver: Resolver) -> None:
    if node is None or not segs:
        return
    if isinstance(node, list):
        for item in node:
            _walk(item, segs, path, index, resolver)
        return
    if not isinstance(node, dict):
        raise _cannot(path, index, segs[0])
    head, rest = segs[0], segs[1:]
    if node.get("object") == "list" and head == "data":
        for item in node.get("data", []):
            _walk(item, rest, path, index, resolver)
        return
    if head not in node:
        raise _cannot(path, index, head)
    value = node[head]
    if isinstance(value, str):
        expanded = resolver(str(node.get("object")), head, value)
        if expanded is None:
            raise _cannot(path, index, head)
        node[head] = expanded
        value = expanded
    elif value is not None and not isinstance(value, (dict, list)):
        raise _cannot(path, index, head)
    _walk(value, rest, path, index, resolver)


def _cannot(path: str, index: int, field: str):
    return invalid(f"expand[{index}]", f"This property cannot be expanded ({field}) in {path!r}.", "parameter_invalid")
