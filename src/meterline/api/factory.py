"""Assemble the application: the router with every resource module, and the expanders."""

from __future__ import annotations

import os

from meterline.api import (
    analytics,
    catalog,
    credits,
    customers,
    invoices,
    meter_events,
    meters,
    subscriptions,
    test_clocks,
)
from meterline.api.app import MeterlineApp
from meterline.api.routing import Router
from meterline.store.db import DEFAULT_URL, Database

MODULES = (
    customers,
    catalog,
    meters,
    meter_events,
    analytics,
    test_clocks,
    credits,
    subscriptions,
    invoices,
)


def build_app(
    database_url: str,
    *,
    background_checkpoint: bool = True,
    rollup_interval: float = 0.0,
    jobs_interval: float = 0.0,
    drain_interval: float = 2.0,
) -> MeterlineApp:
    router = Router()
    expanders = {}
    for module in MODULES:
        module.register(router)
        if hasattr(module, "expanders"):
            expanders.update(module.expanders())
    return MeterlineApp(
        Database(database_url, background_checkpoint=background_checkpoint),
        router,
        expanders,
        rollup_interval=rollup_interval,
        jobs_interval=jobs_interval,
        drain_interval=drain_interval,
    )


def create_app() -> MeterlineApp:
    """The uvicorn factory: each worker process builds its own app from the environment."""
    return build_app(
        os.environ.get("METERLINE_DATABASE_URL", DEFAULT_URL),
        rollup_interval=float(os.environ.get("METERLINE_ROLLUP_INTERVAL", "1")),
        jobs_interval=float(os.environ.get("METERLINE_JOBS_INTERVAL", "5")),
        drain_interval=float(os.environ.get("METERLINE_DRAIN_INTERVAL", "2")),
    )
