"""Everything about a call except the I/O, shared by the sync and the asyncio client.

Each operation is built as a `Call`: the request (with its one `request_id`, fixed before
the first attempt so every retry reuses it), how to turn the answer into a typed result,
and, where failing open makes sense, the answer to give when the daemon is unreachable
and `on_unavailable="allow"`. The two clients only run calls: `answer(rpc(request))`,
awaited or not.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Literal, TypeVar

from google.protobuf.message import Message

from budgetd.v1 import budget_pb2 as pb
from budgetd_client import _wire as w
from budgetd_client._held import Held, HeldReservations
from budgetd_client.buffer import OfflineBuffer, Record
from budgetd_client.enums import Decision, EventKind, LedgerState, Severity, wire_name
from budgetd_client.models import (
    CheckResult,
    CommitResult,
    ConsumeResult,
    HeartbeatResult,
    LedgerStatus,
    ReserveResult,
    Run,
    RunTotals,
    Usage,
)
from budgetd_client.retry import Backoff

log = logging.getLogger("budgetd_client")

T = TypeVar("T")
OnUnavailable = Literal["allow", "deny"]
Page = tuple[tuple[LedgerStatus, ...], str]

OFFLINE_COMMIT = CommitResult((), (), (), cost_known=False, cost_micro_usd=0, offline=True)
OFFLINE_CONSUME = ConsumeResult((), (), cost_known=False, cost_micro_usd=0, offline=True)


def new_id() -> str:
    """A request, run or offline reservation id: unique, printable, no spaces."""
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Settings:
    """A client's configuration, validated once."""

    target: str
    on_unavailable: OnUnavailable = "deny"
    timeout_s: float = 5.0
    retries: int = 3
    backoff: Backoff = field(default_factory=Backoff)

    def __post_init__(self) -> None:
        if self.on_unavailable not in ("allow", "deny"):
            raise ValueError(
                f'on_unavailable must be "allow" or "deny", not {self.on_unavailable!r}'
            )
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")

    @property
    def channel_options(self) -> list[tuple[str, Any]]:
        """gRPC waits up to 120 s between reconnection attempts by default, and fails every
        call fast meanwhile: a daemon back after a restart would look dead for minutes.
        The channel reconnects at the pace of the client's own backoff instead."""
        return [
            ("grpc.initial_reconnect_backoff_ms", max(1, int(self.backoff.initial_s * 1000))),
            ("grpc.max_reconnect_backoff_ms", max(1, int(self.backoff.max_s * 1000))),
        ]


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One operation. `request` None: answered locally (`answer(None)`), nothing is sent."""

    method: str
    request: Message | None
    answer: Callable[[Any], T]
    fail_open: Callable[[], T] | None = None


class Core:
    """Builds the calls, and keeps what failing open needs: the offline buffer and the
    reservations held."""

    def __init__(self, settings: Settings, buffer_size: int) -> None:
        self.settings = settings
        self.buffer = OfflineBuffer(buffer_size)
        self.held = HeldReservations()

    @property
    def fails_open(self) -> bool:
        return self.settings.on_unavailable == "allow"

    def check(self, labels: Mapping[str, str], estimate: Usage, run_id: str) -> Call[CheckResult]:
        request = pb.CheckRequest(labels=labels, estimate=w.usage_message(estimate), run_id=run_id)
        offline = CheckResult(Decision.allow, (), (), (), False, 0, offline=True)
        return Call("Check", request, w.check_result, lambda: offline)

    def reserve(
        self, labels: Mapping[str, str], estimate: Usage, ttl_s: float | None, run_id: str
    ) -> Call[ReserveResult]:
        request = pb.ReserveRequest(
            request_id=new_id(), labels=labels, estimate=w.usage_message(estimate), run_id=run_id
        )
        if ttl_s is not None:
            request.ttl.CopyFrom(w.duration(ttl_s))

        def answer(message: pb.ReserveResponse) -> ReserveResult:
            result = w.reserve_result(message)
            self.held.add(result.reservation_id, Held(dict(labels), estimate, run_id, False))
            return result

        def fail_open() -> ReserveResult:
            result = ReserveResult(
                f"offline-{new_id()}", Decision.allow, None, (), (), False, 0, offline=True
            )
            self.held.add(result.reservation_id, Held(dict(labels), estimate, run_id, True))
            return result

        return Call("Reserve", request, answer, fail_open)

    def commit(self, reservation_id: str, actual: Usage) -> Call[CommitResult]:
        request_id = new_id()
        held = self.held.get(reservation_id)
        if held is not None and held.offline:
            # Nothing is held on the server: the usage goes to the buffer as a Consume.
            return Call(
                "Commit",
                None,
                lambda _: self._buffer_commit(reservation_id, held, actual, request_id, False),
            )
        request = pb.CommitRequest(
            request_id=request_id, reservation_id=reservation_id, actual=w.usage_message(actual)
        )

        def answer(message: pb.CommitResponse) -> CommitResult:
            self.held.pop(reservation_id)
            return w.commit_result(message)

        fail_open = None
        if held is not None:
            # The same request_id: if the Commit did get through, the replayed Consume is
            # refused as ALREADY_EXISTS and the usage is counted once.
            def fail_open() -> CommitResult:
                return self._buffer_commit(reservation_id, held, actual, request_id, True)

        return Call("Commit", request, answer, fail_open)

    def _buffer_commit(
        self, reservation_id: str, held: Held, actual: Usage, request_id: str, release: bool
    ) -> CommitResult:
        self.held.pop(reservation_id)
        usage = replace(
            actual,
            model=actual.model or held.estimate.model,
            provider=actual.provider or held.estimate.provider,
        )
        request = pb.ConsumeRequest(
            request_id=request_id,
            labels=held.labels,
            usage=w.usage_message(usage),
            run_id=held.run_id,
        )
        if release:  # a hold may still be on the server: drop it after the replay
            self.buffer.add(Record(request, release_id=reservation_id, release_request_id=new_id()))
        else:
            self.buffer.add(Record(request))
        return OFFLINE_COMMIT

    def release(self, reservation_id: str) -> Call[bool]:
        held = self.held.get(reservation_id)
        if held is not None and held.offline:

            def forget(_: None) -> bool:
                self.held.pop(reservation_id)
                return False  # nothing was held on the server

            return Call("Release", None, forget)
        request = pb.ReleaseRequest(request_id=new_id(), reservation_id=reservation_id)

        def answer(message: pb.ReleaseResponse) -> bool:
            self.held.pop(reservation_id)
            return message.released

        def fail_open() -> bool:
            self.held.pop(reservation_id)
            log.warning(
                "budgetd_client: could not release %s, the daemon is unreachable;"
                " the hold ends at its ttl",
                reservation_id,
            )
            return False

        return Call("Release", request, answer, fail_open)

    def consume(self, labels: Mapping[str, str], usage: Usage, run_id: str) -> Call[ConsumeResult]:
        request = pb.ConsumeRequest(
            request_id=new_id(), labels=labels, usage=w.usage_message(usage), run_id=run_id
        )

        def fail_open() -> ConsumeResult:
            self.buffer.add(Record(request))
            return OFFLINE_CONSUME

        return Call("Consume", request, w.consume_result, fail_open)

    def open_run(
        self, labels: Mapping[str, str], run_id: str | None, ttl_s: float | None
    ) -> Call[Run]:
        run = new_id() if run_id is None else run_id
        request = pb.OpenRunRequest(request_id=new_id(), labels=labels, run_id=run)
        if ttl_s is not None:
            request.ttl.CopyFrom(w.duration(ttl_s))
        offline = Run(run, Decision.allow, None, None, (), (), offline=True)
        return Call("OpenRun", request, lambda m: w.run(run, m), lambda: offline)

    def heartbeat(self, run_id: str) -> Call[HeartbeatResult]:
        return Call("Heartbeat", pb.HeartbeatRequest(run_id=run_id), w.heartbeat_result)

    def close_run(self, run_id: str) -> Call[RunTotals]:
        request = pb.CloseRunRequest(request_id=new_id(), run_id=run_id)
        return Call("CloseRun", request, lambda m: w.run_totals(run_id, m))

    def get_ledger(self, key: str) -> Call[LedgerStatus]:
        return Call("GetLedger", pb.GetLedgerRequest(key=key), lambda m: w.ledger_status(m.ledger))

    def list_page(
        self,
        policy: str,
        selector: Mapping[str, str] | None,
        min_state: LedgerState | None,
        page_token: str,
    ) -> Call[Page]:
        request = pb.ListLedgersRequest(
            policy=policy,
            selector=selector or {},
            min_state=wire_name(min_state) if min_state is not None else None,
            page_token=page_token,
        )
        return Call(
            "ListLedgers",
            request,
            lambda m: (tuple(w.ledger_status(s) for s in m.ledgers), m.next_page_token),
        )


def release_request(record: Record) -> pb.ReleaseRequest:
    """The Release that follows a replayed commit: its request_id was fixed when the
    record was buffered, so replaying twice cannot matter."""
    return pb.ReleaseRequest(request_id=record.release_request_id, reservation_id=record.release_id)


def subscribe_request(
    selector: Mapping[str, str] | None,
    kinds: Iterable[EventKind],
    min_severity: Severity | None,
    after_seq: int | None,
) -> pb.SubscribeRequest:
    request = pb.SubscribeRequest(
        selector=selector or {},
        kinds=[wire_name(kind) for kind in kinds],
        min_severity=wire_name(min_severity) if min_severity is not None else None,
    )
    if after_seq is not None:
        request.after_seq = after_seq
    return request
