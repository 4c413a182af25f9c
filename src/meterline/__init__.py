"""meterline: a self-hosted usage-based billing engine that speaks Stripe's API.

Packages, and the direction of their imports (see docs/architecture.md):
  wire/      Stripe's wire protocol only; used by api/.
  api/       HTTP routes: decode, call a service, render.  api -> services, wire.
  services/  Use cases: transactions, sequencing.            services -> engine, store.
  engine/    Pure logic, no I/O and no clock.                imports nothing of ours.
  store/     Tables, queries, migrations, dialects.          store -> engine (value types).
  clock.py   The one source of "now".
"""

__version__ = "0.1.0"
