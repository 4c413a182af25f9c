"""Typed reading of decoded parameters, with Stripe's error codes and bracketed `param` paths.

A handler reads each parameter it accepts through a `Params`; `done()` then refuses whatever
was sent but not read (`parameter_unknown`). An empty string means "unset": readers return
None for it, and `cleared()` tells an update that the caller asked to clear a field.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from meterline.wire.errors import exclusive, invalid, missing, unknown

# ASCII digits only, and \Z rather than $ (which would let a trailing newline through).
_INT = re.compile(r"\A[+-]?[0-9]{1,18}\Z")
# Plain decimals, and the exponent form the Python SDK sends for small Decimals (str(Decimal("1E-7"))).
_DEC = re.compile(r"\A[+-]?([0-9]{1,40}(\.[0-9]{0,40})?|\.[0-9]{1,40})([eE][+-]?[0-9]{1,2})?\Z")
_INDEX = re.compile(r"\A(0|[1-9][0-9]{0,5})\Z")

MAX_METADATA_KEYS = 50
MAX_METADATA_KEY_LEN = 40
MAX_METADATA_VALUE_LEN = 500


def _json_type(v: Any) -> str:
    return "boolean" if isinstance(v, bool) else "number" if isinstance(v, int | float) else "value"


class Params:
    def __init__(self, data: Any, prefix: str = "") -> None:
        if not isinstance(data, dict):
            raise invalid(
                prefix or None,
                f"Invalid object for {prefix}: expected a hash of parameters.",
                "parameter_invalid",
            )
        self.data: dict[str, Any] = data
        self.prefix = prefix
        self.read: set[str] = set()
        self.children: list[Params] = []

    # -- names and presence -------------------------------------------------
    def name(self, key: str) -> str:
        return f"{self.prefix}[{key}]" if self.prefix else key

    def has(self, key: str) -> bool:
        return key in self.data

    def cleared(self, key: str) -> bool:
        """True when the caller sent the key with an empty string (asking to unset it)."""
        return self.data.get(key) == ""

    def raw(self, key: str) -> Any:
        self.read.add(key)
        return self.data.get(key)

    def _scalar(self, key: str, required: bool) -> str | None:
        self.read.add(key)
        v = self.data.get(key)
        if v is None or v == "":
            if required:
                raise missing(self.name(key))
            return None
        if not isinstance(v, str):
            if isinstance(v, (dict, list)):
                what = "a single value, not a nested object or list"
            else:  # a JSON number, boolean or null (v2 bodies): Stripe's strings are strings
                what = f"a string, not the JSON {_json_type(v)} {v!r}"
            raise invalid(
                self.name(key),
                f"Invalid value for {self.name(key)}: expected {what}.",
                "parameter_invalid",
            )
        return v

    # -- scalars -------------------------------------------------------------
    def str(self, key: str, *, required: bool = False, max_len: int | None = 5000) -> str | None:
        v = self._scalar(key, required)
        if v is not None and max_len is not None and len(v) > max_len:
            raise invalid(
                self.name(key),
                f"Invalid {self.name(key)}: must be at most {max_len} characters long.",
                "parameter_invalid_string",
            )
        return v

    def int(
        self, key: str, *, required: bool = False, min: int | None = None, max: int | None = None
    ) -> int | None:
        v = self._scalar(key, required)
        if v is None:
            return None
        if not _INT.match(v):
            raise invalid(self.name(key), f"Invalid integer: {v}", "parameter_invalid_integer")
        n = int(v)
        if min is not None and n < min:
            raise invalid(
                self.name(key),
                f"Invalid {self.name(key)}: must be at least {min} (got {n}).",
                "parameter_invalid_integer",
            )
        if max is not None and n > max:
            raise invalid(
                self.name(key),
                f"Invalid {self.name(key)}: must be at most {max} (got {n}).",
                "parameter_invalid_integer",
            )
        return n

    def bool(self, key: str, *, required: bool = False) -> bool | None:
        v = self._scalar(key, required)
        if v is None:
            return None
        if v == "true":
            return True
        if v == "false":
            return False
        raise invalid(
            self.name(key), f"Invalid boolean: {v}. Use true or false.", "parameter_invalid_boolean"
        )

    def decimal(
        self, key: str, *, required: bool = False, max_places: int | None = None
    ) -> Decimal | None:
        v = self._scalar(key, required)
        if v is None:
            return None
        if not _DEC.match(v):
            raise invalid(self.name(key), f"Invalid decimal: {v}", "parameter_invalid_decimal")
        try:
            d = Decimal(v)
        except InvalidOperation:  # pragma: no cover - the regex admits only valid literals
            raise invalid(self.name(key), f"Invalid decimal: {v}", "parameter_invalid_decimal")
        if max_places is not None and -d.as_tuple().exponent > max_places:  # type: ignore[operator]
            raise invalid(
                self.name(key),
                f"Invalid {self.name(key)}: at most {max_places} decimal places are allowed (got {v}).",
                "parameter_invalid_decimal",
            )
        return d

    def enum(self, key: str, choices: tuple[str, ...], *, required: bool = False) -> str | None:
        v = self._scalar(key, required)
        if v is not None and v not in choices:
            listed = ", ".join(choices[:-1]) + (
                f", or {choices[-1]}" if len(choices) > 1 else choices[0]
            )
            raise invalid(
                self.name(key),
                f"Invalid {self.name(key)}: must be one of {listed} (got {v!r}).",
                "parameter_invalid_enum",
            )
        return v

    # -- structures ------------------------------------------------------------
    def obj(self, key: str, *, required: bool = False) -> Params | None:
        self.read.add(key)
        v = self.data.get(key)
        if v is None or v == "":
            if required:
                raise missing(self.name(key))
            return None
        child = Params(v, self.name(key))
        self.children.append(child)
        return child

    def list(
        self, key: str, *, required: bool = False, max_items: int | None = None
    ) -> list[Any] | None:
        """An array, from `a[0]=`, `a[1]=` (indexed dict) or `a[]=` (list)."""
        self.read.add(key)
        v = self.data.get(key)
        if v is None or v == "":
            if required:
                raise missing(self.name(key))
            return None
        if isinstance(v, dict):
            try:
                if not all(_INDEX.match(k) for k in v):  # no "01", " 1", "+1", "1_0"
                    raise ValueError
                idx = sorted((int(k), k) for k in v)
            except ValueError:
                raise invalid(
                    self.name(key),
                    f"Invalid array for {self.name(key)}: use {self.name(key)}[0]=..., {self.name(key)}[1]=...",
                    "parameter_invalid",
                )
            if [i for i, _ in idx] != list(range(len(idx))):
                raise invalid(
                    self.name(key),
                    f"Invalid array for {self.name(key)}: indexes must run 0, 1, 2, ... without gaps.",
                    "parameter_invalid",
                )
            v = [v[k] for _, k in idx]
        elif isinstance(v, str):
            raise invalid(
                self.name(key),
                f"Invalid array for {self.name(key)}: expected a list, write {self.name(key)}[0]=value.",
                "parameter_invalid",
            )
        if max_items is not None and len(v) > max_items:
            raise invalid(
                self.name(key),
                f"Invalid {self.name(key)}: at most {max_items} items are allowed (got {len(v)}).",
                "parameter_invalid",
            )
        return v

    def str_list(
        self, key: str, *, required: bool = False, max_items: int | None = None
    ) -> list[str] | None:
        items = self.list(key, required=required, max_items=max_items)
        if items is None:
            return None
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise invalid(
                    f"{self.name(key)}[{i}]",
                    f"Invalid {self.name(key)}[{i}]: expected a string.",
                    "parameter_invalid",
                )
        return items

    def obj_list(
        self, key: str, *, required: bool = False, max_items: int | None = None
    ) -> list[Params] | None:
        items = self.list(key, required=required, max_items=max_items)
        if items is None:
            return None
        out = []
        for i, item in enumerate(items):
            child = Params(item, f"{self.name(key)}[{i}]")
            self.children.append(child)
            out.append(child)
        return out

    def metadata(self, key: str = "metadata") -> dict[str, str] | None:
        """Metadata changes: `{k: v}`; a value of "" deletes k. An empty `metadata=` clears all,
        returned as the special `{"": ""}`-free marker `CLEAR_ALL` (an empty dict)."""
        self.read.add(key)
        v = self.data.get(key)
        if v is None:
            return None
        if v == "":
            return {}
        if not isinstance(v, dict):
            raise invalid(
                self.name(key),
                f"Invalid {self.name(key)}: expected a hash, e.g. {self.name(key)}[order_id]=6735.",
                "parameter_invalid",
            )
        for k, val in v.items():
            pname = f"{self.name(key)}[{k}]"
            if not isinstance(val, str):
                raise invalid(
                    pname,
                    f"Invalid {pname}: metadata values must be strings, not nested objects.",
                    "parameter_invalid",
                )
            if len(k) > MAX_METADATA_KEY_LEN:
                raise invalid(
                    pname,
                    f"Invalid {self.name(key)}: keys can be at most {MAX_METADATA_KEY_LEN} characters long (got {len(k)}).",
                    "parameter_invalid",
                )
            if len(val) > MAX_METADATA_VALUE_LEN:
                raise invalid(
                    pname,
                    f"Invalid {pname}: values can be at most {MAX_METADATA_VALUE_LEN} characters long (got {len(val)}).",
                    "parameter_invalid",
                )
        return dict(v)

    def exclusive(self, a: str, b: str) -> None:
        if self.data.get(a) not in (None, "") and self.data.get(b) not in (None, ""):
            raise exclusive(self.name(a), self.name(b))

    # -- completion -------------------------------------------------------------
    def done(self) -> None:
        for k in self.data:
            if k not in self.read:
                raise unknown(self.name(k))
        for c in self.children:
            c.done()


def merge_metadata(
    current: dict[str, str] | None, change: dict[str, str] | None, param: str = "metadata"
) -> dict[str, str]:
    """Apply a metadata change: None keeps, {} clears all, "" values delete keys. Checks the 50-key cap."""
    if change is None:
        return dict(current or {})
    if change == {}:
        return {}
    out = dict(current or {})
    for k, v in change.items():
        if v == "":
            out.pop(k, None)
        else:
            out[k] = v
    if len(out) > MAX_METADATA_KEYS:
        raise invalid(
            param,
            f"Invalid {param}: an object can have at most {MAX_METADATA_KEYS} metadata keys (this change would leave {len(out)}).",
            "parameter_invalid",
        )
    return out
