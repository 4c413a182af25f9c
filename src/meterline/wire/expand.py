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
"""resolver(object_type, field, id) -> rendered object, or None if it cannot be loaded."""
Expandable = Callable[[str, str], bool]
"""expandable(object_type, field) -> whether that field of that object type can be expanded."""


def check_paths(paths: list[str]) -> None:
    for i, path in enumerate(paths):
        if not path or any(not seg for seg in path.split(".")):
            raise invalid(
                f"expand[{i}]",
                f"Invalid expand path {path!r}: write fields joined by dots, e.g. data.customer.",
                "parameter_invalid",
            )
        if len(path.split(".")) > MAX_DEPTH:
            raise invalid(
                f"expand[{i}]",
                f"You cannot expand more than {MAX_DEPTH} levels of a property ({path}).",
                "parameter_invalid",
            )


def apply(
    obj: dict[str, Any],
    paths: list[str],
    resolver: Resolver,
    expandable: Expandable,
    *,
    list_of: str | None = None,
) -> None:
    """Expand in place. Raises a 400 naming the path if a segment cannot be expanded, whether or
    not the objects at hand have a value there. `list_of` names the item type of a list, so that
    a path is checked even on an empty page."""
    for i, path in enumerate(paths):
        segs = path.split(".")
        if (
            list_of is not None
            and obj.get("object") == "list"
            and segs[0] == "data"
            and len(segs) > 1
        ):
            if not expandable(list_of, segs[1]):
                raise _cannot(path, i, segs[1])
        _walk(obj, segs, path, i, resolver, expandable)


def _walk(
    node: Any, segs: list[str], path: str, index: int, resolver: Resolver, expandable: Expandable
) -> None:
    if node is None or not segs:
        return
    if isinstance(node, list):
        for item in node:
            _walk(item, segs, path, index, resolver, expandable)
        return
    if not isinstance(node, dict):
        raise _cannot(path, index, segs[0])
    head, rest = segs[0], segs[1:]
    if node.get("object") == "list" and head == "data":
        for item in node.get("data", []):
            _walk(item, rest, path, index, resolver, expandable)
        return
    if head not in node:
        raise _cannot(path, index, head)
    value = node[head]
    obj_type = str(node.get("object"))
    if not expandable(obj_type, head) and not (rest and isinstance(value, dict)):
        raise _cannot(path, index, head)
    if isinstance(value, str):
        expanded = resolver(str(node.get("object")), head, value)
        if expanded is None:
            raise _cannot(path, index, head)
        node[head] = expanded
        value = expanded
    elif value is not None and not isinstance(value, (dict, list)):
        raise _cannot(path, index, head)
    _walk(value, rest, path, index, resolver, expandable)


def _cannot(path: str, index: int, field: str):
    return invalid(
        f"expand[{index}]",
        f"This property cannot be expanded ({field}) in {path!r}.",
        "parameter_invalid",
    )
