"""The bare handler meterline is measured against.

The smallest Starlette app with the same routes as the benchmarked endpoints: no
auth, no database, no Stripe wire encoding. Its throughput is the ceiling the
ratios in docs/PERFORMANCE.md are taken against. Run by bench/run.py as

    uvicorn bench.bare_app:app --workers 2 --http httptools --loop uvloop
"""

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


class ORJSONResponse(Response):
    media_type = "application/json"

    def render(self, content: object) -> bytes:
        return orjson.dumps(content)


def _customer(customer_id: str) -> dict:
    return {
        "id": customer_id,
        "object": "customer",
        "created": 1700000000,
        "email": "bench@example.com",
        "livemode": False,
        "metadata": {},
        "name": "bench",
    }


async def retrieve_customer(request: Request) -> Response:
    return ORJSONResponse(_customer(request.path_params["id"]))


async def create_customer(request: Request) -> Response:
    body = await request.body()
    customer = _customer("cus_bare")
    customer["received_bytes"] = len(body)
    return ORJSONResponse(customer)


app = Starlette(
    routes=[
        Route("/v1/customers/{id}", retrieve_customer, methods=["GET"]),
        Route("/v1/customers", create_customer, methods=["POST"]),
    ]
)
