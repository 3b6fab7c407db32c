"""The side-by-side bench's load generator: its own process, so that it never shares the
server's GIL, driving budgetd, the floor (bench.floor) or the Redis peer.

A closed loop of --concurrency callers, each making its next call as soon as the last
was answered, spread over --channels gRPC channels (default one per 16 callers, each its
own connection). After --warmup seconds the measured window starts: the server's CPU
time (utime + stime of all its threads, /proc/PID/stat) and RSS (VmRSS) are read at both
ends of the window (--server-pid), as are this process's CPU and the whole machine's,
so that the CPU per operation excludes the warm-up. Each call's latency goes into a
fixed-size histogram. Prints one JSON line.

Operations (what one "op" is):
- check, consume: one unary call;
- reserve_commit: one Reserve then the Commit of its reservation (one op = the pair);
- consume_stream, batch_stream: one stream per caller, lock-step: a caller writes one
  message and reads its answer before writing the next, so a message's latency is its
  round trip and --concurrency is the number of messages in flight;
- batch: one unary Batch of --batch-size operations (--mix: their kinds, cycled);
- redis: one EVALSHA of the check-and-consume script per call, one connection per
  caller; redis_pipelined: 64 EVALSHA per round trip (bench.redis_peer).
For batches and pipelines an op is one message; `decisions` counts the operations in
them (--batch-size, or 64, per message).

Labels spread over --threads thread labels (t0, t1, ...) and 8 agents, so the ledgers
the load touches exist after the warm-up and stay bounded; request ids are unique per
call (--id-prefix keeps them unique across load generators on one daemon).

Run: python -m bench.loadgen --target unix:/path/budgetd.sock --operation consume
     --concurrency 64 --duration 3 --warmup 1 --server-pid PID
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import uvloop

from bench import procstat, redis_peer, wire
from bench.histogram import Histogram
from budgetd.v1 import budget_pb2 as pb

GRPC_OPERATIONS = ("check", "reserve_commit", "consume", "consume_stream", "batch", "batch_stream")
REDIS_OPERATIONS = ("redis", "redis_pipelined")
OPERATIONS = GRPC_OPERATIONS + REDIS_OPERATIONS
BATCHED = ("batch", "batch_stream", "redis_pipelined")
MIX_KINDS = ("check", "consume")
CALLERS_PER_CHANNEL = 16
USAGE = pb.Usage(input_tokens=120, output_tokens=80, model="gpt-4o", latency_us=350_000)
ESTIMATE = pb.Usage(input_tokens=120, output_tokens=80, model="gpt-4o")
AGENTS = 8
SPREAD = 7_919  # a prime: n * SPREAD % threads visits every thread once per `threads` calls
SERVICE = "/budgetd.v1.BudgetService/"
# Answers larger than gRPC's 4 MiB default never come here, but a big batch's answer
# comes close enough that the limit is raised rather than risked.
CHANNEL_OPTIONS = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_receive_message_length", 2**26),
]

One = Callable[[], Awaitable[int]]  # one op; returns the decisions it made
EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]  # grpc-stubs lacks it


class OpFailed(Exception):
    """An op that answered, but not as the bench expects (a per-message error, a denial)."""


@dataclass
class Options:
    target: str
    operation: str
    concurrency: int
    duration: float
    warmup: float
    server_pid: int
    channels: int = 0
    transport: str = ""
    batch_size: int = 64
    mix: tuple[str, ...] = ("consume",)
    threads: int = 1_000
    id_prefix: str = ""

    def __post_init__(self) -> None:
        if not self.channels:
            self.channels = max(1, -(-self.concurrency // CALLERS_PER_CHANNEL))
        if not self.transport:
            self.transport = "uds" if self.target.startswith("unix:") else "tcp"
        if not self.id_prefix:
            self.id_prefix = f"lg{os.getpid()}x{time.time_ns() % 10**9}"


class Requests:
    """Builds the requests, as protobuf bytes (bench.wire): labels over a bounded set of
    threads, ids unique per call."""

    def __init__(self, options: Options) -> None:
        self.prefix = options.id_prefix
        self.threads = options.threads
        self.mix = options.mix
        self.batch_size = options.batch_size
        self.sequence = 0
        self.encoder = wire.Encoder(USAGE, ESTIMATE)
        self.spread = SPREAD if math.gcd(SPREAD, self.threads) == 1 else 1

    def _next(self) -> int:
        self.sequence += 1
        return self.sequence

    def labels(self, n: int) -> dict[str, str]:
        # SPREAD (a prime) walks the threads in a scattered order: with a million of them
        # consecutive calls touch ledgers far apart, as independent agents would.
        return {"agent": f"a{n % AGENTS}", "thread": f"t{n * self.spread % self.threads}"}

    def check(self) -> bytes:
        return self.encoder.check(self.labels(self._next()))

    def consume(self) -> bytes:
        n = self._next()
        return self.encoder.consume(f"{self.prefix}c{n}", self.labels(n))

    def reserve(self) -> bytes:
        n = self._next()
        return self.encoder.reserve(f"{self.prefix}r{n}", self.labels(n))

    def commit(self, reservation_id: str) -> bytes:
        return self.encoder.commit(f"{self.prefix}k{self._next()}", reservation_id)

    def batch(self) -> bytes:
        operations = []
        for i in range(self.batch_size):
            kind = self.mix[i % len(self.mix)]
            request = self.check() if kind == "check" else self.consume()
            operations.append(self.encoder.batch_operation(kind, request))
        return self.encoder.batch(operations)

    def consume_stream(self, sequence: int) -> bytes:
        return self.encoder.consume_stream(sequence, self.consume())

    def batch_stream(self, sequence: int) -> bytes:
        return self.encoder.batch_stream(sequence, self.batch())

    def redis_keys(self) -> list[bytes]:
        n = self._next()
        return redis_peer.keys_for(f"a{n % AGENTS}", f"t{n * self.spread % self.threads}", "gpt-4o")


def _batch_decisions(response: pb.BatchResponse) -> int:
    failed = sum(1 for result in response.results if result.HasField("error"))
    if failed:
        first = next(r.error for r in response.results if r.HasField("error"))
        raise OpFailed(f"{failed} of {len(response.results)} batch results failed: {first.message}")
    return len(response.results)


def _identity(message: bytes) -> bytes:
    return message


class Calls:
    """The service's methods on one channel, taking requests as bytes (bench.wire) and
    answering parsed replies (what a client does with them)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        def unary(method: str, reply: Any) -> Any:
            return channel.unary_unary(SERVICE + method, _identity, reply.FromString)

        def stream(method: str, reply: Any) -> Any:
            return channel.stream_stream(SERVICE + method, _identity, reply.FromString)

        self.check = unary("Check", pb.CheckResponse)
        self.consume = unary("Consume", pb.ConsumeResponse)
        self.reserve = unary("Reserve", pb.ReserveResponse)
        self.commit = unary("Commit", pb.CommitResponse)
        self.batch = unary("Batch", pb.BatchResponse)
        self.consume_stream = stream("ConsumeStream", pb.ConsumeStreamResponse)
        self.batch_stream = stream("BatchStream", pb.BatchStreamResponse)


