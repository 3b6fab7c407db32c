"""Everything about a call except the I/O, shared by the sync and the asyncio client.

Each operation is built as a `Call`: the request (with its one `request_id`, fixed before
the first attempt so every retry reuses it; the caller may choose it), how to turn the
answer into a typed result, the answer to give when the daemon is unreachable and
`on_unavailable="allow"`, and what to do instead when the daemon answers NOT_FOUND for
something it forgot (a restart). The two clients only run calls: `answer(rpc(request))`,
awaited or not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

from budgetd_client import _validate as v
from budgetd_client import _wire as w
from budgetd_client._call import (
    Call,
    local_not_found,
    new_id,
    not_sent,
    request_id_of,
    tagged,
)
from budgetd_client._held import Held, HeldReservations, LocalRuns
from budgetd_client._settings import OnUnavailable, Settings
from budgetd_client.buffer import OfflineBuffer, Orphan, Orphans, Record
from budgetd_client.enums import Decision, EventKind, LedgerState, Severity, wire_name
from budgetd_client.errors import BudgetdUnavailable, InvalidRequest, NotFound
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
from budgetd_client.v1 import budget_pb2 as pb

__all__ = ["Call", "Core", "OnUnavailable", "Settings", "new_id", "not_sent", "subscribe_request"]

log = logging.getLogger("budgetd_client")

T = TypeVar("T")
Page = tuple[tuple[LedgerStatus, ...], str]

OFFLINE_COMMIT = CommitResult((), (), (), cost_known=False, cost_micro_usd=0, offline=True)
OFFLINE_CONSUME = ConsumeResult((), (), cost_known=False, cost_micro_usd=0, offline=True)


class Core:
    """Builds the calls, and keeps what failing open needs: the offline buffer, the
    grants to undo, the reservations held and the runs the daemon does not know."""

    def __init__(self, settings: Settings, buffer_size: int) -> None:
        self.settings = settings
        self.buffer = OfflineBuffer(buffer_size)
        self.orphans = Orphans(buffer_size)
        self.held = HeldReservations()
        self.runs = LocalRuns()

    @property
    def fails_open(self) -> bool:
        return self.settings.fails_open

    @property
    def pending(self) -> bool:
        """Something to replay: buffered usage or grants to undo."""
        return bool(len(self.buffer) or len(self.orphans))

    # --- model calls ---------------------------------------------------------------------

    def check(self, labels: Mapping[str, str], estimate: Usage, run_id: str) -> Call[CheckResult]:
        labels = v.labels(labels)
        estimate = v.usage(estimate, "estimate")
        sent_run = self.runs.on_server(v.identifier(run_id, "run_id"))
        request = pb.CheckRequest(
            labels=labels, estimate=w.usage_message(estimate), run_id=sent_run
        )
        offline = CheckResult(Decision.allow, (), (), (), False, 0, offline=True)
        again = self._without_run(sent_run, lambda: self.check(labels, estimate, ""))
        return Call("Check", request, w.check_result, lambda _: offline, again)

    def reserve(
        self,
        labels: Mapping[str, str],
        estimate: Usage,
        ttl_s: float | None,
        run_id: str,
        request_id: str | None,
    ) -> Call[ReserveResult]:
        rid = request_id_of(request_id)
        with tagged(rid):
            labels = v.labels(labels)
            estimate = v.usage(estimate, "estimate")
            sent_run = self.runs.on_server(v.identifier(run_id, "run_id"))
        request = pb.ReserveRequest(
            request_id=rid, labels=labels, estimate=w.usage_message(estimate), run_id=sent_run
        )
        if ttl_s is not None:
            request.ttl.CopyFrom(w.duration(ttl_s))

        def answer(message: pb.ReserveResponse) -> ReserveResult:
            result = w.reserve_result(message)
            self.held.add(result.reservation_id, Held(labels, estimate, sent_run, False))
            return result

        def fail_open(error: BudgetdUnavailable) -> ReserveResult:
            if error.attempts:  # it may have reached the daemon: undo it once it is back
                self.orphans.add(Orphan(request, new_id()))
            result = ReserveResult(
                f"offline-{new_id()}", Decision.allow, None, (), (), False, 0, offline=True
            )
            self.held.add(result.reservation_id, Held(labels, estimate, sent_run, True))
            return result

        # A run the daemon does not know: the same reservation, without the run.
        again = self._without_run(sent_run, lambda: self.reserve(labels, estimate, ttl_s, "", rid))
        return Call("Reserve", request, answer, fail_open, again, rid)

    def commit(
        self, reservation_id: str, actual: Usage, request_id: str | None
    ) -> Call[CommitResult]:
        rid = request_id_of(request_id)
        with tagged(rid):
            v.identifier(reservation_id, "reservation_id")
            actual = v.usage(actual, "actual")
        held = self.held.get(reservation_id)
        if held is not None and held.offline:
            # Nothing is held on the server: the usage goes to the buffer as a Consume.
            return Call(
                "Commit",
                None,
                lambda _: self._buffer_commit(reservation_id, held, actual, rid, False),
                request_id=rid,
            )
        request = pb.CommitRequest(
            request_id=rid, reservation_id=reservation_id, actual=w.usage_message(actual)
        )

        def answer(message: pb.CommitResponse) -> CommitResult:
            self.held.pop(reservation_id)
            return w.commit_result(message)

        if held is None:
            return Call("Commit", request, answer, request_id=rid)

        # The same request_id: if the Commit did get through, the replayed Consume is
        # refused as ALREADY_EXISTS and the usage is counted once.
        def fail_open(_: BudgetdUnavailable) -> CommitResult:
            return self._buffer_commit(reservation_id, held, actual, rid, True)

        def recover(error: NotFound) -> Call[CommitResult] | None:
            self.held.pop(reservation_id)
            if not self.fails_open:
                return None
            log.warning(
                "budgetd_client: the daemon does not know reservation %s (%s); its usage is"
                " recorded with a Consume instead (request_id %s)",
                reservation_id,
                error,
                rid,
            )
            return self._commit_as_consume(held, actual, rid)

        return Call("Commit", request, answer, fail_open, recover, rid)

    def _usage_of(self, held: Held, actual: Usage, request_id: str) -> pb.ConsumeRequest:
        """A commit's usage as a Consume: the estimate's model and provider apply."""
        usage = replace(
            actual,
            model=actual.model or held.estimate.model,
            provider=actual.provider or held.estimate.provider,
        )
        return pb.ConsumeRequest(
            request_id=request_id,
            labels=held.labels,
            usage=w.usage_message(usage),
            run_id=self.runs.on_server(held.run_id),
        )

    def _buffer_commit(
        self, reservation_id: str, held: Held, actual: Usage, request_id: str, release: bool
    ) -> CommitResult:
        self.held.pop(reservation_id)
        request = self._usage_of(held, actual, request_id)
        if release:  # a hold may still be on the server: drop it after the replay
            self.buffer.add(Record(request, release_id=reservation_id, release_request_id=new_id()))
        else:
            self.buffer.add(Record(request))
        return OFFLINE_COMMIT

    def _commit_as_consume(self, held: Held, actual: Usage, request_id: str) -> Call[CommitResult]:
        request = self._usage_of(held, actual, request_id)

        def answer(message: pb.ConsumeResponse) -> CommitResult:
            r = w.consume_result(message)
            return CommitResult(
                r.ledgers, r.crossings, (), r.cost_known, r.cost_micro_usd, replayed=r.replayed
            )

        def fail_open(_: BudgetdUnavailable) -> CommitResult:
            self.buffer.add(Record(request))
            return OFFLINE_COMMIT

        return Call("Consume", request, answer, fail_open, request_id=request_id)

    def release(self, reservation_id: str, request_id: str | None) -> Call[bool]:
        rid = request_id_of(request_id)
        with tagged(rid):
            v.identifier(reservation_id, "reservation_id")
        held = self.held.get(reservation_id)
        if held is not None and held.offline:

            def forget(_: None) -> bool:
                self.held.pop(reservation_id)
                return False  # nothing was held on the server

            return Call("Release", None, forget, request_id=rid)
        request = pb.ReleaseRequest(request_id=rid, reservation_id=reservation_id)

        def answer(message: pb.ReleaseResponse) -> bool:
            self.held.pop(reservation_id)
            return message.released

        def fail_open(_: BudgetdUnavailable) -> bool:
            self.held.pop(reservation_id)
            log.warning(
                "budgetd_client: could not release %s, the daemon is unreachable;"
                " the hold ends at its ttl",
                reservation_id,
            )
            return False

        def recover(_: NotFound) -> Call[bool] | None:
            known = self.held.pop(reservation_id) is not None
            if not (known and self.fails_open):
                return None
            # Forgotten by the daemon (a restart): nothing is held there any more.
            return Call("Release", None, lambda _: False, request_id=rid)

        return Call("Release", request, answer, fail_open, recover, rid)

    def consume(
        self, labels: Mapping[str, str], usage: Usage, run_id: str, request_id: str | None
    ) -> Call[ConsumeResult]:
        rid = request_id_of(request_id)
        with tagged(rid):
            labels = v.labels(labels)
            usage = v.usage(usage, "usage")
            sent_run = self.runs.on_server(v.identifier(run_id, "run_id"))
        request = pb.ConsumeRequest(
            request_id=rid, labels=labels, usage=w.usage_message(usage), run_id=sent_run
        )

        def fail_open(_: BudgetdUnavailable) -> ConsumeResult:
            self.buffer.add(Record(request))
            return OFFLINE_CONSUME

        return Call("Consume", request, w.consume_result, fail_open, request_id=rid)

    # --- runs ----------------------------------------------------------------------------

    def open_run(
        self,
        labels: Mapping[str, str],
        run_id: str | None,
        ttl_s: float | None,
        request_id: str | None,
    ) -> Call[Run]:
        rid = request_id_of(request_id)
        with tagged(rid):
            labels = v.labels(labels)
            run = new_id() if run_id is None else v.identifier(run_id, "run_id")
        request = pb.OpenRunRequest(request_id=rid, labels=labels, run_id=run)
        if ttl_s is not None:
            request.ttl.CopyFrom(w.duration(ttl_s))

        def answer(message: pb.OpenRunResponse) -> Run:
            result = w.run(run, message)
            self.runs.opened(run)
            return result

        def fail_open(error: BudgetdUnavailable) -> Run:
            self.runs.opened_offline(run)
            if error.attempts:  # it may have reached the daemon: close it once it is back
                self.orphans.add(Orphan(request, new_id()))
            return Run(run, Decision.allow, None, None, (), (), offline=True)

        return Call("OpenRun", request, answer, fail_open, request_id=rid)

    def heartbeat(self, run_id: str) -> Call[HeartbeatResult]:
        v.identifier(run_id, "run_id")
        if self.runs.is_offline(run_id):
            return Call("Heartbeat", None, local_not_found(_offline_run(run_id)), replay=False)
        return Call(
            "Heartbeat",
            pb.HeartbeatRequest(run_id=run_id),
            w.heartbeat_result,
            recover=self._forget_run(run_id),
            replay=False,
        )

    def close_run(self, run_id: str, request_id: str | None) -> Call[RunTotals]:
        rid = request_id_of(request_id)
        with tagged(rid):
            v.identifier(run_id, "run_id")
        if self.runs.is_offline(run_id):
            return Call("CloseRun", None, local_not_found(_offline_run(run_id)), request_id=rid)
        request = pb.CloseRunRequest(request_id=rid, run_id=run_id)
        return Call(
            "CloseRun",
            request,
            lambda m: w.run_totals(run_id, m),
            recover=self._forget_run(run_id),
            request_id=rid,
        )

    def _forget_run(self, run_id: str) -> Callable[[NotFound], Call[Any] | None]:
        def recover(error: NotFound) -> None:
            self.runs.forgotten(run_id, error)

        return recover

    def _without_run(
        self, run_id: str, again: Callable[[], Call[T]]
    ) -> Callable[[NotFound], Call[T] | None] | None:
        """NOT_FOUND for a call naming a run (only the run can be unknown): the run is
        forgotten and the call made again without it."""
        if not run_id:
            return None

        def recover(error: NotFound) -> Call[T]:
            self.runs.forgotten(run_id, error)
            return again()

        return recover

    # --- observation ---------------------------------------------------------------------

    def get_ledger(self, key: str) -> Call[LedgerStatus]:
        request = pb.GetLedgerRequest(key=v.identifier(key, "key"))
        return Call("GetLedger", request, lambda m: w.ledger_status(m.ledger))

    def list_page(
        self,
        policy: str,
        selector: Mapping[str, str] | None,
        min_state: LedgerState | None,
        page_token: str,
    ) -> Call[Page]:
        request = pb.ListLedgersRequest(
            policy=v.identifier(policy, "policy"),
            selector=v.labels(selector, "selector"),
            min_state=wire_name(min_state) if min_state is not None else None,
            page_token=page_token,
        )
        return Call(
            "ListLedgers",
            request,
            lambda m: (tuple(w.ledger_status(s) for s in m.ledgers), m.next_page_token),
        )


def _offline_run(run_id: str) -> str:
    return f"run {run_id} was opened offline: the daemon does not know it"


def subscribe_request(
    selector: Mapping[str, str] | None,
    kinds: Iterable[EventKind],
    min_severity: Severity | None,
    after_seq: int | None,
) -> pb.SubscribeRequest:
    kinds = list(kinds)
    for i, kind in enumerate(kinds):
        if not isinstance(kind, EventKind) or kind is EventKind.unknown:
            raise InvalidRequest(f"kinds[{i}]: not an EventKind this client can ask for: {kind!r}")
    request = pb.SubscribeRequest(
        selector=v.labels(selector, "selector"),
        kinds=[wire_name(kind) for kind in kinds],
        min_severity=wire_name(min_severity) if min_severity is not None else None,
    )
    if after_seq is not None:
        request.after_seq = after_seq
    return request
