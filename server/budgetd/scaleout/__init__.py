"""The Redis side of global budgets (`scope = "global"` policies).

Every sidecar that connects to the same Redis leases slices of a global ledger window's
remaining budget, serves from its slice in memory, and settles what it recorded so the
Redis totals are exact (`../shared/DESIGN.md` section 6; the core's side is
`budgetd.core.shares`). `planning` decides what one sync of a share asks Redis for.
`redis_store` asks it: the connection (Redis, Sentinel or Cluster URLs) and one atomic
Lua script per operation (`scripts`). The core never imports this package.
"""
