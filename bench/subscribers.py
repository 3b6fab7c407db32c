"""Subscribe readers for the side-by-side bench: N event streams in one process of their
own, each reading every event as fast as it comes, while the load generator measures
Consume throughput with them and without.

Prints `{"ready": true}` once every stream is open (its response headers arrived),
then reads until SIGTERM or SIGINT and prints one JSON line: events each reader got, and
how many streams the daemon ended (a reader too slow for `events.subscriber_queue` is cut
off with RESOURCE_EXHAUSTED; the bench reports it rather than hiding it).

Run: python -m bench.subscribers --target unix:/path/budgetd.sock --readers 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from dataclasses import dataclass, field
from typing import Any

import grpc
import uvloop

from budgetd.v1 import budget_pb2 as pb
from budgetd.v1 import budget_pb2_grpc as rpc


@dataclass
class Reader:
    events: int = 0
    ended: str = ""  # why the daemon ended the stream, if it did


@dataclass
class Readers:
    readers: list[Reader] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "readers": len(self.readers),
            "events": [r.events for r in self.readers],
            "ended": [r.ended for r in self.readers if r.ended],
        }


async def _read(stub: rpc.BudgetServiceStub, reader: Reader, opened: asyncio.Event) -> None:
    call = stub.Subscribe(pb.SubscribeRequest())
    try:
        await call.initial_metadata()
        opened.set()
        async for _event in call:
            reader.events += 1
        reader.ended = f"{(await call.code()).name}: {await call.details()}"
    except grpc.aio.AioRpcError as error:
        opened.set()
        reader.ended = f"{error.code().name}: {error.details()}"


async def run(target: str, count: int) -> Readers:
    state = Readers([Reader() for _ in range(count)])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    # One connection per reader, as readers in separate agents or dashboards would have.
    channels = [grpc.aio.insecure_channel(target) for _ in range(count)]
    try:
        opened = [asyncio.Event() for _ in range(count)]
        tasks = [
            asyncio.create_task(_read(rpc.BudgetServiceStub(channel), reader, event))
            for channel, reader, event in zip(channels, state.readers, opened, strict=True)
        ]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in opened)), timeout=30)
        print(json.dumps({"ready": True}), flush=True)
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for channel in channels:
            await channel.close(grace=None)
    return state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--target", required=True, help="unix:/path (the owner may subscribe)")
    parser.add_argument("--readers", type=int, default=10, help="Subscribe streams")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    state = uvloop.run(run(args.target, args.readers))
    print(json.dumps(state.summary()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