# --- one op per operation: a factory per caller (streams are opened per caller) ----------


def unary_op(operation: str, calls: Calls, requests: Requests) -> One:
    async def check() -> int:
        await calls.check(requests.check())
        return 1

    async def consume() -> int:
        await calls.consume(requests.consume())
        return 1

    async def reserve_commit() -> int:
        held = await calls.reserve(requests.reserve())
        if not held.reservation_id:
            raise OpFailed("reserve denied: the bench's caps must never deny")
        await calls.commit(requests.commit(held.reservation_id))
        return 1

    async def batch() -> int:
        return _batch_decisions(await calls.batch(requests.batch()))

    return {"check": check, "consume": consume, "reserve_commit": reserve_commit, "batch": batch}[
        operation
    ]


def stream_op(operation: str, calls: Calls, requests: Requests) -> One:
    """A lock-step stream: one message written, its answer read, then the next."""
    batched = operation == "batch_stream"
    call: Any = calls.batch_stream() if batched else calls.consume_stream()
    sequence = 0

    async def one() -> int:
        nonlocal sequence
        sequence += 1
        if batched:
            await call.write(requests.batch_stream(sequence))
        else:
            await call.write(requests.consume_stream(sequence))
        answer = await call.read()
        if answer is EOF:
            raise OpFailed(f"the stream ended: {await call.code()} {await call.details()}")
        if answer.HasField("error"):
            raise OpFailed(f"stream message failed: {answer.error.message}")
        return _batch_decisions(answer.response) if batched else 1

    return one


