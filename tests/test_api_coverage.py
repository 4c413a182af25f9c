"""docs/api-coverage.md and the router agree on what meterline serves."""

from __future__ import annotations

import re
from pathlib import Path

from meterline.api.factory import MODULES
from meterline.api.routing import Router

DOC = Path(__file__).resolve().parent.parent / "docs" / "api-coverage.md"


def _norm(path: str) -> str:
    return re.sub(r"\{\w+\}", "{}", path)


def test_coverage_table_matches_the_router():
    router = Router()
    for module in MODULES:
        module.register(router)
    served = {(m, _norm(p)) for (m, p) in router.static} | {
        (r.method, _norm(r.path)) for r in router.dynamic
    }
    documented = set()
    for m in re.finditer(r"^\| `(\w+)` \| `([^`]+)` \| yes", DOC.read_text(), re.M):
        documented.add((m.group(1), _norm(m.group(2))))
    assert served == documented, {
        "served, not marked yes": served - documented,
        "marked yes, not served": documented - served,
    }
