"""The v1 bracket-form decoder (`meterline.wire.form`) and typed parameter reading
(`meterline.wire.params.Params`), without a server.

The property test encodes random nested parameters exactly as the official SDK does
(`stripe._encode._api_encode`, then `urlencode`, then un-escaping the brackets) and checks
that decoding and reading them back gives the same structure.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import pytest
import stripe
from hypothesis import given, settings
from hypothesis import strategies as st
from stripe._encode import _api_encode

from meterline.wire.errors import StripeError
from meterline.wire.form import decode, decode_form, parse_pairs, split_key
from meterline.wire.params import (
    MAX_METADATA_KEY_LEN,
    MAX_METADATA_KEYS,
    MAX_METADATA_VALUE_LEN,
    Params,
    merge_metadata,
)


def sdk_encode(params: dict[str, Any]) -> str:
    """What stripe 16.1.0's `_APIRequestor._args_for_request_with_retries` does to v1 params."""
    encoded = urlencode(list(_api_encode(params)))
    return encoded.replace("%5B", "[").replace("%5D", "]")


def refused(fn, *, status: int = 400) -> StripeError:
    with pytest.raises(StripeError) as info:
        fn()
    err = info.value
    assert err.status == status, err.body()
    assert err.body()["error"]["type"] == "invalid_request_error"
    return err


# -- the SDK's encoder, as the SDK really uses it ------------------------------------------------


class RecordingHTTPClient(stripe.HTTPClient):
    """A real HTTPClient subclass that keeps what the SDK would send and answers `{}`."""

    name = "recording"

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, str, Any]] = []

    def request(self, method, url, headers, post_data=None, *, _usage=None):
        self.sent.append((method, url, post_data))
        return '{"id": "x", "object": "customer"}', 200, {"Request-Id": "req_recorded"}

    def close(self) -> None:
        pass


def test_sdk_encoding_helper_matches_what_the_sdk_sends():
    http = RecordingHTTPClient()
    client = stripe.StripeClient(
        "sk_test_recording", http_client=http, base_addresses={"api": "http://127.0.0.1:9"}
    )
    params = {
        "name": "Ada & Co = [x]",
        "metadata": {"a b": "c+d", "k": ""},
        "tiers": [{"up_to": 10, "unit_amount": 5}, {"up_to": "inf", "flat": True}],
        "expand": ["data.customer", "x"],
        "flag": False,
    }
    client.v1.customers.create(params)  # type: ignore[arg-type]
    client.v1.customers.list({"expand": ["data.customer"], "limit": 3})  # type: ignore[arg-type]
    (post_method, _, body), (get_method, get_url, _) = http.sent
    assert post_method == "post" and body == sdk_encode(params)
    assert get_method == "get" and get_url.split("?", 1)[1] == sdk_encode(
        {"expand": ["data.customer"], "limit": 3}
    )
    assert decode_form(body) == {
        "name": "Ada & Co = [x]",
        "metadata": {"a b": "c+d", "k": ""},
        "tiers": {"0": {"up_to": "10", "unit_amount": "5"}, "1": {"up_to": "inf", "flat": "true"}},
        "expand": {"0": "data.customer", "1": "x"},
        "flag": "false",
    }


# -- round trip against the SDK's encoder ---------------------------------------------------------

KEY_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="[]&=")
keys = st.text(KEY_CHARS, min_size=1, max_size=8)
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
scalars = st.one_of(texts, st.integers(min_value=-(10**12), max_value=10**12), st.booleans())


def _dicts(children):
    return st.dictionaries(keys, children, min_size=1, max_size=4)


values = st.recursive(
    scalars,
    lambda children: st.one_of(
        _dicts(children),
        st.lists(st.one_of(scalars, _dicts(children)), min_size=1, max_size=4),
    ),
    max_leaves=20,
)
# None at the top level: the SDK leaves such keys out.
top_level = st.dictionaries(keys, st.one_of(st.none(), values), max_size=6)


