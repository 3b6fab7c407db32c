"""budgetd: a budget sidecar for LLM agents (token, cost, request, time and concurrency ledgers)."""

import os

__version__ = "0.1.0"

# Snapshots are written by a forked child (budgetd.persistence.snapshot). gRPC's own fork
# handlers, when on, tear down its state in the child and can abort it mid-write; the
# child never uses gRPC, so they are turned off — before anything imports grpc.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
