"""Every RPC the daemon serves, called with raw bytes, and what the answers may be.

Goal: one table of methods taken from the descriptors (BudgetService,
BudgetAdminService, health, reflection v1alpha and v1), one way to call any of them
with bytes the test chose (identity serializers: nothing on the client side checks the
message), and the rule every answer is held to: OK or a status code the contract
documents, never INTERNAL or UNKNOWN, in the call's status and in the errors a stream
carries inside its messages (ConsumeStream's `error`, reflection's `error_response`).
"""

from __future__ import annotations

import queue
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from hypothesis import strategies as st

from budgetd.v1 import budget_pb2
from tests.fuzz.strategies import messages, wire_mutation

# The header of budget.proto: "Status codes describe the call itself: INVALID_ARGUMENT,
# NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION, RESOURCE_EXHAUSTED, UNAVAILABLE,
# UNAUTHENTICATED and PERMISSION_DENIED" (README: the status table). OUT_OF_RANGE,
# ABORTED and DEADLINE_EXCEEDED are documented nowhere: the server never sends them, so
# seeing one (a call that hangs past the fuzzer's generous deadline) is a finding.
DOCUMENTED = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)
CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}
# A safety net only (no assertion is about time): a call still running after this long
# is stuck, and answers DEADLINE_EXCEEDED, which is not documented, so the test fails.
CALL_TIMEOUT_S = 60.0
OPENED = "OPENED"  # a server stream that was accepted, then dropped by the fuzzer


@dataclass(frozen=True)
class Rpc:
    path: str
    request: Descriptor
    response: Descriptor
    client_streaming: bool
    server_streaming: bool

    @property
    def name(self) -> str:
        service, method = self.path.strip("/").split("/")
        return f"{service.rsplit('.', 1)[-1]}.{method}" + (
            " (v1)" if service.startswith("grpc.reflection.v1.") else ""
        )


def _of(service: ServiceDescriptor, full_name: str | None = None) -> list[Rpc]:
    return [
        Rpc(
            f"/{full_name or service.full_name}/{m.name}",
            m.input_type,
            m.output_type,
            m.client_streaming,
            m.server_streaming,
        )
        for m in service.methods
    ]


def all_rpcs() -> tuple[Rpc, ...]:
    reflection = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"]
    return (
        *_of(budget_pb2.DESCRIPTOR.services_by_name["BudgetService"]),
        *_of(budget_pb2.DESCRIPTOR.services_by_name["BudgetAdminService"]),
        *_of(health_pb2.DESCRIPTOR.services_by_name["Health"]),
        *_of(reflection),
        # v1 serves v1alpha's messages under the v1 name (budgetd.reflection).
        *_of(reflection, "grpc.reflection.v1.ServerReflection"),
    )


RPCS = all_rpcs()


@dataclass
class Answer:
    code: grpc.StatusCode | None  # None: a server stream accepted, then dropped (OPENED)
    details: str
    responses: list[Message] = field(default_factory=list)
    inner_codes: list[int] = field(default_factory=list)  # errors carried in messages

    @property
    def outcome(self) -> str:
        return OPENED if self.code is None else self.code.name

    @property
    def rejected(self) -> bool:
        """Refused, with nothing applied: no status OK, and no ConsumeStream message
        answered with a response (those answered before a stream fails were applied)."""
        if self.code is None or self.code is grpc.StatusCode.OK:
            return False
        return not any(_applied(response) for response in self.responses)

    def problems(self) -> list[str]:
        """What breaks the rule; empty when the answer is fine."""
        found = []
        if self.code is not None and self.code not in DOCUMENTED:
            found.append(f"status {self.code.name}: {self.details!r}")
        for number in self.inner_codes:
            code = CODE_BY_NUMBER.get(number)
            if code is None or code is grpc.StatusCode.OK or code not in DOCUMENTED:
                found.append(f"an error inside a response has code {number}")
        return found


def call(channel: grpc.Channel, rpc: Rpc, requests: list[bytes]) -> Answer:
    """`requests` (one, unless the method streams requests) sent as they are."""
    decode = GetMessageClass(rpc.response).FromString
    try:
        if rpc.client_streaming:
            return _bidi_stream(channel, rpc, requests)
        if rpc.server_streaming:
            return _server_stream(channel, rpc, requests[0])
        else:
            raw = [channel.unary_unary(rpc.path, None, None)(requests[0], timeout=CALL_TIMEOUT_S)]
    except grpc.RpcError as error:
        return Answer(error.code(), error.details() or "")
    responses = [decode(item) for item in raw]
    return Answer(grpc.StatusCode.OK, "", responses, _inner_codes(responses))


