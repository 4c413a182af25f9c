"""Validate JSON response objects against Stripe's OpenAPI schemas (../shared/stripe-openapi).

``assert_matches(obj, name)`` checks a decoded object against ``components.schemas[name]`` of
spec3.subset.json (``spec="preview"``: preview.subset.json), collecting every problem with its
path (``price.recurring.interval: 'fortnight' not in enum [...]``) into one AssertionError:

* types (integer/number exclude bool), ``nullable``, ``enum``, ``format: decimal``, ``$ref``
  (followed only as deep as the data goes), ``anyOf`` (an id string or the expanded object; a
  string field with ``x-expansionResources`` may also hold the expanded object);
* presence: every declared property of every non-null object must be present (our server renders
  every field) except ``deleted``, ``INCLUDABLE`` fields and ``allow_missing``; a schema with an
  explicit ``required`` list (error, list envelopes) needs only those;
* unknown keys are errors unless the schema has ``additionalProperties`` (metadata-like maps).

Also ``assert_list_of``, ``assert_deleted`` and ``assert_error`` for the envelopes. The shared dir
is $METERLINE_SHARED_DIR, else ``shared/`` beside the repository root (the parent of tests/).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

Schema = dict[str, Any]

# Fields Stripe omits unless asked for (``expand[]=...``, "includable") or renders only in
# some situations, by schema name (nested schemas are named "<parent>.<field>").
INCLUDABLE: dict[str, set[str]] = {
    "customer": {
        "sources",
        "subscriptions",
        "tax",
        "tax_ids",
        "cash_balance",
        "invoice_credit_balance",
    },
    "price": {"currency_options", "tiers"},
    "price.currency_options": {"tiers"},
    "plan": {"tiers"},
    "product": set(),
    "subscription": set(),
    "billing.meter": set(),
    "invoice": {"payments", "confirmation_secret"},
    "coupon": {"applies_to", "currency_options"},
    "promotion_code.restrictions": {"currency_options"},
    "shipping_rate.fixed_amount": {"currency_options"},
    "charge": {"refunds"},
    "event": {"account", "context"},  # Connect / organization events only
    "event.data": {"previous_attributes"},  # *.updated events only
    "webhook_endpoint": {"secret"},  # only in the create response
    "test_helpers.test_clock.status_details": {"advancing"},  # while advancing only
}

_SPEC_FILES = {"stable": "spec3.subset.json", "preview": "preview.subset.json"}
_REF = "#/components/schemas/"
_DECIMAL = re.compile(r"-?\d+(\.\d+)?\Z")
_TYPES = {
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
}


def shared_dir() -> Path:
    """$METERLINE_SHARED_DIR, else ``shared/`` beside the repository holding this file, else
    ``shared/`` beside the repository this one was cloned from (a clone made elsewhere, such as
    ``git clone . $(mktemp -d)``, still finds the reference material)."""
    env = os.environ.get("METERLINE_SHARED_DIR")
    if env:
        return Path(env)
    repo = Path(os.path.abspath(__file__)).parent.parent
    beside = repo.parent / "shared"
    if beside.is_dir():
        return beside
    try:
        origin = subprocess.run(
            ["git", "-C", str(repo), "config", "--get", "remote.origin.url"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        origin = ""
    if origin and "://" not in origin and Path(origin).is_dir():
        candidate = Path(origin).resolve().parent / "shared"
        if candidate.is_dir():
            return candidate
    return beside


@cache
def load_schemas(spec: str = "stable") -> dict[str, Schema]:
    """``components.schemas`` of the chosen spec, loaded once per process."""
    if spec not in _SPEC_FILES:
        raise ValueError(f"unknown spec {spec!r}; expected one of {sorted(_SPEC_FILES)}")
    with open(shared_dir() / "stripe-openapi" / _SPEC_FILES[spec], encoding="utf-8") as f:
        return json.load(f)["components"]["schemas"]


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


class _Checker:
    """Recursive checker. ``path`` is shown in messages; ``rel`` is the dotted path below the
    root without list indices (matched by allow_missing); ``name`` is the schema name, for
    INCLUDABLE (inline schemas are named "<parent>.<field>", as Stripe names nested ones)."""

    def __init__(self, spec: str, allow_missing: Iterable[str]) -> None:
        self.schemas = load_schemas(spec)
        self.allow = frozenset(allow_missing)

    def resolve(self, s: Schema) -> tuple[Schema, str | None]:
        name = None
        while "$ref" in s:
            name = s["$ref"].removeprefix(_REF)
            s = self.schemas[name]
        return s, name

    def check(self, v: Any, s: Schema, path: str, rel: str, name: str) -> list[str]:
        s, ref_name = self.resolve(s)
        name = ref_name or name
        if v is None:  # an unconstrained schema ({}) admits null too
            ok = s.get("nullable") or not ({"type", "anyOf", "enum"} & s.keys())
            return [] if ok else [f"{path}: null but not nullable"]
        if "anyOf" in s:
            return self.any_of(v, s["anyOf"], path, rel, name)
        t = s.get("type")
        if t is not None and not _TYPES[t](v):
            if t == "string" and isinstance(v, dict) and s.get("x-expansionResources"):
                refs = [{"$ref": _REF + r} for r in s["x-expansionResources"]]
                return self.any_of(v, refs, path, rel, name)
            return [f"{path}: expected {t}, got {type(v).__name__} {_short(v)}"]
        errors: list[str] = []
        if "enum" in s and v not in s["enum"]:
            errors.append(f"{path}: {_short(v)} not in enum {s['enum']}")
        if s.get("format") == "decimal" and isinstance(v, str) and not _DECIMAL.match(v):
            errors.append(f"{path}: {_short(v)} is not a decimal string")
        if isinstance(v, list) and "items" in s:
            for i, item in enumerate(v):
                errors += self.check(item, s["items"], f"{path}[{i}]", rel, name)
        if isinstance(v, dict):
            errors += self.check_object(v, s, path, rel, name)
        return errors

    def check_object(
        self, v: dict[str, Any], s: Schema, path: str, rel: str, name: str
    ) -> list[str]:
        errors: list[str] = []
        props: dict[str, Schema] = s.get("properties", {})
        extra = s.get("additionalProperties")
        if "required" in s:
            needed = set(s["required"])
        else:
            needed = set(props) - {"deleted"} - INCLUDABLE.get(name, set())
        for key in sorted(needed - v.keys()):
            if key not in self.allow and f"{rel}.{key}".lstrip(".") not in self.allow:
                errors.append(f"{path}.{key}: missing")
        for key, item in v.items():
            where = (f"{path}.{key}", f"{rel}.{key}".lstrip("."), f"{name}.{key}")
            if key in props:
                errors += self.check(item, props[key], *where)
            elif isinstance(extra, dict):
                errors += self.check(item, extra, *where)
            elif not extra and (props or "additionalProperties" in s):
                errors.append(f"{path}.{key}: unexpected key (value {_short(item)})")
        return errors

    def any_of(self, v: Any, branches: list[Schema], path: str, rel: str, name: str) -> list[str]:
        """Errors of the closest branch; branches of another JSON type, or whose ``object``
        enum excludes ``v["object"]``, are not tried (their errors would only be noise)."""
        candidates = []
        for branch in branches:
            s = self.resolve(branch)[0]
            obj_enum = s.get("properties", {}).get("object", {}).get("enum")
            if "type" in s and not _TYPES[s["type"]](v):
                continue  # another JSON type, e.g. the id-string branch for an expanded object
            if not (isinstance(v, dict) and obj_enum and v.get("object") not in obj_enum):
                candidates.append(branch)
        if not candidates:
            kinds = [
                b["$ref"].removeprefix(_REF) if "$ref" in b else b.get("type") for b in branches
            ]
            return [f"{path}: {_short(v)} matches none of {kinds}"]
        best: list[str] = []
        for branch in candidates:
            errors = self.check(v, branch, path, rel, name)
            if not errors:
                return []
            if not best or len(errors) < len(best):
                best = errors
        return best


def _ref(schema_name: str, spec: str = "stable") -> Schema:
    if schema_name not in load_schemas(spec):
        raise LookupError(f"schema {schema_name!r} not in the {spec} spec")
    return {"$ref": _REF + schema_name}


def _closed(**props: Schema) -> Schema:
    """An object schema needing exactly ``props``."""
    return {"type": "object", "required": list(props), "properties": props}


def _fail(what: str, errors: list[str]) -> None:
    if errors:
        raise AssertionError(f"{len(errors)} problem(s) in {what}:\n  " + "\n  ".join(errors))


def validate(
    obj: Any, schema_name: str, *, spec: str = "stable", allow_missing: Iterable[str] = ()
) -> list[str]:
    """All problems of ``obj`` against ``components.schemas[schema_name]`` (empty list: valid).

    ``allow_missing``: bare field names (allowed missing at any depth) or dotted paths below
    the root without list indices (``"recurring.meter"``, ``"items.data.price.tiers"``)."""
    ref = _ref(schema_name, spec)
    return _Checker(spec, allow_missing).check(obj, ref, schema_name, "", schema_name)


def assert_matches(
    obj: Any, schema_name: str, *, spec: str = "stable", allow_missing: Iterable[str] = ()
) -> None:
    """Raise AssertionError listing every way ``obj`` deviates from the named schema."""
    errors = validate(obj, schema_name, spec=spec, allow_missing=allow_missing)
    _fail(f"{schema_name!r} object", errors)


def assert_list_of(
    obj: Any,
    schema_name: str,
    url: str | None = None,
    *,
    spec: str = "stable",
    allow_missing: Iterable[str] = (),
) -> None:
    """Exactly ``{"object": "list", "data": [...], "has_more": bool, "url": str}``, each item
    valid against ``schema_name`` (``allow_missing`` as in validate, relative to an item)."""
    data = {"type": "array", "items": _ref(schema_name, spec)}
    str_, bool_ = {"type": "string"}, {"type": "boolean"}
    schema = _closed(object={**str_, "enum": ["list"]}, data=data, has_more=bool_, url=str_)
    allowed = [*allow_missing, *(f"data.{a}" for a in allow_missing if "." in a)]
    errors = _Checker(spec, allowed).check(obj, schema, "list", "", "list")
    if url is not None and isinstance(obj, dict) and obj.get("url", url) != url:
        errors.append(f"list.url: {_short(obj.get('url'))} != {url!r}")
    _fail(f"list of {schema_name!r}", errors)


def assert_deleted(obj: Any, object_name: str) -> None:
    """Exactly ``{"id": "<non-empty>", "object": object_name, "deleted": true}``."""
    object_ = {"type": "string", "enum": [object_name]}
    true = {"type": "boolean", "enum": [True]}
    schema = _closed(id={"type": "string"}, object=object_, deleted=true)
    errors = _Checker("stable", ()).check(obj, schema, "deleted", "", "deleted")
    if isinstance(obj, dict) and obj.get("id") == "":
        errors.append("deleted.id: empty")
    _fail(f"deleted {object_name!r}", errors)


def assert_error(body: Any, type_: str, code: str | None = None, param: str | None = None) -> None:
    """Error envelope valid against schemas["error"], with the expected type (and code, param
    when given) and a non-empty message."""
    errors = _Checker("stable", ()).check(body, _ref("error"), "body", "", "error")
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        for key, want in (("type", type_), ("code", code), ("param", param)):
            if want is not None and err.get(key) != want:
                errors.append(f"body.error.{key}: {_short(err.get(key))} != {want!r}")
        if not isinstance(err.get("message"), str) or not err["message"]:
            errors.append(
                f"body.error.message: {_short(err.get('message'))} is not a non-empty string"
            )
    _fail("error response", errors)


_SAMPLE_CUSTOMER = """{
 "id": "cus_123", "object": "customer", "created": 1700000000, "livemode": false,
 "address": {"city": null, "country": "US", "line1": null, "line2": null,
             "postal_code": "94107", "state": null},
 "balance": 0, "business_name": null, "currency": "usd", "customer_account": null,
 "default_source": "card_123", "delinquent": false, "description": null, "discount": null,
 "email": "ada@example.com", "individual_name": null, "invoice_prefix": "ABC123",
 "invoice_settings": {"custom_fields": [{"name": "PO", "value": "42"}],
   "default_payment_method": null, "footer": null,
   "rendering_options": {"amount_tax_display": null, "template": null}},
 "metadata": {"plan": "pro"}, "name": "Ada", "next_invoice_sequence": 1, "phone": null,
 "preferred_locales": ["en"], "shipping": null, "tax_exempt": "none", "test_clock": null,
 "tax_ids": {"object": "list", "data": [], "has_more": false,
             "url": "/v1/customers/cus_123/tax_ids"}
}"""

if __name__ == "__main__":
    customer = json.loads(_SAMPLE_CUSTOMER)
    address = customer["address"]
    bad_types = {"balance": "0", "livemode": 1, "tax_exempt": "sometimes", "surprise": True}
    cases: list[tuple[str, Any, bool]] = [
        ("valid customer", customer, True),
        ("wrong types", {**customer, **bad_types, "address": {**address, "country": 5}}, False),
        ("missing field", {k: v for k, v in customer.items() if k != "email"}, False),
    ]
    ok = True
    for label, obj, expect_valid in cases:
        problems = validate(obj, "customer")
        verdict = "ok " if (not problems) == expect_valid else "BAD"
        ok &= verdict == "ok "
        print(f"{verdict} {label}:" + ("".join(f"\n    {p}" for p in problems) or " valid"))
    try:
        page = {"object": "list", "data": [customer], "has_more": False, "url": "/v1/customers"}
        assert_list_of(page, "customer", url="/v1/customers")
        assert_deleted({"id": "cus_123", "object": "customer", "deleted": True}, "customer")
        error = {"type": "invalid_request_error", "code": "resource_missing", "message": "No such"}
        assert_error({"error": error}, "invalid_request_error", code="resource_missing")
        print("ok  list / deleted / error envelopes: valid")
    except AssertionError as exc:
        ok = False
        print(f"BAD envelope: {exc}")
    print("self-test passed" if ok else "self-test FAILED")
    raise SystemExit(0 if ok else 1)