async def redis_op(operation: str, target: str, requests: Requests, opened: list[Any]) -> One:
    """One caller's op on a connection of its own (added to `opened`, closed at the end)."""
    from redis.asyncio import Redis  # noqa: PLC0415 - only the peer's cells need redis-py

    if target.startswith("unix:"):
        client = Redis(unix_socket_path=target[5:], single_connection_client=True)
    else:
        host, _, port = target.rpartition(":")
        client = Redis(host=host, port=int(port), single_connection_client=True)
    opened.append(client)
    sha = await client.script_load(redis_peer.CHECK_AND_CONSUME)
    args = redis_peer.script_args()

    async def one() -> int:
        decision, _blocked = await client.evalsha(sha, 4, *requests.redis_keys(), *args)
        if decision != 1:
            raise OpFailed("the script denied: the bench's caps must never deny")
        return 1

    async def pipelined() -> int:
        pipe = client.pipeline(transaction=False)
        for _ in range(redis_peer.PIPELINE_DEPTH):
            pipe.evalsha(sha, 4, *requests.redis_keys(), *args)
        answers = await pipe.execute()
        if any(decision != 1 for decision, _ in answers):
            raise OpFailed("the script denied: the bench's caps must never deny")
        return len(answers)

    return pipelined if operation == "redis_pipelined" else one


# --- the window ---------------------------------------------------------------------------


@dataclass
class Tally:
    histogram: Histogram = field(default_factory=Histogram)
    ops: int = 0
    decisions: int = 0
    errors: int = 0
    error_sample: str = ""
    measuring: bool = False
    stopping: bool = False

    def failed(self, error: BaseException) -> None:
        if self.measuring:
            self.errors += 1
        if not self.error_sample:
            self.error_sample = _describe(error)


def _describe(error: BaseException) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    return f"{type(error).__name__}: {error}"[:300]


async def caller(make: Callable[[], Awaitable[One]], tally: Tally) -> None:
    """Closed loop: the next op as soon as the last is answered, until the window ends.
    A failure is counted and the op made again (a broken stream is opened anew)."""
    clock = time.perf_counter_ns
    one = await make()
    while not tally.stopping:
        began = clock()
        try:
            decisions = await one()
        except (grpc.aio.AioRpcError, OpFailed, ConnectionError, OSError) as error:
            tally.failed(error)
            await asyncio.sleep(0.001)  # a server refusing everything is not spun on
            one = await make()
            continue
        if tally.measuring:
            tally.histogram.record(clock() - began)
            tally.ops += 1
            tally.decisions += decisions


def mark(pid: int) -> dict[str, float]:
    return {
        "at": time.perf_counter(),
        "server_cpu": procstat.cpu_seconds(pid),
        "server_rss": procstat.rss_bytes(pid),
        "own_cpu": time.process_time(),
        "machine": procstat.machine_busy_seconds(),
    }


def summary(
    options: Options, tally: Tally, start: dict[str, float], end: dict[str, float]
) -> dict[str, Any]:
    seconds = end["at"] - start["at"]
    server_cpu = end["server_cpu"] - start["server_cpu"]
    own_cpu = end["own_cpu"] - start["own_cpu"]
    ops = max(tally.ops, 1)
    h = tally.histogram
    return {
        "operation": options.operation,
        "transport": options.transport,
        "concurrency": options.concurrency,
        "channels": options.channels,
        "batch_size": options.batch_size if options.operation in BATCHED else 1,
        "seconds": seconds,
        "ops": tally.ops,
        "decisions": tally.decisions,
        "ops_per_s": tally.ops / seconds,
        "decisions_per_s": tally.decisions / seconds,
        "p50_us": h.percentile_us(0.50),
        "p99_us": h.percentile_us(0.99),
        "p999_us": h.percentile_us(0.999),
        "mean_us": h.mean_us(),
        "server_cpu_us_per_op": server_cpu / ops * 1e6,
        "server_cpu_us_per_decision": server_cpu / max(tally.decisions, 1) * 1e6,
        "server_busy": server_cpu / seconds,
        "server_rss_start": int(start["server_rss"]),
        "server_rss": int(end["server_rss"]),
        "own_cpu_us_per_op": own_cpu / ops * 1e6,
        "own_busy": own_cpu / seconds,
        "others_busy": max(0.0, end["machine"] - start["machine"] - server_cpu - own_cpu) / seconds,
        "errors": tally.errors,
        "error_sample": tally.error_sample,
    }


