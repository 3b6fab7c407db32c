"""The gRPC servicers: validate what the core cannot see, translate, call the core.

Every method is a few lines: wire message -> core call (with the server clock) ->
events to the log -> wire response. Core errors become statuses in one place
(`budgetd.status`); nothing here decides budgets.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc

from budgetd import convert
from budgetd.core import BudgetError, Engine, InvalidArgument, LedgerState, LimitReached, Policy
from budgetd.core import events as ev
from budgetd.core.state import export_state, plain_done
from budgetd.event_log import Draining, EventFilter, EventLog, Gap, SubscriberTooSlow
from budgetd.logs import fields
from budgetd.status import status_of
from budgetd.v1 import budget_pb2 as pb
from budgetd.v1 import budget_pb2_grpc as rpc

DEFAULT_RESERVATION_TTL_S = 60.0
DEFAULT_RUN_TTL_S = 60.0
SUBSCRIBE_BATCH = 256
RESUME_METADATA = "budgetd-resume-after"
log = logging.getLogger("budgetd.service")
KIND_FROM_WIRE = {wire: kind for kind, wire in convert.EVENT_KIND.items()}

Request = TypeVar("Request")
Response = TypeVar("Response")
# The contract's types are checked at the message level; the context is the same for all.
Context = grpc.aio.ServicerContext[Any, Any]
Method = Callable[[Any, Request, Context], Awaitable[Response]]


@dataclass
class Runtime:
    """What both services share: the engine, the event log, the clock and the bounds
    of the transport (streams)."""

    engine: Engine
    events: EventLog
    state_dir: Path
    max_streams: int = 64
    clock: Callable[[], float] = time.time
    streams: int = 0
    snapshot_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def publish(self, events: list[ev.Event]) -> None:
        self.events.publish(events)


def unary(method: Method[Request, Response]) -> Method[Request, Response]:
    """Map core errors (and bugs) to a status; the caller never sees a traceback."""

    @functools.wraps(method)
    async def guarded(self: Any, request: Request, context: Context) -> Response:
        try:
            return await method(self, request, context)
        except Exception as error:  # every error, bugs included, becomes a status here
            code, message = status_of(error)
            await context.abort(code, message)
            raise  # unreachable: abort raises

    return guarded


class BudgetService(rpc.BudgetServiceServicer):  # type: ignore[misc]
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.engine = runtime.engine

    @unary
    async def Check(self, request: pb.CheckRequest, context: Context) -> pb.CheckResponse:
        result = self.engine.check(
            dict(request.labels),
            convert.usage(request.estimate),
            self.runtime.clock(),
            request.run_id,
        )
        return convert.check_response(result)

    @unary
    async def Reserve(self, request: pb.ReserveRequest, context: Context) -> pb.ReserveResponse:
        ttl = convert.ttl_seconds(request, "ttl", DEFAULT_RESERVATION_TTL_S)
        result, events = self.engine.reserve(
            dict(request.labels),
            convert.usage(request.estimate),
            ttl,
            request.request_id,
            self.runtime.clock(),
            request.run_id,
        )
        self.runtime.publish(events)
        return convert.reserve_response(result)

    @unary
    async def Commit(self, request: pb.CommitRequest, context: Context) -> pb.CommitResponse:
        result, events = self.engine.commit(
            request.reservation_id,
            convert.usage(request.actual),
            request.request_id,
            self.runtime.clock(),
        )
        self.runtime.publish(events)
        return convert.commit_response(result)

    @unary
    async def Release(self, request: pb.ReleaseRequest, context: Context) -> pb.ReleaseResponse:
        result, events = self.engine.release(
            request.reservation_id, request.request_id, self.runtime.clock()
        )
        self.runtime.publish(events)
        return pb.ReleaseResponse(released=result.released, replayed=result.replayed)

    @unary
    async def Consume(self, request: pb.ConsumeRequest, context: Context) -> pb.ConsumeResponse:
        return self._consume(request)

    def _consume(self, request: pb.ConsumeRequest) -> pb.ConsumeResponse:
        result, events = self.engine.consume(
            dict(request.labels),
            convert.usage(request.usage),
            request.request_id,
            self.runtime.clock(),
            request.run_id,
        )
        self.runtime.publish(events)
        return convert.consume_response(result)

    async def ConsumeStream(
        self,
        request_iterator: AsyncIterator[pb.ConsumeStreamRequest],
        context: Context,
    ) -> AsyncIterator[pb.ConsumeStreamResponse]:
        runtime = self.runtime
        if runtime.streams >= runtime.max_streams:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"server limit max_streams={runtime.max_streams} reached",
            )
        runtime.streams += 1
        try:
            async for item in request_iterator:
                yield self._stream_answer(item)
        finally:
            runtime.streams -= 1

    def _stream_answer(self, item: pb.ConsumeStreamRequest) -> pb.ConsumeStreamResponse:
        """One stream message answered exactly as Consume would, or its error."""
        try:
            if not item.HasField("request"):
                raise InvalidArgument("request", "required")
            response = self._consume(item.request)
        except Exception as error:  # a bad message gets its error; the stream goes on
            code, message = status_of(error)
            return pb.ConsumeStreamResponse(
                sequence=item.sequence,
                error=pb.StreamError(code=code.value[0], message=message),
            )
        return pb.ConsumeStreamResponse(sequence=item.sequence, response=response)

    @unary
    async def OpenRun(self, request: pb.OpenRunRequest, context: Context) -> pb.OpenRunResponse:
        ttl = convert.ttl_seconds(request, "ttl", DEFAULT_RUN_TTL_S)
        result, events = self.engine.open_run(
            dict(request.labels), request.run_id, ttl, request.request_id, self.runtime.clock()
        )
        self.runtime.publish(events)
        return convert.open_run_response(result)

    @unary
    async def Heartbeat(
        self, request: pb.HeartbeatRequest, context: Context
    ) -> pb.HeartbeatResponse:
        result, events = self.engine.heartbeat(request.run_id, self.runtime.clock())
        self.runtime.publish(events)
        response = pb.HeartbeatResponse(expires_at=convert.timestamp(result.expires_at))
        if result.deadline is not None:
            response.deadline.CopyFrom(convert.timestamp(result.deadline))
        return response

    @unary
    async def CloseRun(self, request: pb.CloseRunRequest, context: Context) -> pb.CloseRunResponse:
        result, events = self.engine.close_run(
            request.run_id, request.request_id, self.runtime.clock()
        )
        self.runtime.publish(events)
        return pb.CloseRunResponse(
            totals=convert.totals(result.totals),
            duration=convert.duration(result.duration_s),
            closed_ledgers=[convert.ledger_status(s) for s in result.closed_ledgers],
            replayed=result.replayed,
        )

    async def Subscribe(
        self, request: pb.SubscribeRequest, context: Context
    ) -> AsyncIterator[pb.SubscribeResponse]:
        events = self.runtime.events
        try:
            event_filter = _event_filter(request, self.engine)
            after = request.after_seq if request.HasField("after_seq") else None
            subscription = events.subscribe(event_filter, after)
        except Draining:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "server draining; retry later")
        except BudgetError as error:
            await context.abort(*status_of(error))
        try:
            # Where this stream starts, before any event: a client that loses the stream
            # early resumes from here instead of "from now".
            await context.send_initial_metadata(((RESUME_METADATA, str(subscription.cursor - 1)),))
            while True:
                subscription.wakeup.clear()
                try:
                    items = events.read(subscription, SUBSCRIBE_BATCH)
                except SubscriberTooSlow as error:
                    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
                for item in items:
                    event = _deliverable(item, event_filter, self.runtime.clock())
                    if event is not None:
                        yield pb.SubscribeResponse(event=event)
                if subscription.closed:
                    await context.abort(
                        grpc.StatusCode.UNAVAILABLE,
                        f"server draining; resume with after_seq={subscription.cursor - 1}",
                    )
                if not items:
                    await subscription.wakeup.wait()
        finally:
            events.unsubscribe(subscription)

    @unary
    async def GetLedger(
        self, request: pb.GetLedgerRequest, context: Context
    ) -> pb.GetLedgerResponse:
        status = self.engine.get_ledger(request.key, self.runtime.clock())
        return pb.GetLedgerResponse(ledger=convert.ledger_status(status))

    @unary
    async def ListLedgers(
        self, request: pb.ListLedgersRequest, context: Context
    ) -> pb.ListLedgersResponse:
        if request.page_size < 0:
            raise InvalidArgument("page_size", "must be >= 0 (0 = 100)")
        min_state = LedgerState.OK
        if request.min_state != pb.LEDGER_STATE_UNSPECIFIED:
            min_state = convert.enum_value(convert.STATE_FROM_WIRE, request.min_state, "min_state")
        page = self.engine.list_ledgers(
            self.runtime.clock(),
            policy=request.policy,
            selector=dict(request.selector),
            min_state=min_state,
            page_size=min(request.page_size or 100, self.engine.limits.max_page_size),
            page_token=request.page_token,
        )
        return pb.ListLedgersResponse(
            ledgers=[convert.ledger_status(s) for s in page.ledgers],
            next_page_token=page.next_page_token,
        )


def _event_filter(request: pb.SubscribeRequest, engine: Engine) -> EventFilter:
    selector = dict(request.selector)
    engine.rules.labels(selector, "selector")
    kinds: list[type[object]] = []
    for i, wire in enumerate(request.kinds):
        if wire == pb.EVENT_KIND_GAP:
            continue  # gaps are always delivered
        kinds.append(convert.enum_value(KIND_FROM_WIRE, wire, f"kinds[{i}]"))
    severity = None
    if request.min_severity != pb.SEVERITY_UNSPECIFIED:
        severity = convert.enum_value(
            convert.SEVERITY_FROM_WIRE, request.min_severity, "min_severity"
        )
    return EventFilter.of(selector, kinds, severity)


def _deliverable(
    item: tuple[int, ev.Event] | Gap, event_filter: EventFilter, now: float
) -> pb.Event | None:
    if isinstance(item, Gap):
        return convert.gap_message(item.oldest_available - 1, now, item.oldest_available)
    seq, event = item
    if not event_filter.passes(event, convert.event_labels(event)):
        return None
    try:
        return convert.event_message(seq, event)
    except Exception:  # a bug must not end every stream that reaches this event
        log.exception("event not deliverable", extra=fields(seq=seq))
        return None


class BudgetAdminService(rpc.BudgetAdminServiceServicer):  # type: ignore[misc]
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.engine = runtime.engine

    @unary
    async def PutPolicy(
        self, request: pb.PutPolicyRequest, context: Context
    ) -> pb.PutPolicyResponse:
        if not request.HasField("policy"):
            raise InvalidArgument("policy", "required")
        data = convert.policy(request.policy)
        policy = Policy.from_mapping(data, self.engine.limits, "policy")
        result, events = self.engine.put_policy(
            policy, self.runtime.clock(), request.apply_to_existing
        )
        self.runtime.publish(events)
        return pb.PutPolicyResponse(
            policy=convert.policy_message(self.engine.policy(policy.name)),
            created=result.created,
        )

    @unary
    async def DeletePolicy(
        self, request: pb.DeletePolicyRequest, context: Context
    ) -> pb.DeletePolicyResponse:
        result, events = self.engine.delete_policy(request.name, self.runtime.clock())
        self.runtime.publish(events)
        return pb.DeletePolicyResponse(closed_ledgers=len(result.closed_ledgers))

    @unary
    async def ListPolicies(
        self, request: pb.ListPoliciesRequest, context: Context
    ) -> pb.ListPoliciesResponse:
        policies = sorted(self.engine.policies, key=lambda p: p.name)
        return pb.ListPoliciesResponse(policies=[convert.policy_message(p) for p in policies])

    @unary
    async def ResetLedger(
        self, request: pb.ResetLedgerRequest, context: Context
    ) -> pb.ResetLedgerResponse:
        result, events = self.engine.reset_ledger(
            request.key, request.request_id, self.runtime.clock()
        )
        self.runtime.publish(events)
        return pb.ResetLedgerResponse(
            final=convert.ledger_status(result.final), replayed=result.replayed
        )

    @unary
    async def SetLedgerLimits(
        self, request: pb.SetLedgerLimitsRequest, context: Context
    ) -> pb.SetLedgerLimitsResponse:
        status, events = self.engine.set_ledger_limits(
            request.key, convert.caps(request.caps), self.runtime.clock()
        )
        self.runtime.publish(events)
        return pb.SetLedgerLimitsResponse(ledger=convert.ledger_status(status))

    @unary
    async def Snapshot(self, request: pb.SnapshotRequest, context: Context) -> pb.SnapshotResponse:
        runtime = self.runtime
        if runtime.snapshot_lock.locked():
            raise LimitReached("snapshots_in_progress", 1, "a snapshot is being written")
        async with runtime.snapshot_lock:
            taken_at = runtime.clock()
            sequence = runtime.events.last_seq
            # Taken in one synchronous step (consistent); the remembered answers are
            # immutable, so turning them into plain data, encoding and writing happen off
            # the loop. Ledgers are still copied on it: O(ledgers).
            state = export_state(self.engine, plain_answers=False)
            state["sequence"] = sequence
            path = runtime.state_dir / "snapshot.json"
            size = await asyncio.to_thread(_finish_and_write, path, state)
        return pb.SnapshotResponse(
            path=str(path.resolve()),
            sequence=sequence,
            size_bytes=size,
            taken_at=convert.timestamp(taken_at),
        )


def _finish_and_write(path: Path, state: dict[str, Any]) -> int:
    plain_done(state)
    return write_atomically(path, state)


def write_atomically(path: Path, data: dict[str, Any]) -> int:
    """Write `data` as JSON to `path` so a reader sees the old file or the whole new one:
    temp file in the same directory, fsync, rename, fsync the directory."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    body = json.dumps(data, separators=(",", ":")).encode()
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return len(body)
