"""A client that becomes another Unix user, then calls the daemon: one JSON line per call.

    python -m tests.e2e.as_user UID GID TARGET CALL...

It starts as root (the suite runs as root in CI), imports everything it needs, then
gives up root for UID/GID (groups, gid, uid, in that order) before its first call
connects: the kernel records the new credentials at connect(), so the daemon sees this
process as that user. Dropping inside the process, not with `preexec_fn`, keeps the
interpreter, which may live under a directory that user cannot read, working.
`BUDGETD_TEST_TOKEN` in the environment is sent as a bearer token.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from budgetd.v1 import budget_pb2 as pb
from budgetd.v1 import budget_pb2_grpc as rpc

TIMEOUT_S = 30.0
LABELS = {"agent": "intruder", "thread": "intruder-1"}


def _calls(channel: grpc.Channel) -> dict[str, Callable[[Any], Any]]:
    budget, admin = rpc.BudgetServiceStub(channel), rpc.BudgetAdminServiceStub(channel)
    zero = pb.Policy(
        name="everything-zero", caps=[pb.Cap(dimension=pb.DIMENSION_TOTAL_TOKENS, limit=0)]
    )
    usage = pb.Usage(input_tokens=10, model="gpt-4o")
    return {
        "PutPolicy": lambda md: admin.PutPolicy(
            pb.PutPolicyRequest(policy=zero), metadata=md, timeout=TIMEOUT_S
        ),
        "ResetLedger": lambda md: admin.ResetLedger(
            pb.ResetLedgerRequest(key="daily", request_id="reset-1"), metadata=md, timeout=TIMEOUT_S
        ),
        "ListPolicies": lambda md: admin.ListPolicies(
            pb.ListPoliciesRequest(), metadata=md, timeout=TIMEOUT_S
        ),
        "Consume": lambda md: budget.Consume(
            pb.ConsumeRequest(request_id=f"c-{os.getpid()}", labels=LABELS, usage=usage),
            metadata=md,
            timeout=TIMEOUT_S,
        ),
        "GetLedger": lambda md: budget.GetLedger(
            pb.GetLedgerRequest(key="daily"), metadata=md, timeout=TIMEOUT_S
        ),
        "ListLedgers": lambda md: budget.ListLedgers(
            pb.ListLedgersRequest(), metadata=md, timeout=TIMEOUT_S
        ),
        "Health": lambda md: health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), metadata=md, timeout=TIMEOUT_S
        ),
    }


def main(argv: list[str]) -> int:
    uid, gid, target, *names = argv
    token = os.environ.get("BUDGETD_TEST_TOKEN")
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    # The channel and stubs are made while still root: grpc imports modules lazily the
    # first time (grpc._channel), and the checkout may sit in a directory the other user
    # cannot read (mktemp -d is 0700). A new channel is idle: it connects on the first
    # call, after the credentials changed.
    channel = grpc.insecure_channel(target)
    calls = _calls(channel)
    os.setgroups([])
    os.setgid(int(gid))
    os.setuid(int(uid))
    for name in names:
        try:
            calls[name](metadata)
        except grpc.RpcError as error:
            code, details = error.code().name, error.details()
        else:
            code, details = "OK", ""
        print(json.dumps({"call": name, "code": code, "details": details}), flush=True)
    channel.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
