"""Request bytes that do not decode answer INVALID_ARGUMENT naming the method, on every
kind of RPC, on the owner's server and on the gated one, and write one log line per
interval rather than one per call; nothing in the ledgers changes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import grpc
import pytest

from budgetd.auth.decoding import UNDECODABLE_LOG, UndecodableLog
from budgetd.auth.gate import Identities, anonymous_tcp
from budgetd.v1 import budget_pb2 as pb
from budgetd.v1 import budget_pb2_grpc as rpc
from tests.service.gated import serve_gated
from tests.service.support import Served

# A field 1 (labels: a map entry) claiming 127 bytes it does not have.
GARBAGE = b"\x0a\x7f\x01\x02"
UNARY = (
    "/budgetd.v1.BudgetService/Consume",
    "/budgetd.v1.BudgetService/Check",
    "/budgetd.v1.BudgetAdminService/PutPolicy",
    "/grpc.health.v1.Health/Check",
)


def _raw_unary(channel: grpc.Channel, method: str) -> grpc.RpcError:
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as refused:
        call(GARBAGE, timeout=10)
    return refused.value


@pytest.mark.parametrize("method", UNARY)
def test_undecodable_unary_request_is_invalid_argument(served: Served, method: str) -> None:
    before = served.in_loop(served.runtime.engine.export_state)
    error = _raw_unary(served.channel, method)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == f"the request bytes do not decode as the request message of {method}"
    assert served.in_loop(served.runtime.engine.export_state) == before


def test_undecodable_subscribe_request_is_invalid_argument(served: Served) -> None:
    method = "/budgetd.v1.BudgetService/Subscribe"
    call = served.channel.unary_stream(method, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as refused:
        list(call(GARBAGE, timeout=10))
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert method in (refused.value.details() or "")


def test_an_undecodable_consume_stream_message_ends_the_stream_after_the_good_ones(
    served: Served,
) -> None:
    method = "/budgetd.v1.BudgetService/ConsumeStream"
    call = served.channel.stream_stream(method, request_serializer=None, response_deserializer=None)
    good = pb.ConsumeStreamRequest(
        sequence=1,
        request=pb.ConsumeRequest(
            labels={"agent": "a"},
            usage=pb.Usage(input_tokens=5, model="gpt-4o"),
            request_id="stream-1",
        ),
    ).SerializeToString()
    answers: Any = call(iter([good, GARBAGE, good]), timeout=10)  # an iterator and a Call
    first = pb.ConsumeStreamResponse.FromString(next(answers))
    assert first.sequence == 1 and first.HasField("response")
    with pytest.raises(grpc.RpcError) as refused:
        next(answers)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert method in (refused.value.details() or "")


def test_the_gated_server_answers_undecodable_bytes_before_asking_who_calls(
    tmp_path: Path,
) -> None:
    # No token and no anonymous role: a decodable request would be UNAUTHENTICATED.
    for gated in serve_gated(Identities(anonymous=anonymous_tcp(None))):
        channel = gated.channel()
        error = _raw_unary(channel, "/budgetd.v1.BudgetService/Consume")
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as refused:
            rpc.BudgetServiceStub(channel).Consume(pb.ConsumeRequest(), timeout=10)
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_the_log_line_is_written_once_per_interval_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    limiter = UndecodableLog(interval_s=60.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="budgetd.auth"):
        assert limiter.record("/m", "peer")
        assert not any(limiter.record("/m", "peer") for _ in range(999))
        now[0] = 60.0
        assert limiter.record("/m", "peer")
    lines = [r for r in caplog.records if "does not decode" in r.getMessage()]
    assert len(lines) == 2
    assert getattr(lines[1], "fields", {}).get("left_out_since_last_line") == 999


def test_a_flood_of_undecodable_calls_logs_at_most_one_line(
    served: Served, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    UNDECODABLE_LOG._last = -UNDECODABLE_LOG.interval_s  # a fresh interval for this test
    with caplog.at_level(logging.WARNING):
        for _ in range(50):
            _raw_unary(served.channel, "/budgetd.v1.BudgetService/Consume")
    lines = [r for r in caplog.records if "does not decode" in r.getMessage()]
    assert len(lines) == 1
