"""A client process for the crash tests: mixed mutations, retried until answered.

`python -m tests.e2e.load_client TARGET SEED CLIENT OPS LOG` runs OPS operations chosen
by SEED — consume, reserve then commit or release, open a run / consume in it / close
it — for user `u<CLIENT>`, each with its own request_id. A call that fails (the daemon
was killed, is restarting, is refusing) is retried with the same request_id until it is
answered, so every operation is acknowledged exactly once in the end. Each answer is
appended to LOG as one JSON line, flushed, before the next operation starts: the log is
the client's own record of what the daemon acknowledged.
"""

from __future__ import annotations

import json
import random
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO, TypeVar

import grpc

from budgetd.v1 import budget_pb2 as pb
from budgetd.v1 import budget_pb2_grpc as rpc

T = TypeVar("T")
RETRY_S = 0.02
RETRIABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


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


class Worker:
    def __init__(self, target: str, seed: int, client: int, log: TextIO) -> None:
        # Reconnect at once when the daemon is back (the default backoff is seconds).
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

    def rid(self, what: str) -> str:
        self.count += 1
        return f"{self.prefix}-{self.count}-{what}"

    def note(self, **record: Any) -> None:
        self.log.write(json.dumps(record) + "\n")
        self.log.flush()

    def consume(self, run_id: str = "") -> None:
        tokens = self.rng.randint(1, 300)
        request = pb.ConsumeRequest(
            request_id=self.rid("consume"),
            labels=self.labels,
            usage=pb.Usage(input_tokens=tokens),
            run_id=run_id,
        )
        answered(lambda: self.stub.Consume(request, timeout=5))
        self.note(op="consume", rid=request.request_id, tokens=tokens)

    def reserve(self) -> None:
        estimate = self.rng.randint(100, 2000)
        request = pb.ReserveRequest(
            request_id=self.rid("reserve"),
            labels=self.labels,
            estimate=pb.Usage(input_tokens=estimate),
        )
        held = answered(lambda: self.stub.Reserve(request, timeout=5))
        if held.decision == pb.DECISION_DENY:
            self.note(op="denied", rid=request.request_id, tokens=0)
            return
        if self.rng.random() < 0.3:
            release = pb.ReleaseRequest(
                request_id=self.rid("release"), reservation_id=held.reservation_id
            )
            answered(lambda: self.stub.Release(release, timeout=5))
            self.note(op="release", rid=release.request_id, tokens=0)
            return
        actual = self.rng.randint(1, estimate)  # within the hold: the hard cap holds
        commit = pb.CommitRequest(
            request_id=self.rid("commit"),
            reservation_id=held.reservation_id,
            actual=pb.Usage(input_tokens=actual),
        )
        answered(lambda: self.stub.Commit(commit, timeout=5))
        self.note(op="commit", rid=commit.request_id, tokens=actual)

    def run(self) -> None:
        run_id = f"{self.prefix}-run-{self.count}"
        opened = pb.OpenRunRequest(request_id=self.rid("open"), labels=self.labels, run_id=run_id)
        answer = answered(lambda: self.stub.OpenRun(opened, timeout=5))
        if answer.decision == pb.DECISION_DENY:
            self.note(op="run-denied", rid=opened.request_id, tokens=0)
            return
        self.note(op="open", rid=opened.request_id, tokens=0)
        self.consume(run_id)
        close = pb.CloseRunRequest(request_id=self.rid("close"), run_id=run_id)
        answered(lambda: self.stub.CloseRun(close, timeout=5))
        self.note(op="close", rid=close.request_id, tokens=0)

    def one(self) -> None:
        choice = self.rng.random()
        if choice < 0.45:
            self.consume()
        elif choice < 0.85:
            self.reserve()
        else:
            self.run()


def main(argv: list[str]) -> int:
    target, seed, client, ops, log_path = argv
    with open(log_path, "a", encoding="utf-8") as log:
        worker = Worker(target, int(seed), int(client), log)
        for _ in range(int(ops)):
            worker.one()
        worker.note(op="done", rid="", tokens=0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