async def _factories(
    options: Options, requests: Requests, channels: list[grpc.aio.Channel], opened: list[Any]
) -> list[Callable[[], Awaitable[One]]]:
    """One op factory per caller, callers spread round-robin over the channels."""
    operation = options.operation
    makers: list[Callable[[], Awaitable[One]]] = []
    for index in range(options.concurrency):
        if operation in REDIS_OPERATIONS:

            async def make_redis() -> One:
                return await redis_op(operation, options.target, requests, opened)

            makers.append(make_redis)
            continue
        calls = Calls(channels[index % len(channels)])

        async def make(calls: Calls = calls) -> One:
            if operation in ("consume_stream", "batch_stream"):
                return stream_op(operation, calls, requests)
            return unary_op(operation, calls, requests)

        makers.append(make)
    return makers


async def drive(options: Options) -> dict[str, Any]:
    """Warm up, measure one window, stop every caller; the window's figures."""
    requests = Requests(options)
    tally = Tally()
    channels: list[grpc.aio.Channel] = []
    opened: list[Any] = []  # Redis clients
    if options.operation in GRPC_OPERATIONS:
        for _ in range(options.channels):
            channel = grpc.aio.insecure_channel(options.target, options=CHANNEL_OPTIONS)
            await asyncio.wait_for(channel.channel_ready(), timeout=30)
            channels.append(channel)
    try:
        makers = await _factories(options, requests, channels, opened)
        tasks = [asyncio.create_task(caller(make, tally)) for make in makers]
        await asyncio.sleep(options.warmup)
        start = mark(options.server_pid)
        tally.measuring = True
        await asyncio.sleep(options.duration)
        tally.measuring = False
        end = mark(options.server_pid)
        tally.stopping = True
        _done, pending = await asyncio.wait(tasks, timeout=10)
        for task in pending:  # a caller stuck on a call the server never answers
            task.cancel()
        for task in _done:
            if task.exception() is not None:
                tally.failed(task.exception() or RuntimeError())
    finally:
        for channel in channels:
            await channel.close(grace=None)
        for client in opened:
            await client.aclose()
    return summary(options, tally, start, end)


def parse(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--target", required=True, help="unix:/path, or host:port")
    parser.add_argument("--operation", required=True, choices=OPERATIONS)
    parser.add_argument("--concurrency", type=int, default=1, help="callers in a closed loop")
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before the window")
    parser.add_argument("--server-pid", type=int, required=True, help="whose CPU and RSS to read")
    parser.add_argument(
        "--channels", type=int, default=0, help=f"default: 1 per {CALLERS_PER_CHANNEL} callers"
    )
    parser.add_argument("--transport", choices=("uds", "tcp"), help="default: from --target")
    parser.add_argument("--batch-size", type=int, default=64, help="operations per batch message")
    parser.add_argument(
        "--mix", default="consume", help=f"a batch's operation kinds, cycled: {','.join(MIX_KINDS)}"
    )
    parser.add_argument("--threads", type=int, default=1_000, help="thread labels spread over")
    parser.add_argument("--id-prefix", default="", help="request id prefix (default: pid-based)")
    args = parser.parse_args(argv)
    mix = tuple(args.mix.split(","))
    if not set(mix) <= set(MIX_KINDS):
        parser.error(f"--mix: kinds are {', '.join(MIX_KINDS)}")
    return Options(
        target=args.target,
        operation=args.operation,
        concurrency=args.concurrency,
        duration=args.duration,
        warmup=args.warmup,
        server_pid=args.server_pid,
        channels=args.channels,
        transport=args.transport or "",
        batch_size=args.batch_size,
        mix=mix,
        threads=args.threads,
        id_prefix=args.id_prefix,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse(sys.argv[1:] if argv is None else argv)
    result = uvloop.run(drive(options))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
