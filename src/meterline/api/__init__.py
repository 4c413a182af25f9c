"""HTTP: the ASGI application, routing, and one module per resource family.

Owns: turning a request into a service call and a service result into a Stripe object.
`app` holds the request pipeline (size cap, auth, decoding, idempotency, errors); each
resource module decodes its parameters, calls a service, and renders.
Always true: each request runs in one transaction, opened by the pipeline (so an idempotent
response is stored in the same transaction as the change it describes); concurrent writes share
one, each request staying all-or-nothing, and a write is answered only after it has committed
(a route's `prepare` and `precheck` may decode and read before it); every failure leaves as
Stripe's error envelope; a client never sees a traceback.
May import: wire, services, engine (value types and rules), clock, ids. Only the pipeline
(`app.py`) touches `store`, for the request's transaction, its write batches and the stored
idempotent responses; resource modules reach data through services.
"""
