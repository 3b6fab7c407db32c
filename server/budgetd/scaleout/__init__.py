"""The Redis side of global budgets (`scope = "global"` policies).

Every sidecar that connects to the same Redis (or Valkey, or a Redis Cluster) leases
slices of a global ledger window's remaining budget with one atomic Lua script, serves
from its slice in memory, and settles what it recorded so the Redis totals are exact
(`redis_store`: the connection, the scripts' Python API and their contract; `scripts`:
the Lua). The leaser drives this package; the core never imports it, and the daemon
needs redis-py (the `global` extra) only when a policy is global.
"""
