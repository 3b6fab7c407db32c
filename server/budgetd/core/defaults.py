"""The policies budgetd runs with when no config file is given.

They mirror the systems budgetd replaces: a per-thread token registry (100k tokens,
warnings at 75/90/95 %, freed when the thread's run closes), an orchestrator's daily
budget (10M tokens, resetting at midnight UTC), a per-agent limit (2M tokens), at most
10 concurrent runs of at most 120 minutes each, and usage meters per agent and per model.
"""

from __future__ import annotations

from budgetd.core.limits import Limits
from budgetd.core.policy import Policy

DEFAULT_POLICIES: tuple[dict[str, object], ...] = (
    {
        "name": "per-thread",
        "description": "Token budget of one thread (task or conversation); freed when it closes.",
        "per": ["thread"],
        "caps": {"total_tokens": 100_000},
        "close_with_run": True,
    },
    {
        "name": "daily",
        "description": "Tokens of every agent together, per calendar day (UTC).",
        "caps": {"total_tokens": 10_000_000},
        "window": {"kind": "calendar", "unit": "day", "time_zone": "UTC"},
        "evictable": False,
    },
    {
        "name": "per-agent",
        "description": "Tokens of one agent.",
        "per": ["agent"],
        "caps": {"total_tokens": 2_000_000},
    },
    {
        "name": "runs",
        "description": "At most 10 concurrent runs, each at most 120 minutes.",
        "caps": {"concurrency": 10, "run_duration": "120m"},
        "evictable": False,
    },
    {
        "name": "agent-usage",
        "description": "Meter: tokens, cost, requests and latency per agent.",
        "per": ["agent"],
    },
    {
        "name": "model-usage",
        "description": "Meter: tokens, cost, requests and latency per model.",
        "per": ["model"],
    },
)


def default_policies(limits: Limits | None = None) -> tuple[Policy, ...]:
    return tuple(
        Policy.from_mapping(data, limits, f"default policy {data['name']}")
        for data in DEFAULT_POLICIES
    )