def normalise(value: Any, *, in_list: bool = False) -> Any:
    """What the server reads back: scalars as the strings the SDK wrote, None keys gone.

    The SDK writes a boolean as `true`/`false`, except directly inside an array, where it
    passes the bool to `urlencode` as is (`True`/`False`); no Stripe parameter is an array of
    booleans."""
    if isinstance(value, dict):
        return {k: normalise(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [normalise(v, in_list=True) for v in value]
    if isinstance(value, bool) and not in_list:
        return "true" if value else "false"
    return str(value)


def read_like(params: Params, expected: dict[str, Any]) -> dict[str, Any]:
    """Read `params` with the shape of `expected` (as a handler knowing its parameters would),
    then check that nothing else was sent."""
    out: dict[str, Any] = {}
    for key, shape in expected.items():
        if isinstance(shape, dict):
            child = params.obj(key, required=True)
            assert child is not None
            out[key] = read_like(child, shape)
        elif isinstance(shape, list):
            if all(isinstance(item, dict) for item in shape):
                children = params.obj_list(key, required=True)
                assert children is not None
                out[key] = [read_like(c, s) for c, s in zip(children, shape, strict=True)]
            else:
                items = params.list(key, required=True)
                assert items is not None and len(items) == len(shape)
                out[key] = [
                    read_like(Params(item, f"{params.name(key)}[{i}]"), s)
                    if isinstance(s, dict)
                    else item
                    for i, (item, s) in enumerate(zip(items, shape, strict=True))
                ]
        else:
            out[key] = params.raw(key)
    params.done()
    return out


@settings(max_examples=300, deadline=None)
@given(top_level)
def test_roundtrip_through_the_sdk_encoder(params):
    expected = normalise(params)
    decoded = decode_form(sdk_encode(params))
    assert read_like(Params(decoded), expected) == expected


@settings(max_examples=100, deadline=None)
@given(top_level)
def test_roundtrip_from_bytes_and_in_any_order_of_keys(params):
    expected = normalise(params)
    body = sdk_encode(params)
    parts = body.split("&") if body else []
    shuffled = "&".join(reversed(parts)).encode()
    assert read_like(Params(decode_form(shuffled)), expected) == expected


# -- decoding ---------------------------------------------------------------------------------------


def test_split_key():
    assert split_key("a") == ["a"]
    assert split_key("a[b][0][]") == ["a", "b", "0", ""]
    assert split_key("meters[0][dimension_filters][region]") == [
        "meters",
        "0",
        "dimension_filters",
        "region",
    ]
    assert split_key("a b[c d]") == ["a b", "c d"]


def test_empty_brackets_append():
    assert decode_form("a[]=x&a[]=y") == {"a": ["x", "y"]}
    assert decode_form("expand[]=data.customer") == {"expand": ["data.customer"]}
    assert Params(decode_form("a[]=x&a[]=y")).str_list("a") == ["x", "y"]


def test_empty_brackets_group_keys_into_one_object_until_a_key_repeats():
    # Rack's rule (Stripe's servers, the docs' curl examples): `a[][k]` adds to the last object
    # unless that object already has `k`.
    assert decode_form("a[][b]=1&a[][c]=2&a[][b]=3&a[][c]=4") == {
        "a": [{"b": "1", "c": "2"}, {"b": "3", "c": "4"}]
    }
    assert decode_form("a[][b][c]=1&a[][b][d]=2&a[][b][c]=3") == {
        "a": [{"b": {"c": "1", "d": "2"}}, {"b": {"c": "3"}}]
    }
    assert decode_form("a[][b][]=1&a[][b][]=2") == {"a": [{"b": ["1", "2"]}]}
    tiers = Params(
        decode_form(
            "tiers[][up_to]=10&tiers[][unit_amount]=5&tiers[][up_to]=inf&tiers[][unit_amount]=3"
        )
    ).obj_list("tiers")
    assert tiers is not None
    assert [(t.str("up_to"), t.int("unit_amount")) for t in tiers] == [("10", 5), ("inf", 3)]


def test_indexed_nesting():
    assert decode_form("a[b][0][c]=v") == {"a": {"b": {"0": {"c": "v"}}}}
    p = Params(decode_form("a[b][0][c]=v&a[b][1][c]=w"))
    a = p.obj("a")
    assert a is not None
    items = a.obj_list("b")
    assert items is not None and [i.str("c") for i in items] == ["v", "w"]
    assert items[1].name("c") == "a[b][1][c]"
    p.done()


def test_empty_values_are_kept():
    assert decode_form("a=&b[c]=&d") == {"a": "", "b": {"c": ""}, "d": ""}
    assert decode_form("") == {}
    assert decode_form(b"") == {}
    assert decode_form("&&a=1&") == {"a": "1"}


def test_percent_encoded_brackets_and_plus():
    assert decode_form("a%5Bb%5D=1") == {"a": {"b": "1"}}
    assert decode_form("a%5bb%5d%5B0%5D=1") == {"a": {"b": {"0": "1"}}}
    assert decode_form("name=Ada+Lovelace&q=1%2B1%3D2&t=%26") == {
        "name": "Ada Lovelace",
        "q": "1+1=2",
        "t": "&",
    }
    assert decode_form("metadata[my+key]=a+b") == {"metadata": {"my key": "a b"}}
    assert decode_form("v=%E2%82%AC") == {"v": "€"}
    assert decode_form("v=a=b") == {"v": "a=b"}


def test_last_scalar_wins():
    assert decode_form("a=1&a=2") == {"a": "2"}


def test_invalid_utf8_is_refused():
    err = refused(lambda: decode_form(b"a=\xff\xfe"))
    assert err.code == "parameter_invalid"


@pytest.mark.parametrize("key", ["a[b", "a]", "[x]", "a[b]]", "a[[b]]", "a[b]c", "]", "["])
def test_malformed_keys_are_refused(key):
    err = refused(lambda: split_key(key))
    assert err.param == key
    assert "a[b][c]" in err.message  # tells how to write it
    err = refused(lambda: decode_form(f"ok=1&{key}=v"))
    assert err.param == key


def test_malformed_percent_encoded_key_is_refused():
    err = refused(lambda: decode_form("a%5Bb=1"))
    assert err.param == "a[b"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ("a=1&a[b]=2", "a"),
        ("a[b]=2&a=1", "a"),
        ("a[]=1&a[b]=2", "a"),
        ("a[b]=1&a[]=2", "a"),
        ("a=1&a[]=2", "a"),
        ("a[]=2&a=1", "a"),
        ("a[b]=1&a[b][c]=2", "a[b]"),
        ("a[b][c]=2&a[b]=1", "a[b]"),
        ("a[0]=x&a[]=y", "a"),
        ("x[y][0]=1&x[y][0][z]=2", "x[y][0]"),
    ],
)
def test_scalar_and_nested_for_the_same_key_is_refused(body, param):
    err = refused(lambda: decode_form(body))
    assert err.param == param
    assert err.code == "parameter_invalid"


