"""The list protocol, on /v1/customers: limits, cursors in both directions, stable order among
objects created in the same second, `has_more` at the edges, `url`, the SDK's auto-paging, and
`expand[]` errors on lists.

The tests use a fresh account of their own, so its customer list holds exactly what they made."""

from __future__ import annotations

import pytest

from openapi_check import assert_error, assert_list_of

N = 25


@pytest.fixture(scope="module")
def acct(server):
    """(client, key, ids newest first) for a new account holding exactly N customers."""
    key = server.new_key(new_account=True)
    client = server.client(key)
    ids = [
        client.v1.customers.create({"name": f"L{i:02d}", "email": f"l{i}@example.com"}).id
        for i in range(N)
    ]
    return client, key, ids[::-1]


@pytest.fixture
def ahttp(server, acct):
    with server.http(acct[1]) as c:
        yield c


def _page(ahttp, **params) -> dict:
    r = ahttp.get("/v1/customers", params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert_list_of(body, "customer", url="/v1/customers")
    return body


def _ids(body: dict) -> list[str]:
    return [x["id"] for x in body["data"]]


def test_full_read_is_newest_first_and_stable(acct, ahttp):
    _, _, newest_first = acct
    body = _page(ahttp, limit=100)
    assert _ids(body) == newest_first
    assert body["has_more"] is False
    created = [x["created"] for x in body["data"]]
    assert created == sorted(created, reverse=True)
    # made in a burst: most share a second, so the order below `created` is the tie-break
    assert len(set(created)) < N
    assert [x["name"] for x in body["data"]] == [f"L{i:02d}" for i in reversed(range(N))]
    # the same read again gives the same order
    assert _ids(_page(ahttp, limit=100)) == newest_first


def test_default_limit_is_10(acct, ahttp):
    body = _page(ahttp)
    assert _ids(body) == acct[2][:10]
    assert body["has_more"] is True


def test_limit_1_and_100(acct, ahttp):
    one = _page(ahttp, limit=1)
    assert _ids(one) == acct[2][:1] and one["has_more"] is True
    hundred = _page(ahttp, limit=100)
    assert len(hundred["data"]) == N and hundred["has_more"] is False


@pytest.mark.parametrize("limit", ["0", "101", "-1"])
def test_limit_out_of_range(acct, ahttp, limit):
    r = ahttp.get("/v1/customers", params={"limit": limit})
    assert r.status_code == 400
    assert_error(r.json(), "invalid_request_error", param="limit")


def test_walk_forwards_with_starting_after(acct, ahttp):
    expected = acct[2]
    seen: list[str] = []
    has_more_flags = []
    cursor = None
    while True:
        params = {"limit": 7}
        if cursor:
            params["starting_after"] = cursor
        body = _page(ahttp, **params)
        page = _ids(body)
        assert 0 < len(page) <= 7
        seen += page
        has_more_flags.append(body["has_more"])
        if not body["has_more"]:
            break
        cursor = page[-1]
    assert seen == expected  # every object once, newest first
    assert has_more_flags == [True, True, True, False]


def test_walk_backwards_with_ending_before(acct, ahttp):
    expected = acct[2]
    # start at the oldest object and walk towards the newest
    pages: list[list[str]] = [[expected[-1]]]
    cursor = expected[-1]
    flags = []
    while True:
        body = _page(ahttp, limit=7, ending_before=cursor)
        page = _ids(body)
        assert 0 < len(page) <= 7
        pages.insert(0, page)
        flags.append(body["has_more"])
        if not body["has_more"]:
            break
        cursor = page[0]
    seen = [i for p in pages for i in p]
    assert seen == expected  # each page newest first, every object once
    assert flags == [True, True, True, False]
    assert pages[0] == expected[:3]


def test_has_more_at_the_edges(acct, ahttp):
    ids = acct[2]
    past_end = _page(ahttp, starting_after=ids[-1])
    assert past_end["data"] == [] and past_end["has_more"] is False
    before_start = _page(ahttp, ending_before=ids[0])
    assert before_start["data"] == [] and before_start["has_more"] is False
    exact_tail = _page(ahttp, starting_after=ids[-8], limit=7)
    assert _ids(exact_tail) == ids[-7:] and exact_tail["has_more"] is False
    tail_plus = _page(ahttp, starting_after=ids[-9], limit=7)
    assert _ids(tail_plus) == ids[-8:-1] and tail_plus["has_more"] is True
    exact_head = _page(ahttp, ending_before=ids[7], limit=7)
    assert _ids(exact_head) == ids[:7] and exact_head["has_more"] is False
    head_plus = _page(ahttp, ending_before=ids[8], limit=7)
    assert _ids(head_plus) == ids[1:8] and head_plus["has_more"] is True
    exact = _page(ahttp, limit=N)
    assert len(exact["data"]) == N and exact["has_more"] is False
    short = _page(ahttp, limit=N - 1)
    assert _ids(short) == ids[:-1] and short["has_more"] is True


def test_both_cursors_are_refused(acct, ahttp):
    ids = acct[2]
    r = ahttp.get("/v1/customers", params={"starting_after": ids[3], "ending_before": ids[1]})
    assert r.status_code == 400
    body = r.json()
    assert_error(body, "invalid_request_error")
    assert body["error"]["param"] in ("starting_after", "ending_before")


@pytest.mark.parametrize("which", ["starting_after", "ending_before"])
def test_unknown_cursor_is_404(acct, ahttp, which):
    r = ahttp.get("/v1/customers", params={which: "cus_nosuchcursor00"})
    assert r.status_code == 404
    assert_error(r.json(), "invalid_request_error", code="resource_missing", param=which)


def test_url_is_the_request_path(acct, ahttp):
    body = _page(ahttp, limit=2, starting_after=acct[2][0])
    assert body["url"] == "/v1/customers"


def test_sdk_auto_paging_visits_all(acct):
    client, _, ids = acct
    got = [c.id for c in client.v1.customers.list({"limit": 4}).auto_paging_iter()]
    assert got == ids
    # backwards from the oldest: the SDK yields oldest to newest
    back = [
        c.id
        for c in client.v1.customers.list({"limit": 6, "ending_before": ids[-1]}).auto_paging_iter()
    ]
    assert back == ids[-2::-1]


def test_sdk_list_object(acct):
    client, _, ids = acct
    lst = client.v1.customers.list({"limit": 5})
    assert_list_of(lst._to_dict_recursive(), "customer", url="/v1/customers")
    assert [c.id for c in lst.data] == ids[:5] and lst.has_more is True


def test_expand_of_a_non_expandable_field_on_a_list(acct, ahttp):
    r = ahttp.get("/v1/customers", params={"expand[]": "data.email"})
    assert r.status_code == 400
    assert_error(r.json(), "invalid_request_error", param="expand[0]")
    r = ahttp.get(
        "/v1/customers", params=[("expand[]", "data.test_clock"), ("expand[]", "data.name")]
    )
    assert r.status_code == 400
    assert_error(r.json(), "invalid_request_error", param="expand[1]")
    r = ahttp.get("/v1/customers", params={"expand[]": "data.email", "limit": 1})
    assert r.status_code == 400
    assert_error(r.json(), "invalid_request_error", param="expand[0]")


def test_expand_refusal_does_not_depend_on_the_data(acct, ahttp):
    r = ahttp.get("/v1/customers", params={"expand[]": "data.phone"})  # phone is null on every item
    assert r.status_code == 400
    r = ahttp.get(
        "/v1/customers", params={"expand[]": "data.email", "ending_before": acct[2][0]}
    )  # empty page
    assert r.status_code == 400


def test_expand_deeper_than_4_levels(acct, ahttp):
    r = ahttp.get("/v1/customers", params={"expand[]": "data.a.b.c.d"})
    assert r.status_code == 400
    assert_error(r.json(), "invalid_request_error", param="expand[0]")
    r = ahttp.get(f"/v1/customers/{acct[2][0]}", params={"expand[]": "a.b.c.d.e"})
    assert r.status_code == 400
    assert_error(r.json(), "invalid_request_error", param="expand[0]")


def test_bad_limit_integer(acct, ahttp):
    r = ahttp.get("/v1/customers", params={"limit": "abc"})
    assert r.status_code == 400
    assert_error(r.json(), "invalid_request_error", code="parameter_invalid_integer", param="limit")


def test_deleted_objects_leave_the_list(server):
    """A second fresh account: deleting the middle object closes the gap in paging."""
    key = server.new_key(new_account=True)
    client = server.client(key)
    ids = [client.v1.customers.create({"name": f"D{i}"}).id for i in range(5)][::-1]
    client.v1.customers.delete(ids[2])
    with server.http(key) as h:
        assert _ids(_page(h, limit=100)) == [ids[0], ids[1], ids[3], ids[4]]
        assert _ids(_page(h, limit=2, starting_after=ids[1])) == [ids[3], ids[4]]
