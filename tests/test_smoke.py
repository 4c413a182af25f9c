"""A first end-to-end check: the SDK creates and reads a customer on a real server."""

from openapi_check import assert_matches


def test_customer_roundtrip(client):
    c = client.v1.customers.create(
        {"name": "Ada", "email": "ada@example.com", "metadata": {"tier": "gold"}}
    )
    assert c.id.startswith("cus_")
    got = client.v1.customers.retrieve(c.id)
    assert got.email == "ada@example.com" and got.metadata["tier"] == "gold"
    assert_matches(got._to_dict_recursive(), "customer")
