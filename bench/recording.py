"""Calls the real daemon makes before the cells: the replies the floor will give, the
ledgers every cell touches, and the figures GetServerInfo reports.

Replies are taken as the bytes on the wire (a method whose response deserializer is
None hands back the raw message), so the floor sends exactly what budgetd sent.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from bench.loadgen import Options, Requests
from budgetd.v1 import budget_pb2 as pb
from budgetd.v1 import budget_pb2_grpc as rpc

SERVICE = "/budgetd.v1.BudgetService/"


def _identity(message: bytes) -> bytes:
    return message


def _raw_unary(channel: grpc.Channel, method: str) -> Callable[[bytes], bytes]:
    # Requests are bytes already (bench.wire); with no response deserializer gRPC hands
    # back the reply's bytes as they came.
    return channel.unary_unary(SERVICE + method, _identity, None)


def _raw_stream(channel: grpc.Channel, method: str) -> Callable[[bytes], bytes]:
    """The first answer of a stream of one message."""
    call = channel.stream_stream(SERVICE + method, _identity, None)
    return lambda message: bytes(next(iter(call(iter([message])))))


def record_replies(
    target: str, batch_size: int, mix: tuple[str, ...]
) -> tuple[dict[str, bytes], dict[str, str]]:
    """One real call of each method the cells use: method -> reply bytes, and for each
    method the daemon did not answer, why (e.g. UNIMPLEMENTED)."""
    requests = Requests(Options(target, "batch", 1, 0, 0, 0, batch_size=batch_size, mix=mix))
    requests.prefix = "record-"
    replies: dict[str, bytes] = {}
    missing: dict[str, str] = {}
    with grpc.insecure_channel(target) as channel:
        calls: dict[str, Callable[[], bytes]] = {
            "Check": lambda: _raw_unary(channel, "Check")(requests.check()),
            "Consume": lambda: _raw_unary(channel, "Consume")(requests.consume()),
            "Batch": lambda: _raw_unary(channel, "Batch")(requests.batch()),
            "ConsumeStream": lambda: _raw_stream(channel, "ConsumeStream")(
                requests.consume_stream(1)
            ),
            "BatchStream": lambda: _raw_stream(channel, "BatchStream")(requests.batch_stream(1)),
        }
        for method, call in calls.items():
            try:
                replies[method] = call()
            except grpc.RpcError as error:
                missing[method] = _why(error)
        _record_reserve_commit(channel, requests, replies, missing)
    return replies, missing


def _record_reserve_commit(
    channel: grpc.Channel, requests: Requests, replies: dict[str, bytes], missing: dict[str, str]
) -> None:
    try:
        held = _raw_unary(channel, "Reserve")(requests.reserve())
        reservation = pb.ReserveResponse.FromString(held).reservation_id
        replies["Reserve"] = held
        replies["Commit"] = _raw_unary(channel, "Commit")(requests.commit(reservation))
    except grpc.RpcError as error:
        missing["Reserve"] = missing["Commit"] = _why(error)


def _why(error: grpc.RpcError) -> str:
    code, details = getattr(error, "code", None), getattr(error, "details", None)
    return f"{code().name}: {details()}" if code and details else str(error)


def write_replies(replies: dict[str, bytes], path: Path) -> None:
    text = {method: base64.b64encode(reply).decode("ascii") for method, reply in replies.items()}
    path.write_text(json.dumps(text, indent=1), encoding="utf-8")


def touch_ledgers(target: str, threads: int) -> None:
    """One Consume for each thread label the cells use (the labels the load generator
    gives its first `threads` calls), so that every ledger exists before the first cell
    and the label memo knows every label set."""
    consume_batches(target, range(1, threads + 1), threads, batch_size=1, unary=True)


def server_info(target: str) -> pb.GetServerInfoResponse:
    with grpc.insecure_channel(target) as channel:
        info: pb.GetServerInfoResponse = rpc.BudgetAdminServiceStub(channel).GetServerInfo(
            pb.GetServerInfoRequest()
        )
        return info


def consume_batches(
    target: str, numbers: range, threads: int, batch_size: int = 256, unary: bool = False
) -> int:
    """One Consume for each number n, labelled as the load generator labels its n-th
    call over `threads` threads, sent in Batch messages of `batch_size` from two threads
    (one builds while the other waits), or one unary Consume each; returns the
    operations that did not fail."""
    requests = Requests(Options(target, "batch", 1, 0, 0, 0, threads=threads))
    encoder = requests.encoder
    prefix = f"fill{time.time_ns() % 10**9}-"

    def operation(n: int) -> bytes:
        return encoder.consume(f"{prefix}{n}", requests.labels(n))

    with grpc.insecure_channel(target) as channel:
        batch = channel.unary_unary(SERVICE + "Batch", _identity, pb.BatchResponse.FromString)
        consume = _raw_unary(channel, "Consume")
        if unary:
            for n in numbers:
                consume(operation(n))
            return len(numbers)

        def one(start: int) -> int:
            chunk = range(start, min(start + batch_size, numbers.stop))
            message = encoder.batch(
                [encoder.batch_operation("consume", operation(n)) for n in chunk]
            )
            answer = batch(message, timeout=120)
            return sum(1 for r in answer.results if not r.HasField("error"))

        with ThreadPoolExecutor(max_workers=2) as pool:
            return sum(pool.map(one, range(numbers.start, numbers.stop, batch_size)))
