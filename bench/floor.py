"""The floor of the side-by-side bench: a server of budgetd's own contract that does
nothing, so that budgetd / floor is what budgetd's work costs over what gRPC in Python
costs anyway.

It is what budgetd is minus budgetd: grpc.aio on uvloop, the server options budgetd
uses (`budgetd.server.server_options`, the same bound on concurrent calls), listening
on a Unix socket and on loopback TCP, serving `budgetd.v1.BudgetService` through
generic handlers. Each request is parsed by the real message's `FromString` (what
budgetd parses, the floor parses), and each method answers with the exact reply bytes
budgetd gave for that method in the same run (the side-by-side bench records them from
the real daemon first and hands them over in a JSON file: method -> base64). The
response serializer is the identity, so no reply is built or serialized per call.
Streams answer each message with the recorded message, in order (the recorded
`sequence` is not rewritten: the load generator reads answers in order and does not
look at it). Methods not in the file are not served (UNIMPLEMENTED, as from a daemon
that lacks them).

Run: python -m bench.floor --replies FILE --socket PATH --tcp 127.0.0.1:0
Prints one JSON line `{"ready": true, "pid": ..., "tcp": "127.0.0.1:PORT"}` once serving.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import uvloop

from budgetd.server import MAX_UNARY_IN_FLIGHT, ConnectionLimits, server_options
from budgetd.tuning import settle_heap
from budgetd.v1 import budget_pb2 as pb

SERVICE = "budgetd.v1.BudgetService"
MAX_MESSAGE_BYTES = 65_536  # budgetd's default server.max_message_bytes
UNARY: dict[str, Callable[[bytes], Any]] = {
    "Check": pb.CheckRequest.FromString,
    "Reserve": pb.ReserveRequest.FromString,
    "Commit": pb.CommitRequest.FromString,
    "Release": pb.ReleaseRequest.FromString,
    "Consume": pb.ConsumeRequest.FromString,
    "Batch": pb.BatchRequest.FromString,
}
STREAMS: dict[str, Callable[[bytes], Any]] = {
    "ConsumeStream": pb.ConsumeStreamRequest.FromString,
    "BatchStream": pb.BatchStreamRequest.FromString,
}
METHODS = (*UNARY, *STREAMS)


def _identity(reply: bytes) -> bytes:
    return reply


def _unary(reply: bytes) -> Callable[[Any, Any], Any]:
    async def answer(request: Any, context: Any) -> bytes:
        return reply

    return answer


def _stream(reply: bytes) -> Callable[[AsyncIterator[Any], Any], AsyncIterator[bytes]]:
    async def answer(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[bytes]:
        async for _request in requests:
            yield reply

    return answer


def handlers(
    replies: dict[str, bytes],
    unary: Callable[[bytes], Any] = _unary,
    stream: Callable[[bytes], Any] = _stream,
) -> grpc.GenericRpcHandler[Any, Any]:
    """The service's generic handler: each recorded method, answered with its bytes by
    the behaviour `unary` / `stream` make of them (coroutines by default; plain functions
    for a thread-pool server)."""
    table: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method, reply in replies.items():
        if method in UNARY:
            table[method] = grpc.unary_unary_rpc_method_handler(
                unary(reply),
                request_deserializer=UNARY[method],
                response_serializer=_identity,
            )
        elif method in STREAMS:
            table[method] = grpc.stream_stream_rpc_method_handler(
                stream(reply),
                request_deserializer=STREAMS[method],
                response_serializer=_identity,
            )
    return grpc.method_handlers_generic_handler(SERVICE, table)


def load_replies(path: Path) -> dict[str, bytes]:
    recorded = json.loads(path.read_text(encoding="utf-8"))
    unknown = set(recorded) - set(METHODS)
    if unknown:
        raise SystemExit(f"{path}: not methods of {SERVICE}: {', '.join(sorted(unknown))}")
    return {method: base64.b64decode(text) for method, text in recorded.items()}


def budgetd_max_rpcs() -> int:
    """budgetd's bound on concurrent calls (`budgetd.server.build_server`'s)."""
    return ConnectionLimits().max_streams_total + MAX_UNARY_IN_FLIGHT


async def serve(
    replies: dict[str, bytes],
    socket: Path | None,
    tcp: str | None,
    options: list[tuple[str, Any]] | None = None,
    max_rpcs: int | None = -1,
) -> None:
    """Serve until SIGTERM or SIGINT, with budgetd's server options and bound on
    concurrent calls unless given (`max_rpcs` None: unbounded; -1: budgetd's)."""
    server = grpc.aio.server(
        maximum_concurrent_rpcs=budgetd_max_rpcs() if max_rpcs == -1 else max_rpcs,
        options=server_options(MAX_MESSAGE_BYTES, ConnectionLimits())
        if options is None
        else options,
    )
    server.add_generic_rpc_handlers((handlers(replies),))
    if socket is not None:
        server.add_insecure_port(f"unix:{socket}")
    bound = ""
    if tcp is not None:
        host = tcp.rpartition(":")[0]
        bound = f"{host}:{server.add_insecure_port(tcp)}"
    await server.start()
    settle_heap()  # as budgetd does once its state is loaded
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    # `loop`: the event loop's package ("uvloop" or "asyncio"), for a caller to check.
    loop_kind = type(loop).__module__.split(".")[0]
    print(
        json.dumps({"ready": True, "pid": os.getpid(), "tcp": bound, "loop": loop_kind}), flush=True
    )
    await stop.wait()
    await server.stop(None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--replies", type=Path, required=True, help="JSON: method -> base64")
    parser.add_argument("--socket", type=Path, help="Unix socket path")
    parser.add_argument("--tcp", help="loopback host:port (port 0: any free one)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.socket is None and args.tcp is None:
        parser.error("give --socket, --tcp or both")
    uvloop.run(serve(load_replies(args.replies), args.socket, args.tcp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
