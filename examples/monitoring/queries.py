"""The Grafana dashboard's PromQL, made runnable against a plain Prometheus.

`dashboard_queries()` returns (panel title, expr) for every target of grafana-dashboard.json
with Grafana's interval macros (`$__rate_interval`, `$__interval`) replaced by `1m` and the
dashboard's template variables (`$budgetd_policy`, `${tenant}`, `[[tenant]]`) by `.*`, so
that each expression can be sent to Prometheus' /api/v1/query as is. The dashboard only
uses variables inside regex matchers (`tenant=~"$tenant"`), where `.*` means "all".
A `[1m]` window needs two samples in a minute: scrape every 30 s or faster.

    from examples.monitoring.queries import dashboard_queries
    for title, expr in dashboard_queries():
        ...

Standard library only: the daemon's tests import it without Grafana or any package.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["DASHBOARD", "concrete_expr", "dashboard_queries", "iter_panels"]

DASHBOARD = Path(__file__).with_name("grafana-dashboard.json")

# What Grafana's interval macros become: a window wide enough for four 15 s scrapes.
INTERVAL = "1m"
# What a template variable becomes: inside `=~"..."`, every value (and no label at all).
ALL = ".*"

_INTERVAL_MACROS = frozenset({"__rate_interval", "__interval"})
# $name, ${name}, ${name:format}, [[name]] (Grafana's deprecated form).
_VARIABLE = re.compile(r"\$\{(\w+)(?::[\w-]+)?\}|\$(\w+)|\[\[(\w+)(?::[\w-]+)?\]\]")


def _substitute(match: re.Match[str]) -> str:
    name = next(group for group in match.groups() if group is not None)
    if name in _INTERVAL_MACROS:
        return INTERVAL
    if name.startswith("__"):
        raise ValueError(f"unsupported Grafana macro ${name} in a dashboard query")
    return ALL


def concrete_expr(expr: str) -> str:
    """`expr` with interval macros as `1m` and template variables as `.*`."""
    return _VARIABLE.sub(_substitute, expr)


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included (a collapsed row holds its own)."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))


def dashboard_queries(path: str | os.PathLike[str] = DASHBOARD) -> list[tuple[str, str]]:
    """(panel title, concrete expr) for every target of the dashboard at `path`, in order."""
    with open(path, encoding="utf-8") as file:
        dashboard = json.load(file)
    return [
        (str(panel.get("title", "")), concrete_expr(str(target["expr"])))
        for panel in iter_panels(dashboard.get("panels", []))
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
