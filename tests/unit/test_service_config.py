"""The retry service config shipped beside the contract is valid and names the right RPCs.

Goal: `protos/budgetd/v1/service_config.json` is what any gRPC client can pass as its
channel's `grpc.service_config`: gRPC's JSON service config (gRFC A6), retrying only
UNAVAILABLE (nothing was acknowledged), and only where a retry cannot count anything
twice: the calls the contract makes idempotent by `request_id`, the reads, and
Heartbeat. Method: parse it (duplicate keys refused), check every field of the retry
policy against A6's rules, and check the names against the contract's descriptor: each
names an existing unary method; every unary method whose request carries `request_id`
is named; the rest are exactly the reads, and the methods left out are the ones listed
here, so a new RPC fails this test until someone decides about it.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc

from budgetd.v1 import budget_pb2

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "protos/budgetd/v1/service_config.json"
# Change nothing (the contract: "Changes nothing", reads) or are idempotent by nature.
READS = {
    "budgetd.v1.BudgetService/Check",
    "budgetd.v1.BudgetService/GetLedger",
    "budgetd.v1.BudgetService/ListLedgers",
    "budgetd.v1.BudgetService/ListRuns",
    "budgetd.v1.BudgetService/GetPrice",
    "budgetd.v1.BudgetService/Heartbeat",  # "Idempotent by nature" (HeartbeatRequest)
    "budgetd.v1.BudgetAdminService/ListPolicies",
    "budgetd.v1.BudgetAdminService/GetServerInfo",
}
# Each operation of a batch is a read or carries its own request_id, so a retried batch
# is answered from what its first attempt did (`replayed`), operation by operation.
BATCHES = {"budgetd.v1.BudgetService/Batch"}
# Not retried by the channel: streams (a retry would restart them), and admin writes
# without a request_id, which a caller retries knowingly if at all.
LEFT_OUT = {
    "budgetd.v1.BudgetService/ConsumeStream",
    "budgetd.v1.BudgetService/BatchStream",
    "budgetd.v1.BudgetService/Subscribe",
    "budgetd.v1.BudgetAdminService/PutPolicy",
    "budgetd.v1.BudgetAdminService/DeletePolicy",
    "budgetd.v1.BudgetAdminService/SetLedgerLimits",
    "budgetd.v1.BudgetAdminService/Snapshot",
}
DURATION = re.compile(r"^\d+(\.\d{1,9})?s$")  # google.protobuf.Duration in JSON


def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    assert len(keys) == len(set(keys)), f"duplicate keys in {keys}"
    return dict(pairs)


def load() -> dict[str, Any]:
    config: dict[str, Any] = json.loads(CONFIG.read_text(), object_pairs_hook=no_duplicate_keys)
    return config


def methods() -> dict[str, Any]:
    """Every method of the contract's services by `service/method`."""
    found = {}
    for service in budget_pb2.DESCRIPTOR.services_by_name.values():
        for method in service.methods:
            found[f"{service.full_name}/{method.name}"] = method
    return found


def named() -> list[str]:
    names = []
    for entry in load()["methodConfig"]:
        for name in entry["name"]:
            assert set(name) == {"service", "method"}, f"name each method: {name}"
            names.append(f"{name['service']}/{name['method']}")
    return names


def test_it_is_a_service_config_of_retry_policies_only() -> None:
    config = load()
    assert set(config) == {"methodConfig"}
    for entry in config["methodConfig"]:
        assert set(entry) == {"name", "retryPolicy"}, "timeouts are the caller's deadline"
        assert entry["name"], "an entry names its methods"


def test_each_retry_policy_follows_grfc_a6_and_retries_only_unavailable() -> None:
    for entry in load()["methodConfig"]:
        policy = entry["retryPolicy"]
        assert set(policy) == {
            "maxAttempts",
            "initialBackoff",
            "maxBackoff",
            "backoffMultiplier",
            "retryableStatusCodes",
        }
        attempts = policy["maxAttempts"]
        assert isinstance(attempts, int) and 2 <= attempts <= 5, "clients cap attempts at 5"
        backoffs = []
        for key in ("initialBackoff", "maxBackoff"):
            assert DURATION.match(policy[key]), f"{key}: {policy[key]!r} is no duration"
            backoffs.append(Decimal(policy[key][:-1]))
        initial, maximum = backoffs
        assert 0 < initial <= maximum
        multiplier = policy["backoffMultiplier"]
        assert isinstance(multiplier, int | float) and multiplier > 0
        codes = policy["retryableStatusCodes"]
        assert all(code in grpc.StatusCode.__members__ for code in codes), codes
        assert codes == ["UNAVAILABLE"]


def test_the_names_are_unary_methods_of_the_contract_named_once() -> None:
    names = named()
    known = methods()
    unknown = [name for name in names if name not in known]
    assert not unknown, f"not in the contract's services: {unknown}"
    assert len(names) == len(set(names)), "a method is named twice"
    streams = [n for n in names if known[n].client_streaming or known[n].server_streaming]
    assert not streams, f"streams are not retried by the channel: {streams}"


def test_exactly_the_request_id_calls_and_the_reads_are_retried() -> None:
    known = methods()
    with_request_id = {
        name
        for name, method in known.items()
        if "request_id" in method.input_type.fields_by_name
        and not (method.client_streaming or method.server_streaming)
    }
    assert with_request_id == {
        "budgetd.v1.BudgetService/Reserve",
        "budgetd.v1.BudgetService/Commit",
        "budgetd.v1.BudgetService/Release",
        "budgetd.v1.BudgetService/Consume",
        "budgetd.v1.BudgetService/OpenRun",
        "budgetd.v1.BudgetService/CloseRun",
        "budgetd.v1.BudgetAdminService/ResetLedger",
    }, "the contract's header lists the calls with a request_id"
    assert not READS & with_request_id
    assert set(named()) == with_request_id | READS | BATCHES
    assert set(known) - set(named()) == LEFT_OUT, "decide about each new RPC here"
