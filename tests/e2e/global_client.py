"""A client process for the global-policy tests: load on one sidecar, every answer logged.

`python -m tests.e2e.global_client TARGET SEED CLIENT OPS LOG MODE [UNTIL]` runs up to
OPS operations (and, given UNTIL, until that unix time) for user `u<CLIENT>` of tenant
`t`, each with its own request_id, retried
with the same request_id while the sidecar is away (killed, restarting), so every
operation is answered once in the end. MODE:

- `tokens`: Reserve an estimate then Commit exactly it, or Check an amount then Consume
  it when allowed (the two ways an agent asks first); stops early once denied
  DENIED_IN_A_ROW times in a row (the cap is spent);
- `runs`: OpenRun, hold it a moment, CloseRun; each open run's interval is logged as
  [answer received, close sent] on the machine's monotonic clock, a span during which
  it was surely open on its sidecar.

Each answer is one JSON line in LOG, flushed before the next operation: the client's
own record of what was acknowledged.
"""

from __future__ import annotations

import functools
import json
import random
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO, TypeVar

import grpc

from budgetd.v1 import budget_pb2 as pb
from budgetd.v1 import budget_pb2_grpc as rpc

T = TypeVar("T")
RETRY_S = 0.02
RETRIABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
DENIED_IN_A_ROW = 40
DENIED_PAUSE_S = 0.02  # after a denial: the leaser's next round may bring a slice


def answered(call: Callable[[], T]) -> T:
    """`call()` until it answers; only transport trouble is retried."""
    pause = threading.Event()
    while True:
        try:
            return call()
        except grpc.RpcError as error:
            if error.code() not in RETRIABLE:
                raise
        pause.wait(RETRY_S)


class Client:
    def __init__(self, target: str, seed: int, client: int, log: TextIO) -> None:
        options = [
            ("grpc.initial_reconnect_backoff_ms", 20),
            ("grpc.min_reconnect_backoff_ms", 20),
            ("grpc.max_reconnect_backoff_ms", 100),
        ]
        self.stub = rpc.BudgetServiceStub(grpc.insecure_channel(target, options=options))
        self.rng = random.Random(seed * 1000 + client)
        self.labels = {"tenant": "t", "user": f"u{client}"}
        self.prefix = f"s{seed}-c{client}"
        self.log = log
        self.count = 0
        self.pause = threading.Event()

    def rid(self, what: str) -> str:
        self.count += 1
        return f"{self.prefix}-{self.count}-{what}"

    def note(self, **record: Any) -> None:
        self.log.write(json.dumps(record) + "\n")
        self.log.flush()

    def reserve_commit(self, tokens: int) -> bool:
        request = pb.ReserveRequest(
            request_id=self.rid("reserve"),
            labels=self.labels,
            estimate=pb.Usage(input_tokens=tokens),
        )
        held = answered(lambda: self.stub.Reserve(request, timeout=5))
        if held.decision == pb.DECISION_DENY:
            return False
        commit = pb.CommitRequest(
            request_id=self.rid("commit"),
            reservation_id=held.reservation_id,
            actual=pb.Usage(input_tokens=tokens),
        )
        answered(lambda: self.stub.Commit(commit, timeout=5))
        self.note(op="commit", rid=commit.request_id, tokens=tokens)
        return True

    def check_consume(self, tokens: int) -> bool:
        check = pb.CheckRequest(labels=self.labels, estimate=pb.Usage(input_tokens=tokens))
        if answered(lambda: self.stub.Check(check, timeout=5)).decision == pb.DECISION_DENY:
            return False
        consume = pb.ConsumeRequest(
            request_id=self.rid("consume"),
            labels=self.labels,
            usage=pb.Usage(input_tokens=tokens),
        )
        answered(lambda: self.stub.Consume(consume, timeout=5))
        self.note(op="consume", rid=consume.request_id, tokens=tokens)
        return True

    def tokens(self, ops: int, end: float) -> None:
        denied = 0
        for _ in range(ops):
            if time.time() >= end:
                return
            tokens = self.rng.randint(1, 200)
            ask = self.reserve_commit if self.rng.random() < 0.5 else self.check_consume
            if ask(tokens):
                denied = 0
                continue
            denied += 1
            self.note(op="denied", rid="", tokens=0)
            if denied >= DENIED_IN_A_ROW:
                return
            self.pause.wait(DENIED_PAUSE_S)

    def runs(self, ops: int, end: float) -> None:
        for _ in range(ops):
            if time.time() >= end:
                return
            run_id = f"{self.prefix}-run-{self.count}"
            opened = pb.OpenRunRequest(
                request_id=self.rid("open"), labels=self.labels, run_id=run_id
            )
            answer = answered(functools.partial(self.stub.OpenRun, opened, timeout=5))
            if answer.decision == pb.DECISION_DENY:
                self.note(op="run-denied", rid=opened.request_id)
                self.pause.wait(DENIED_PAUSE_S)
                continue
            since = time.monotonic()
            self.pause.wait(self.rng.random() * 0.03)
            close = pb.CloseRunRequest(request_id=self.rid("close"), run_id=run_id)
            closing = time.monotonic()
            answered(functools.partial(self.stub.CloseRun, close, timeout=5))
            self.note(op="run", rid=opened.request_id, since=since, until=closing)


def main(argv: list[str]) -> int:
    target, seed, client, ops, log_path, mode, *rest = argv
    end = float(rest[0]) if rest else float("inf")
    with open(log_path, "a", encoding="utf-8") as log:
        worker = Client(target, int(seed), int(client), log)
        (worker.tokens if mode == "tokens" else worker.runs)(int(ops), end)
        worker.note(op="done", rid="", tokens=0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