def test_decode_takes_pairs():
    assert parse_pairs("a=1&b") == [("a", "1"), ("b", "")]
    assert decode([("a[b]", "1"), ("a[c]", "2")]) == {"a": {"b": "1", "c": "2"}}


# -- Params: scalars --------------------------------------------------------------------------------


def _tier_param() -> Params:
    root = Params(
        decode_form(
            "tiers[0][up_to]=10&tiers[1][up_to]=ten&tiers[1][flat]=yes&tiers[1][amount]=1.2.3&tiers[1][mode]=odd"
        )
    )
    tiers = root.obj_list("tiers")
    assert tiers is not None
    return tiers[1]


def test_int_error_names_bracketed_param():
    root = Params(decode_form("tiers[0][up_to]=ten"))
    tiers = root.obj_list("tiers")
    assert tiers is not None
    err = refused(lambda: tiers[0].int("up_to"))
    assert (err.param, err.code) == ("tiers[0][up_to]", "parameter_invalid_integer")
    assert err.body()["error"]["param"] == "tiers[0][up_to]"


@pytest.mark.parametrize(
    "value", ["1.5", "1e3", "", " 1", "1 ", "12\n", "0x10", "١٢", "1_000", "9" * 19, "--1"]
)
def test_int_refuses_non_integers(value):
    if value == "":
        assert Params({"n": value}).int("n") is None  # empty means unset
        return
    err = refused(lambda: Params({"n": value}).int("n"))
    assert (err.param, err.code) == ("n", "parameter_invalid_integer")


def test_int_accepts_and_bounds():
    p = Params({"a": "42", "b": "-7", "c": "+3", "d": "0", "e": "101"})
    assert (p.int("a"), p.int("b"), p.int("c"), p.int("d", min=0)) == (42, -7, 3, 0)
    err = refused(lambda: p.int("e", min=1, max=100))
    assert (err.param, err.code) == ("e", "parameter_invalid_integer")
    err = refused(lambda: p.int("b", min=0))
    assert err.code == "parameter_invalid_integer"


def test_bool():
    p = Params({"t": "true", "f": "false", "bad": "True", "one": "1", "e": ""})
    assert p.bool("t") is True and p.bool("f") is False and p.bool("e") is None
    for key in ("bad", "one"):
        err = refused(lambda key=key: p.bool(key))
        assert (err.param, err.code) == (key, "parameter_invalid_boolean")
    tier = _tier_param()
    err = refused(lambda: tier.bool("flat"))
    assert (err.param, err.code) == ("tiers[1][flat]", "parameter_invalid_boolean")


@pytest.mark.parametrize(
    "value", ["1.2.3", "abc", "1e", "1e999", "NaN", "Infinity", "1,5", "١.٥", "1.5\n", "."]
)
def test_decimal_refuses(value):
    err = refused(lambda: Params({"d": value}).decimal("d"))
    assert (err.param, err.code) == ("d", "parameter_invalid_decimal")