def _bidi_stream(channel: grpc.Channel, rpc: Rpc, requests: list[bytes]) -> Answer:
    """Every answer the stream gave, then how it ended (a stream that fails part way
    keeps the answers to the messages before: those were applied).

    Lock-step: a message goes only once the one before was answered. A message can
    end the whole call in gRPC itself (one over the size limit does), and an answer
    still waiting for durability then never arrives though its message was applied;
    sent one at a time, every applied message has its answer in `responses`."""
    decode = GetMessageClass(rpc.response).FromString
    responses: list[Message] = []
    progress: queue.Queue[bool] = queue.Queue()  # True: an answer came; False: the end

    def one_at_a_time() -> Iterator[bytes]:
        for i, request in enumerate(requests):
            if i and not progress.get():
                return
            yield request

    stream = channel.stream_stream(rpc.path, None, None)(one_at_a_time(), timeout=CALL_TIMEOUT_S)
    code, details = grpc.StatusCode.OK, ""
    try:
        for item in stream:
            responses.append(decode(item))
            progress.put(True)
    except grpc.RpcError as error:
        code, details = error.code(), error.details() or ""
    finally:
        progress.put(False)
    return Answer(code, details, responses, _inner_codes(responses))


def _server_stream(channel: grpc.Channel, rpc: Rpc, request: bytes) -> Answer:
    """A server stream is open once it has shown it is (Subscribe: its resume-point
    metadata, sent before any event; Watch: its first status): then the fuzzer drops
    it. A refused one ends with its status instead."""
    stream: Any = channel.unary_stream(rpc.path, None, None)(request, timeout=CALL_TIMEOUT_S)
    try:
        if rpc.response.full_name == "budgetd.v1.SubscribeResponse":
            if not stream.initial_metadata():  # none: the call ended (or it is a bug)
                return Answer(stream.code(), stream.details() or "")
        else:
            next(stream)
    except grpc.RpcError as error:
        return Answer(error.code(), error.details() or "")
    except StopIteration:
        return Answer(stream.code(), stream.details() or "")
    stream.cancel()
    return Answer(None, "")


def _applied(response: Message) -> bool:
    return "response" in response.DESCRIPTOR.fields_by_name and response.HasField("response")


def _inner_codes(responses: list[Message]) -> list[int]:
    codes = []
    for response in responses:
        fields = response.DESCRIPTOR.fields_by_name
        inner: Any = response  # ConsumeStreamResponse or a reflection response
        if "error" in fields and response.HasField("error"):
            codes.append(inner.error.code)
        if "error_response" in fields and response.HasField("error_response"):
            codes.append(inner.error_response.error_code)
    return codes


# --- requests, and ids learnt from answers ------------------------------------------

HARVESTED = ("reservation_id", "run_id", "key")


class Harvest:
    """Ids the server handed out (reservations, runs, ledger keys), so later requests
    can name things that exist: a commit of a real reservation, a reset of a real
    ledger. Bounded: the last 32 of each."""

    def __init__(self) -> None:
        self.seen: dict[str, deque[str]] = {name: deque(maxlen=32) for name in HARVESTED}

    def take(self, answer: Answer) -> None:
        for response in answer.responses:
            self._walk(response)

    def _walk(self, message: Message) -> None:
        for described, value in message.ListFields():
            if described.type == FieldDescriptor.TYPE_MESSAGE:
                if _is_map(described):
                    continue
                for item in value if described.is_repeated else [value]:
                    self._walk(item)
            elif described.name in self.seen and isinstance(value, str) and value:
                kept = self.seen[described.name]
                if value not in kept:
                    kept.append(value)

    def use(self, data: st.DataObject, message: Message) -> None:
        """Replace some id fields of `message` by harvested ids (drawn from `data`)."""
        for described in message.DESCRIPTOR.fields:
            name = described.name
            if described.type == FieldDescriptor.TYPE_MESSAGE:
                if not described.is_repeated and message.HasField(name):
                    self.use(data, getattr(message, name))
            elif name in self.seen and self.seen[name] and data.draw(st.booleans()):
                setattr(message, name, data.draw(st.sampled_from(list(self.seen[name]))))


def _is_map(described: FieldDescriptor) -> bool:
    entry = described.message_type
    return entry is not None and entry.GetOptions().map_entry


def draw_request(data: st.DataObject, rpc: Rpc, harvest: Harvest) -> bytes:
    """One request of `rpc`: a plausible or a hostile message, and 1 in 4 times its
    bytes broken."""
    hostile = data.draw(st.booleans(), label="hostile")
    message = data.draw(messages(rpc.request, hostile), label="message")
    harvest.use(data, message)
    encoded = message.SerializeToString()
    if data.draw(st.integers(0, 3), label="break the bytes") == 0:
        encoded = data.draw(wire_mutation(rpc.request, encoded), label="bytes")
    return encoded


def draw_requests(data: st.DataObject, rpc: Rpc, harvest: Harvest) -> list[bytes]:
    count = data.draw(st.integers(0, 6), label="messages") if rpc.client_streaming else 1
    return [draw_request(data, rpc, harvest) for _ in range(count)]
