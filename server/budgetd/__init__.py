"""budgetd: a budget sidecar for LLM agents (token, cost, request, time and concurrency ledgers)."""

__version__ = "0.1.0"