def test_decimal():
    p = Params({"a": "1.25", "b": "-0.5", "c": ".5", "d": "10", "e": "1.1234567890123", "f": ""})
    assert p.decimal("a") == Decimal("1.25") and p.decimal("b") == Decimal("-0.5")
    assert p.decimal("c") == Decimal("0.5") and p.decimal("d") == Decimal(10)
    assert p.decimal("f") is None
    err = refused(lambda: p.decimal("e", max_places=12))
    assert (err.param, err.code) == ("e", "parameter_invalid_decimal")
    tier = _tier_param()
    err = refused(lambda: tier.decimal("amount"))
    assert (err.param, err.code) == ("tiers[1][amount]", "parameter_invalid_decimal")


def test_enum():
    p = Params({"w": "hour", "x": "week"})
    assert p.enum("w", ("hour", "day")) == "hour"
    err = refused(lambda: p.enum("x", ("hour", "day")))
    assert err.param == "x" and err.code is not None and err.code.startswith("parameter_invalid")
    assert "hour" in err.message and "day" in err.message
    tier = _tier_param()
    err = refused(lambda: tier.enum("mode", ("graduated", "volume")))
    assert err.param == "tiers[1][mode]"


def test_str_max_len_and_nested_value_for_scalar():
    p = Params({"s": "x" * 6, "n": {"a": "b"}, "l": ["a"]})
    err = refused(lambda: p.str("s", max_len=5))
    assert err.param == "s" and err.code == "parameter_invalid_string"
    assert refused(lambda: p.str("n")).param == "n"
    assert refused(lambda: p.int("l")).param == "l"


def test_empty_string_means_unset():
    p = Params(decode_form("name=&count=&flag=&amount=&mode=&obj=&items=&meta="))
    assert p.str("name") is None and p.cleared("name")
    assert p.int("count") is None and p.bool("flag") is None and p.decimal("amount") is None
    assert p.enum("mode", ("a",)) is None
    assert p.obj("obj") is None and p.list("items") is None
    assert p.metadata("meta") == {}  # `metadata=` clears all keys
    p.done()
    assert not Params({}).cleared("name")
    err = refused(lambda: Params({"name": ""}).str("name", required=True))
    assert (err.param, err.code) == ("name", "parameter_missing")


def test_required_names_nested_param():
    root = Params(decode_form("amount[type]=monetary"))
    amount = root.obj("amount", required=True)
    assert amount is not None
    err = refused(lambda: amount.obj("monetary", required=True))
    assert (err.param, err.code) == ("amount[monetary]", "parameter_missing")
    err = refused(lambda: root.obj("applicability_config", required=True))
    assert (err.param, err.code) == ("applicability_config", "parameter_missing")
    err = refused(lambda: root.list("items", required=True))
    assert err.code == "parameter_missing"


def test_obj_refuses_a_scalar():
    err = refused(lambda: Params({"address": "x"}).obj("address"))
    assert err.param == "address"


# -- Params: done() ----------------------------------------------------------------------------------


def test_done_reports_unknown_top_level_key():
    p = Params(decode_form("name=a&nmae=b"))
    p.str("name")
    err = refused(p.done)
    assert (err.param, err.code) == ("nmae", "parameter_unknown")
    assert "nmae" in err.message


def test_done_reports_unknown_nested_keys():
    p = Params(decode_form("address[city]=Paris&address[zip]=75001"))
    addr = p.obj("address")
    assert addr is not None
    addr.str("city")
    err = refused(p.done)
    assert (err.param, err.code) == ("address[zip]", "parameter_unknown")

    p = Params(decode_form("tiers[0][up_to]=1&tiers[1][up_to]=2&tiers[1][upto]=3"))
    for tier in p.obj_list("tiers") or []:
        tier.int("up_to")
    err = refused(p.done)
    assert (err.param, err.code) == ("tiers[1][upto]", "parameter_unknown")


def test_done_passes_when_everything_was_read():
    p = Params(decode_form("a=1&b[c]=2&d[0][e]=3&expand[]=x"))
    p.int("a")
    b = p.obj("b")
    assert b is not None
    b.int("c")
    for d in p.obj_list("d") or []:
        d.int("e")
    p.str_list("expand")
    p.done()


# -- Params: lists -----------------------------------------------------------------------------------


def test_list_from_indexes_sorted_numerically():
    data = {"a": {str(i): f"v{i}" for i in reversed(range(12))}}
    assert Params(data).list("a") == [f"v{i}" for i in range(12)]


