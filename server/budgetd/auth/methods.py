"""Which role may call which RPC, in one table.

- open to everyone, no credentials: health and server reflection (load balancers and
  stock tools must work; they reveal no budget);
- agent: every BudgetService method (spend, runs, and reads of its ledgers);
- reader: the reads (GetLedger, ListLedgers, ListRuns, Subscribe, GetPrice, ListPolicies,
  GetServerInfo), never a spend;
- admin: everything.

A method missing from the table is admin-only (fail closed); a test lists every RPC of
the contract and fails until a new one is placed here.
"""

from __future__ import annotations

from budgetd.auth.caller import Role

BUDGET_SERVICE = "budgetd.v1.BudgetService"
ADMIN_SERVICE = "budgetd.v1.BudgetAdminService"
OPEN_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }
)

SPENDS = frozenset(
    f"/{BUDGET_SERVICE}/{name}"
    for name in (
        "Check",
        "Reserve",
        "Commit",
        "Release",
        "Consume",
        "ConsumeStream",
        "Batch",
        "BatchStream",
        "OpenRun",
        "Heartbeat",
        "CloseRun",
    )
)
READS = frozenset(
    {
        *(
            f"/{BUDGET_SERVICE}/{name}"
            for name in ("GetLedger", "ListLedgers", "ListRuns", "Subscribe", "GetPrice")
        ),
        f"/{ADMIN_SERVICE}/ListPolicies",
        f"/{ADMIN_SERVICE}/GetServerInfo",
    }
)
ADMIN_ONLY = frozenset(
    f"/{ADMIN_SERVICE}/{name}"
    for name in ("PutPolicy", "DeletePolicy", "ResetLedger", "SetLedgerLimits", "Snapshot")
)
# Requests whose `labels` the gate holds against a scoped caller's scope before the call
# (ConsumeStream: each message's `request.labels`).
LABELED = frozenset(
    f"/{BUDGET_SERVICE}/{name}" for name in ("Check", "Reserve", "Consume", "OpenRun")
)
CONSUME_STREAM = f"/{BUDGET_SERVICE}/ConsumeStream"
# A batch's labels are held to the scope operation by operation (budgetd.batch); its rate
# cost is its number of operations.
BATCH = f"/{BUDGET_SERVICE}/Batch"
BATCH_STREAM = f"/{BUDGET_SERVICE}/BatchStream"

_AGENT = frozenset({Role.AGENT, Role.ADMIN})
_READ = frozenset({Role.READER, Role.ADMIN})
_ALL = frozenset(Role)
_ADMIN = frozenset({Role.ADMIN})


def service_of(method: str) -> str:
    """ "/pkg.Service/Method" -> "pkg.Service"."""
    return method[1:].rsplit("/", 1)[0]


def is_open(method: str) -> bool:
    return service_of(method) in OPEN_SERVICES


def roles_for(method: str) -> frozenset[Role]:
    """The roles that may call `method` (not for the open services)."""
    if method in READS:
        # BudgetService reads are the agent's too: an agent reads its own ledgers.
        return _ALL if service_of(method) == BUDGET_SERVICE else _READ
    if method in SPENDS:
        return _AGENT
    return _ADMIN  # ADMIN_ONLY, and whatever the table does not know yet


def needs(roles: frozenset[Role]) -> str:
    """ "the agent or admin role", for messages."""
    names = [role.value for role in Role if role in roles]
    return f"the {' or '.join(names)} role"
