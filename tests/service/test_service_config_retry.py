"""A gRPC channel given the shipped service config retries UNAVAILABLE, as the README says.

Goal: `protos/budgetd/v1/service_config.json`, passed as the channel option
`grpc.service_config`, makes a stock gRPC client retry an idempotent call that failed
with UNAVAILABLE, sending the same request again, and leaves other calls and other codes
alone. Method: an in-process server on a Unix socket whose handlers answer UNAVAILABLE a
set number of times before succeeding, counting the attempts it received; the client is
a plain grpc channel with and without the option. No timing: the attempts are counted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from budgetd.v1 import budget_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]
SERVICE_CONFIG = (ROOT / "protos/budgetd/v1/service_config.json").read_text()
BUDGET = "budgetd.v1.BudgetService"
ADMIN = "budgetd.v1.BudgetAdminService"
Handle = Callable[[Any, grpc.ServicerContext], Any]


@dataclass
class Flaky:
    """Fails the first `failures` attempts of each method with `code`, then answers."""

    failures: int = 2
    code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    seen: dict[str, list[Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handler(self, name: str, response: Any) -> Handle:
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            with self.lock:
                attempts = self.seen.setdefault(name, [])
                attempts.append(request)
                failing = len(attempts) <= self.failures
            if failing:
                context.abort(self.code, f"attempt {len(attempts)} fails")
            return response

        return handle


@pytest.fixture
def flaky(tmp_path: Path) -> Iterator[tuple[Flaky, str]]:
    state = Flaky()
    methods: dict[str, dict[str, tuple[Any, Handle]]] = {
        BUDGET: {
            "Check": (pb.CheckRequest, state.handler("Check", pb.CheckResponse())),
            "Reserve": (pb.ReserveRequest, state.handler("Reserve", pb.ReserveResponse())),
        },
        ADMIN: {
            "PutPolicy": (pb.PutPolicyRequest, state.handler("PutPolicy", pb.PutPolicyResponse())),
        },
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    for service, handlers in methods.items():
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    service,
                    {
                        name: grpc.unary_unary_rpc_method_handler(
                            handle,
                            request_deserializer=request_type.FromString,
                            response_serializer=lambda message: message.SerializeToString(),
                        )
                        for name, (request_type, handle) in handlers.items()
                    },
                ),
            )
        )
    target = f"unix:{tmp_path / 'flaky.sock'}"
    server.add_insecure_port(target)
    server.start()
    try:
        yield state, target
    finally:
        server.stop(None)


def call(channel: grpc.Channel, service: str, method: str, request: Any, reply: Any) -> Any:
    stub = channel.unary_unary(
        f"/{service}/{method}",
        request_serializer=lambda message: message.SerializeToString(),
        response_deserializer=reply.FromString,
    )
    return stub(request, timeout=30)


def configured(target: str) -> grpc.Channel:
    return grpc.insecure_channel(target, options=[("grpc.service_config", SERVICE_CONFIG)])


def test_unavailable_is_retried_with_the_same_request(flaky: tuple[Flaky, str]) -> None:
    state, target = flaky
    request = pb.ReserveRequest(request_id="r-1", labels={"agent": "a"})
    with configured(target) as channel:
        call(channel, BUDGET, "Reserve", request, pb.ReserveResponse)
        call(channel, BUDGET, "Check", pb.CheckRequest(), pb.CheckResponse)
    assert state.seen["Reserve"] == [request] * 3, "two UNAVAILABLE, then the answer"
    assert len(state.seen["Check"]) == 3


def test_without_the_config_the_first_unavailable_is_final(flaky: tuple[Flaky, str]) -> None:
    state, target = flaky
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as raised:
        call(channel, BUDGET, "Check", pb.CheckRequest(), pb.CheckResponse)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(state.seen["Check"]) == 1


def test_a_method_it_does_not_name_is_not_retried(flaky: tuple[Flaky, str]) -> None:
    state, target = flaky
    with configured(target) as channel, pytest.raises(grpc.RpcError) as raised:
        call(channel, ADMIN, "PutPolicy", pb.PutPolicyRequest(), pb.PutPolicyResponse)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(state.seen["PutPolicy"]) == 1


def test_other_codes_are_not_retried(flaky: tuple[Flaky, str]) -> None:
    state, target = flaky
    state.code = grpc.StatusCode.RESOURCE_EXHAUSTED
    with configured(target) as channel, pytest.raises(grpc.RpcError) as raised:
        call(channel, BUDGET, "Check", pb.CheckRequest(), pb.CheckResponse)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(state.seen["Check"]) == 1


def test_attempts_stop_at_max_attempts(flaky: tuple[Flaky, str]) -> None:
    state, target = flaky
    state.failures = 100
    with configured(target) as channel, pytest.raises(grpc.RpcError) as raised:
        call(channel, BUDGET, "Check", pb.CheckRequest(), pb.CheckResponse)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(state.seen["Check"]) == 5  # maxAttempts