@pytest.mark.parametrize(
    "indexes",
    [
        ["0", "2"],
        ["1"],
        ["0", "1", "3"],
        ["-1", "0"],
        ["0", "x"],
        ["0", "01"],
        ["0", " 1"],
        ["0", "+1"],
        ["00"],
    ],
)
def test_list_with_gaps_or_odd_indexes_is_refused(indexes):
    err = refused(lambda: Params({"a": {i: "v" for i in indexes}}).list("a"))
    assert err.param == "a"
    assert err.code == "parameter_invalid"


def test_list_refuses_a_scalar_and_counts_items():
    err = refused(lambda: Params({"a": "x"}).list("a"))
    assert err.param == "a"
    p = Params({"a": ["1", "2", "3"]})
    err = refused(lambda: p.list("a", max_items=2))
    assert err.param == "a"


def test_str_list_and_obj_list_check_item_types():
    err = refused(lambda: Params(decode_form("expand[0][x]=1")).str_list("expand"))
    assert err.param == "expand[0]"
    err = refused(lambda: Params(decode_form("items[0]=1")).obj_list("items"))
    assert err.param == "items[0]"


def test_metadata_with_numeric_keys_stays_a_map():
    p = Params(decode_form("metadata[0]=a&metadata[5]=b"))
    assert p.metadata() == {"0": "a", "5": "b"}


# -- Params: metadata --------------------------------------------------------------------------------


def test_metadata_values_and_deletes():
    p = Params(decode_form("metadata[tier]=gold&metadata[old]="))
    change = p.metadata()
    assert change == {"tier": "gold", "old": ""}
    assert merge_metadata({"old": "1", "keep": "2"}, change) == {"keep": "2", "tier": "gold"}
    assert merge_metadata({"a": "1"}, None) == {"a": "1"}
    assert merge_metadata({"a": "1"}, {}) == {}
    assert Params({}).metadata() is None


def test_metadata_key_length():
    ok = "k" * MAX_METADATA_KEY_LEN
    assert Params({"metadata": {ok: "v"}}).metadata() == {ok: "v"}
    long = "k" * (MAX_METADATA_KEY_LEN + 1)
    err = refused(lambda: Params({"metadata": {long: "v"}}).metadata())
    assert err.param == f"metadata[{long}]"


def test_metadata_value_length():
    assert Params({"metadata": {"k": "v" * MAX_METADATA_VALUE_LEN}}).metadata() is not None
    err = refused(
        lambda: Params({"metadata": {"k": "v" * (MAX_METADATA_VALUE_LEN + 1)}}).metadata()
    )
    assert err.param == "metadata[k]"


def test_metadata_refuses_nested_values_and_scalars():
    err = refused(lambda: Params(decode_form("metadata[a][b]=c")).metadata())
    assert err.param == "metadata[a]"
    err = refused(lambda: Params(decode_form("metadata[]=c")).metadata())
    assert err.param == "metadata"
    err = refused(lambda: Params(decode_form("metadata=x")).metadata())
    assert err.param == "metadata"


def test_metadata_key_count():
    full = {f"k{i}": "v" for i in range(MAX_METADATA_KEYS)}
    assert len(merge_metadata(None, full)) == MAX_METADATA_KEYS
    err = refused(lambda: merge_metadata(full, {"one_more": "v"}))
    assert err.param == "metadata"
    # deleting one while adding one stays within the cap
    assert len(merge_metadata(full, {"k0": "", "one_more": "v"})) == MAX_METADATA_KEYS
    err = refused(
        lambda: merge_metadata(None, {f"k{i}": "v" for i in range(MAX_METADATA_KEYS + 1)})
    )
    assert err.param == "metadata"


def test_metadata_with_brackets_in_a_key_cannot_be_written():
    # a key holding `[` or `]` cannot be expressed: the decoder refuses it
    err = refused(lambda: decode_form("metadata[a%5Bb%5D]=v"))
    assert err.param == "metadata[a[b]]"


def test_exclusive():
    p = Params({"starting_after": "cus_1", "ending_before": "cus_2"})
    err = refused(lambda: p.exclusive("starting_after", "ending_before"))
    assert err.code == "parameters_exclusive"
    Params({"starting_after": "cus_1", "ending_before": ""}).exclusive(
        "starting_after", "ending_before"
    )


def test_decimal_accepts_the_sdk_exponent_form():
    from decimal import Decimal

    from meterline.wire.params import Params

    p = Params({"a": "1E-7", "b": "2.5e+3"})
    assert p.decimal("a") == Decimal("1E-7")
    assert p.decimal("b") == Decimal("2500")
    with pytest.raises(StripeError):
        Params({"c": "1e999"}).decimal("c")
