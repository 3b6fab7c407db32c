"""The gRPC servicers: validate what the core cannot see, translate, call the runtime.

Every method is a few lines: wire message -> `Runtime.apply` (a mutation: clock, core,
journal, events) or `Runtime.reader` (a read) -> wire response. Errors become statuses
in one place (`budgetd.status`); nothing here decides budgets.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

import grpc

from budgetd import __version__, convert, wire
from budgetd.auth.caller import Caller, caller_of
from budgetd.batch import Batches, Durable, Kind
from budgetd.core import (
    COMPILED,
    BudgetError,
    Decision,
    Engine,
    InvalidArgument,
    LedgerState,
    NotFound,
    Policy,
)
from budgetd.core import events as ev
from budgetd.core.engine import FROM_FILE, uncommittable, waits_for_lease
from budgetd.core.results import RunInfo
from budgetd.errors import Unavailable
from budgetd.event_log import Draining, EventFilter, Gap, SubscriberTooSlow, stopped_reading
from budgetd.logs import fields
from budgetd.runtime import Runtime
from budgetd.status import status_of
from budgetd.v1 import budget_pb2 as pb
from budgetd.v1 import budget_pb2_grpc as rpc

MAX_MODEL_BYTES = 256  # as Usage.model

DEFAULT_RESERVATION_TTL_S = 60.0
DEFAULT_RUN_TTL_S = 60.0
SUBSCRIBE_BATCH = 256
# ConsumeStream messages applied ahead of their answers (their records share fsyncs).
STREAM_WINDOW = 256
RESUME_METADATA = "budgetd-resume-after"
log = logging.getLogger("budgetd.service")
KIND_FROM_WIRE = {wire: kind for kind, wire in convert.EVENT_KIND.items()}

Request = TypeVar("Request")
Response = TypeVar("Response")
# The contract's types are checked at the message level; the context is the same for all.
Context = grpc.aio.ServicerContext[Any, Any]
Method = Callable[[Any, Request, Context], Awaitable[Response]]


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
        self.encoded = wire.EncodedEvents()  # what Subscribe sends, once per event
        # Each operation a batch may carry, through the same submit as its own RPC.
        self.batches = Batches(
            runtime,
            {
                "check": Kind("check", self._submit_batch_check, wire.check, True),
                "reserve": Kind("reserve", self._submit_reserve, wire.reserve, True),
                "commit": Kind("commit", self._submit_commit, wire.commit, False),
                "release": Kind("release", self._submit_release, wire.release, False),
                "consume": Kind("consume", self._submit_consume, wire.consume, True),
            },
        )

    @unary
    async def Check(self, request: pb.CheckRequest, context: Context) -> bytes:
        result, _ = self._submit_check(request)
        wait = self._lease_wait(result)
        if wait is not None:
            await self.runtime.apply("open_global", {"labels": self._check_subject(request)})
            if await wait():
                result, _ = self._submit_check(request)
        return wire.check(result)

    def _check_subject(self, request: pb.CheckRequest) -> Mapping[str, str]:
        """What a Check's global ledgers are opened with: a read opens nothing, and the
        leaser leases only for open ledgers."""
        estimate = convert.usage(request.estimate, "estimate")
        return Engine.subject_of(convert.labels(request.labels), estimate)

    def _submit_batch_check(self, request: pb.CheckRequest) -> tuple[Any, Durable]:
        """A Check in a batch: answered from what is leased now (a batch waits for no
        lease), opening the global ledgers an empty lease denied it on, so that the
        leaser leases for them and a later Check finds them leased."""
        result, _ = self._submit_check(request)
        if self._lease_wait(result) is None:
            return result, None
        # Not awaited: the record counts nothing (lost in a crash, the next Check opens
        # the ledgers again), and the leaser's next round (sync_interval) leases for it.
        try:
            _, durable = self.runtime.submit(
                "open_global", {"labels": self._check_subject(request)}
            )
        except (BudgetError, Unavailable):  # (a limit, a drain): the answer stands as is
            return result, None
        if durable is not None:  # (its failure is the journal's to report, not this one's)
            durable.add_done_callback(lambda done: done.cancelled() or done.exception())
        return result, None

    def _lease_wait(self, result: Any) -> Callable[[], Awaitable[bool]] | None:
        """The leaser's wait when only an empty lease denied `result` (the first call on
        a global ledger, the first after its window rolled), else None. The wait answers
        whether a round of leases finished in it (or found Redis out of reach): only
        then is the call judged again."""
        wait = self.runtime.lease_wait
        if wait is None or result.decision is not Decision.DENY:
            return None
        return wait if waits_for_lease(result.blockers) else None

    def _submit_check(self, request: pb.CheckRequest) -> tuple[Any, None]:
        if request.run_id:
            self._own_run(request.run_id)
        labels = convert.labels(request.labels)
        estimate = convert.usage(request.estimate, "estimate")
        result = self.runtime.check(labels, estimate, request.run_id)
        return result, None

    @unary
    async def Reserve(self, request: pb.ReserveRequest, context: Context) -> bytes:
        result = await self._answered(self._submit_reserve(request))
        wait = self._lease_wait(result)
        # (A denial a lease alone caused is not remembered: judged again.)
        if wait is not None and await wait():
            result = await self._answered(self._submit_reserve(request))
        return wire.reserve(result)

    def _submit_reserve(self, request: pb.ReserveRequest) -> tuple[Any, Durable]:
        ttl = convert.ttl_seconds(request, "ttl", DEFAULT_RESERVATION_TTL_S)
        if request.run_id:
            self._own_run(request.run_id)
        return self.runtime.submit(
            "reserve",
            {
                "labels": convert.labels(request.labels),
                "estimate": convert.usage(request.estimate, "estimate"),
                "ttl_s": ttl,
                "request_id": request.request_id,
                "run_id": request.run_id,
            },
        )

    @unary
    async def Commit(self, request: pb.CommitRequest, context: Context) -> bytes:
        return wire.commit(await self._answered(self._submit_commit(request)))

    def _submit_commit(self, request: pb.CommitRequest) -> tuple[Any, Durable]:
        self._own_reservation(request.reservation_id, uncommittable)
        return self.runtime.submit(
            "commit",
            {
                "reservation_id": request.reservation_id,
                "actual": convert.usage(request.actual, "actual"),
                "request_id": request.request_id,
            },
        )

    @unary
    async def Release(self, request: pb.ReleaseRequest, context: Context) -> bytes:
        return wire.release(await self._answered(self._submit_release(request)))

    def _submit_release(self, request: pb.ReleaseRequest) -> tuple[Any, Durable]:
        self._own_reservation(request.reservation_id, lambda rid: NotFound("reservation", rid))
        return self.runtime.submit(
            "release",
            {"reservation_id": request.reservation_id, "request_id": request.request_id},
        )

    @unary
    async def Consume(self, request: pb.ConsumeRequest, context: Context) -> bytes:
        return wire.consume(await self._answered(self._submit_consume(request)))

    async def _answered(self, submitted: tuple[Any, Durable]) -> Any:
        """A submitted mutation's result, once it counts."""
        result, durable = submitted
        if durable is not None:
            await self.runtime.until_durable(durable)  # shared by a batch: see there
        return result

    def _submit_consume(self, request: pb.ConsumeRequest) -> tuple[Any, Durable]:
        run_id = request.run_id
        if run_id and not self._sees_run(run_id):
            # Usage naming a run that is not open is recorded all the same, attributed to
            # no run: so is usage naming another tenant's run (it stays out of its totals).
            run_id = ""
        return self.runtime.submit(
            "consume",
            {
                "labels": convert.labels(request.labels),
                "usage": convert.usage(request.usage),
                "request_id": request.request_id,
                "run_id": run_id,
            },
        )

    @unary
    async def Batch(self, request: pb.BatchRequest, context: Context) -> bytes:
        return await self.batches.answer(self.batches.submit(request))

    async def BatchStream(
        self,
        request_iterator: AsyncIterator[pb.BatchStreamRequest],
        context: Context,
    ) -> AsyncIterator[bytes]:
        runtime = self.runtime
        if runtime.streams >= runtime.max_streams:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"server limit max_streams={runtime.max_streams} reached",
            )
        runtime.streams += 1
        try:
            async for answer in self.batches.stream(request_iterator):
                yield answer
        finally:
            runtime.streams -= 1

    async def ConsumeStream(
        self,
        request_iterator: AsyncIterator[pb.ConsumeStreamRequest],
        context: Context,
    ) -> AsyncIterator[bytes]:
        runtime = self.runtime
        if runtime.streams >= runtime.max_streams:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"server limit max_streams={runtime.max_streams} reached",
            )
        runtime.streams += 1
        # Messages are applied as they arrive and answered, in order, once durable: a
        # bounded window of answers waits, so their records share fsyncs.
        answers: asyncio.Queue[_Pending | None] = asyncio.Queue(STREAM_WINDOW)
        reader = asyncio.create_task(self._stream_reader(request_iterator, answers))
        try:
            while (pending := await answers.get()) is not None:
                yield await _stream_answer(runtime, *pending)
            await reader  # re-raises what ended the request stream, if anything
        finally:
            reader.cancel()
            runtime.streams -= 1

    async def _stream_reader(
        self,
        request_iterator: AsyncIterator[pb.ConsumeStreamRequest],
        answers: asyncio.Queue[_Pending | None],
    ) -> None:
        try:
            async for item in request_iterator:
                await answers.put(self._stream_submit(item))
        finally:
            await answers.put(None)

    def _stream_submit(self, item: pb.ConsumeStreamRequest) -> _Pending:
        """One stream message submitted exactly as Consume would be, or its error."""
        try:
            if not item.HasField("request"):
                raise InvalidArgument("request", "required")
            result, durable = self._submit_consume(item.request)
        except Exception as error:  # a bad message gets its error; the stream goes on
            return item.sequence, None, None, error
        return item.sequence, result, durable, None

    @unary
    async def OpenRun(self, request: pb.OpenRunRequest, context: Context) -> pb.OpenRunResponse:
        ttl = convert.ttl_seconds(request, "ttl", DEFAULT_RUN_TTL_S)
        args = {
            "labels": convert.labels(request.labels),
            "run_id": request.run_id,
            "ttl_s": ttl,
            "request_id": request.request_id,
        }
        result = await self.runtime.apply("open_run", args)
        wait = self._lease_wait(result)
        if wait is not None and await wait():
            result = await self.runtime.apply("open_run", args)
        return convert.open_run_response(result)

    @unary
    async def Heartbeat(
        self, request: pb.HeartbeatRequest, context: Context
    ) -> pb.HeartbeatResponse:
        self._own_run(request.run_id)
        result = await self.runtime.apply("heartbeat", {"run_id": request.run_id})
        response = pb.HeartbeatResponse(expires_at=convert.timestamp(result.expires_at))
        if result.deadline is not None:
            response.deadline.CopyFrom(convert.timestamp(result.deadline))
        return response

    @unary
    async def CloseRun(self, request: pb.CloseRunRequest, context: Context) -> pb.CloseRunResponse:
        self._own_run(request.run_id)
        result = await self.runtime.apply(
            "close_run", {"run_id": request.run_id, "request_id": request.request_id}
        )
        return pb.CloseRunResponse(
            totals=convert.totals(result.totals),
            duration=convert.duration(result.duration_s),
            closed_ledgers=[convert.ledger_status(s) for s in result.closed_ledgers],
            replayed=result.replayed,
        )

    def _own_reservation(self, reservation_id: str, missing: Callable[[str], NotFound]) -> None:
        """A scoped caller's reservation must carry labels inside its scope: another
        tenant's answers exactly like a missing one (`missing`: the core's own error for
        an id that holds nothing, which differs between Commit and Release)."""
        caller = caller_of()
        if caller.scope_items:
            labels = self.runtime.reader().reservation_labels(reservation_id)
            if labels is not None and not caller.sees(labels):
                raise missing(reservation_id)

    def _own_run(self, run_id: str) -> None:
        """As `_own_reservation`, for a run, open or remembered as ended (spending into
        it, or ending it): another tenant's answers as an id never seen ("not found",
        no hint of how or when it ended)."""
        if not self._sees_run(run_id):
            raise NotFound("run", run_id)

    def _sees_run(self, run_id: str) -> bool:
        caller = caller_of()
        if not caller.scope_items:
            return True
        labels = self.runtime.reader().run_labels(run_id)
        return labels is None or caller.sees(labels)

    async def Subscribe(self, request: pb.SubscribeRequest, context: Context) -> None:
        """Writes with `context.write` rather than yielding, so that each send is bounded
        (`EventLog.send_timeout_s`): a client that stops reading blocks a send for ever
        (its flow-control window stays full), and with no new event the lag check would
        never run again to end the stream and free its slots."""
        events = self.runtime.events
        try:
            event_filter = _event_filter(request, self.runtime.reader(), caller_of())
            after = request.after_seq if request.HasField("after_seq") else None
            subscription = events.subscribe(event_filter, after)
        except Draining:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "server draining; retry later")
        except BudgetError as error:
            await context.abort(*status_of(error))
        sender = _Sender(context, events.send_timeout_s, subscription.cursor - 1, self.encoded)
        try:
            # Where this stream starts, before any event: a client that loses the stream
            # early resumes from here instead of "from now".
            await sender.start(((RESUME_METADATA, str(sender.delivered)),))
            while True:
                subscription.wakeup.clear()
                try:
                    items = events.read(subscription, SUBSCRIBE_BATCH)
                except SubscriberTooSlow as error:
                    log.warning(
                        "subscriber cut off: too slow",
                        extra=fields(peer=context.peer(), resume_after=subscription.cursor - 1),
                    )
                    await sender.end(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
                    return
                now = self.runtime.clock()
                for item in items:
                    await sender.send(item, event_filter, now)
                if subscription.closed:
                    await sender.end(
                        grpc.StatusCode.UNAVAILABLE,
                        f"server draining; resume with after_seq={subscription.cursor - 1}",
                    )
                    return
                if not items:
                    await subscription.wakeup.wait()
        except _StoppedReading:
            events.unsubscribe(subscription)  # now: the status below may wait for the client
            log.warning(
                "subscriber cut off: stopped reading",
                extra=fields(
                    peer=context.peer(),
                    resume_after=sender.delivered,
                    send_timeout_s=events.send_timeout_s,
                ),
            )
            if not sender.started:
                # Not even the initial metadata went out, and gRPC cannot send a status
                # without sending it again: the call is dropped as a cancelled one is
                # (what gRPC keeps of it goes with the connection).
                raise asyncio.CancelledError() from None
            message = stopped_reading(sender.delivered, events.send_timeout_s)
            await sender.end(grpc.StatusCode.RESOURCE_EXHAUSTED, message)
        finally:
            events.unsubscribe(subscription)

    @unary
    async def GetLedger(
        self, request: pb.GetLedgerRequest, context: Context
    ) -> pb.GetLedgerResponse:
        status = self.runtime.reader().get_ledger(request.key, self.runtime.clock())
        if not caller_of().sees(status.labels):  # answered exactly as a missing ledger
            raise NotFound("ledger", request.key)
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
        engine = self.runtime.reader()
        selector = _narrowed(request.selector, engine)
        if selector is None:
            return pb.ListLedgersResponse()
        page = engine.list_ledgers(
            self.runtime.clock(),
            policy=request.policy,
            selector=selector,
            min_state=min_state,
            page_size=min(request.page_size or 100, engine.limits.max_page_size),
            page_token=request.page_token,
        )
        return pb.ListLedgersResponse(
            ledgers=[convert.ledger_status(s) for s in page.ledgers],
            next_page_token=page.next_page_token,
        )

    @unary
    async def ListRuns(self, request: pb.ListRunsRequest, context: Context) -> pb.ListRunsResponse:
        if request.page_size < 0:
            raise InvalidArgument("page_size", "must be >= 0 (0 = 100)")
        engine = self.runtime.reader()
        selector = _narrowed(request.selector, engine)
        if selector is None:
            return pb.ListRunsResponse()
        cursors = self.runtime.page_cursors
        page = engine.list_runs(
            selector=selector,
            page_size=min(request.page_size or 100, engine.limits.max_page_size),
            page_token=cursors.position(request.page_token),
        )
        token = page.next_page_token
        if token and not self._sees_run(token):
            token = cursors.hide(token)  # where the scan stopped is another tenant's run
        return pb.ListRunsResponse(
            runs=[_run_status(run) for run in page.runs], next_page_token=token
        )

    @unary
    async def GetPrice(self, request: pb.GetPriceRequest, context: Context) -> pb.GetPriceResponse:
        prices = self.runtime.reader().prices
        if not request.model:
            return pb.GetPriceResponse(table=[convert.model_price(e) for e in prices.entries()])
        if len(request.model.encode("utf-8", "surrogatepass")) > MAX_MODEL_BYTES:
            raise InvalidArgument("model", f"at most {MAX_MODEL_BYTES} UTF-8 bytes")
        return convert.price_match(prices.explain(request.model))


def _narrowed(selector: Mapping[str, str], engine: Engine) -> dict[str, str] | None:
    """A list's selector held to the caller's scope; None (after the selector's own
    rules are checked) when it asks for another tenant: nothing this caller may see."""
    narrowed = caller_of().narrow(selector)
    if narrowed is None:
        engine.rules.labels(dict(selector), "selector")
    return narrowed


def _run_status(run: RunInfo) -> pb.RunStatus:
    status = pb.RunStatus(
        run_id=run.run_id,
        labels=run.labels,
        opened_at=convert.timestamp(run.opened_at),
        last_heartbeat=convert.timestamp(run.last_heartbeat),
        expires_at=convert.timestamp(run.expires_at),
        totals=convert.totals(run.totals),
    )
    if run.deadline is not None:
        status.deadline.CopyFrom(convert.timestamp(run.deadline))
    return status


def _event_filter(request: pb.SubscribeRequest, engine: Engine, caller: Caller) -> EventFilter:
    """The subscription's filter; for a scoped caller, narrowed to its scope and without
    policy changes (a policy names other tenants' labels)."""
    engine.rules.labels(dict(request.selector), "selector")
    selector = caller.narrow(request.selector)
    kinds: list[type[object]] = []
    for i, number in enumerate(request.kinds):
        if number == pb.EVENT_KIND_GAP:
            continue  # gaps are always delivered
        kinds.append(convert.enum_value(KIND_FROM_WIRE, number, f"kinds[{i}]"))
    if caller.scope_items:
        kinds = [kind for kind in kinds or KIND_FROM_WIRE.values() if kind is not ev.PolicyChanged]
        if not kinds:  # asked for policy changes only: empty would mean every kind
            kinds = [_NoEvent]
        if selector is None:  # another tenant's: a filter no event passes
            selector, kinds = {}, [_NoEvent]
    severity = None
    if request.min_severity != pb.SEVERITY_UNSPECIFIED:
        severity = convert.enum_value(
            convert.SEVERITY_FROM_WIRE, request.min_severity, "min_severity"
        )
    return EventFilter.of(selector or {}, kinds, severity)


class _NoEvent:
    """A kind no event is: the filter of a subscription that selects nothing."""


def _deliverable(
    item: tuple[int, ev.Event] | Gap,
    event_filter: EventFilter,
    now: float,
    encoded: wire.EncodedEvents,
) -> bytes | None:
    """The serialized SubscribeResponse for this subscriber, or None (filtered out)."""
    if isinstance(item, Gap):
        gap = convert.gap_message(item.oldest_available - 1, now, item.oldest_available)
        return pb.SubscribeResponse(event=gap).SerializeToString()
    seq, event = item
    try:
        labels, data = encoded.of(seq, event)
    except Exception:  # a bug must not end every stream that reaches this event
        log.exception("event not deliverable", extra=fields(seq=seq))
        return None
    return data if event_filter.passes(event, labels) else None


class _StoppedReading(Exception):
    """A send to a subscriber waited its whole `send_timeout_s`."""


# How long the status that ends a stream may take to go out. One the client can take
# goes at once; one queued behind a message a stuck client never took stays queued in
# gRPC (it goes if the client reads again) and the handler returns without it.
STATUS_WAIT_S = 1.0


class _Sender:
    """One subscriber's sends, each bounded by `timeout_s`, and the last seq delivered
    (what the subscriber resumes after when it is cut off)."""

    __slots__ = ("context", "delivered", "encoded", "started", "timeout_s")

    def __init__(
        self, context: Context, timeout_s: float, delivered: int, encoded: wire.EncodedEvents
    ) -> None:
        self.context = context
        self.encoded = encoded  # shared by every subscriber: each event serialized once
        self.timeout_s = timeout_s
        self.delivered = delivered
        self.started = False  # the initial metadata went out

    async def start(self, metadata: tuple[tuple[str, str], ...]) -> None:
        await self.bounded(self.context.send_initial_metadata(metadata))
        self.started = True

    async def send(
        self, item: tuple[int, ev.Event] | Gap, event_filter: EventFilter, now: float
    ) -> None:
        data = _deliverable(item, event_filter, now, self.encoded)
        if data is not None:
            await self.bounded(self.context.write(data))
        # A filtered-out event counts as delivered: resuming past it loses nothing.
        self.delivered = item.oldest_available - 1 if isinstance(item, Gap) else item[0]

    async def bounded(self, sending: Awaitable[None]) -> None:
        """`sending`, or `_StoppedReading` once it has waited `timeout_s`. The message
        stays queued in gRPC: a client that reads again may still get it (before the
        status, and again after resuming; its seq tells the two apart)."""
        try:
            async with asyncio.timeout(self.timeout_s):
                await sending
        except TimeoutError:
            raise _StoppedReading() from None

    async def end(self, code: grpc.StatusCode, message: str) -> None:
        """End the stream with `code`; returns (without raising) only when the status
        could not go out within STATUS_WAIT_S. The handler then just returns: gRPC
        finds the abort already made and ends the call quietly."""
        try:
            async with asyncio.timeout(min(self.timeout_s, STATUS_WAIT_S)):
                await self.context.abort(code, message)
        except TimeoutError:
            return


# A ConsumeStream message in flight: its sequence, result, what to await, or its error.
_Pending = tuple[int, Any, Awaitable[None] | None, Exception | None]


async def _stream_answer(
    runtime: Runtime,
    sequence: int,
    result: Any,
    durable: Awaitable[None] | None,
    error: Exception | None,
) -> bytes:
    """A serialized ConsumeStreamResponse."""
    if error is None and durable is not None:
        try:  # through the runtime: cut at the end of a drain's grace, it is UNAVAILABLE
            await runtime.until_durable(durable)
        except Exception as failure:  # not durable: this message fails, the stream goes on
            error = failure
    if error is not None:
        code, message = status_of(error)
        return wire.stream_error_answer(sequence, code.value[0], message)
    return wire.stream_answer(sequence, wire.consume(result))


def _policy_visible(policy: Policy, caller: Caller) -> bool:
    """A scoped caller sees the policies that can apply inside its scope: none whose
    match names another value of a scoped label (what `narrow` refuses)."""
    return not caller.scope_items or caller.narrow(dict(policy.match)) is not None


class BudgetAdminService(rpc.BudgetAdminServiceServicer):  # type: ignore[misc]
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @unary
    async def PutPolicy(
        self, request: pb.PutPolicyRequest, context: Context
    ) -> pb.PutPolicyResponse:
        if not request.HasField("policy"):
            raise InvalidArgument("policy", "required")
        engine = self.runtime.reader()
        policy = Policy.from_mapping(convert.policy(request.policy), engine.limits, "policy")
        before = engine.policies_by_name().get(policy.name)
        if request.validate_only:
            wanted = engine.validated_policy(policy)
            return pb.PutPolicyResponse(
                policy=convert.policy_message(wanted),
                created=before is None,
                changed=before != wanted,
            )
        result = await self.runtime.apply(
            "put_policy",
            {"policy": policy, "apply_to_existing": request.apply_to_existing, "origin": "api"},
        )
        stored = self.runtime.engine.policy(policy.name)
        return pb.PutPolicyResponse(
            policy=convert.policy_message(stored), created=result.created, changed=before != stored
        )

    @unary
    async def DeletePolicy(
        self, request: pb.DeletePolicyRequest, context: Context
    ) -> pb.DeletePolicyResponse:
        result = await self.runtime.apply("delete_policy", {"name": request.name})
        return pb.DeletePolicyResponse(closed_ledgers=len(result.closed_ledgers))

    @unary
    async def ListPolicies(
        self, request: pb.ListPoliciesRequest, context: Context
    ) -> pb.ListPoliciesResponse:
        engine = self.runtime.reader()
        caller = caller_of()
        policies = sorted(
            (p for p in engine.policies if _policy_visible(p, caller)), key=lambda p: p.name
        )
        return pb.ListPoliciesResponse(
            policies=[convert.policy_message(p) for p in policies],
            config_file_policies=[p.name for p in policies if engine.origin(p.name) == FROM_FILE],
        )

    @unary
    async def GetServerInfo(
        self, request: pb.GetServerInfoRequest, context: Context
    ) -> pb.GetServerInfoResponse:
        runtime = self.runtime
        engine, store = runtime.engine, runtime.store
        limits = engine.limits
        return pb.GetServerInfoResponse(
            version=__version__,
            started_at=convert.timestamp(runtime.started_at),
            listeners=runtime.listeners,
            durability=runtime.mode.value,
            state_dir=str(store.state.path) if store is not None else "",
            core_compiled=COMPILED,
            ledgers=engine.ledger_count,
            reservations=engine.reservation_count,
            runs=engine.run_count,
            subscribers=runtime.events.subscriber_count,
            policies=len(engine.policies),
            last_event_seq=runtime.events.last_seq,
            journal_lsn=runtime.lsn,
            snapshot_lsn=store.snapshot_lsn if store is not None else 0,
            pid=os.getpid(),
            idempotency_window=convert.duration(engine.idempotency_window(runtime.clock())),
            remembered_requests=engine.remembered_requests,
            remembered_requests_max=limits.idempotency_max_entries,
            remembered_request_bytes=engine.remembered_request_bytes,
            remembered_request_bytes_max=limits.idempotency_max_bytes,
            idempotency_max_age=convert.duration(limits.idempotency_max_age_s),
            label_bytes=engine.label_bytes,
            label_bytes_max=limits.max_label_bytes,
            max_batch_operations=runtime.max_batch_operations,
            gc_collections=runtime.collector.collections,
            longest_gc_pause=convert.duration(runtime.collector.longest_pause_s),
            global_info=self._global_info(),
        )

    def _global_info(self) -> pb.GlobalInfo | None:
        status = self.runtime.link_status
        if status is None:
            return None
        link, shares = status(), self.runtime.engine.shares
        return pb.GlobalInfo(
            redis=link.redis,
            sidecar_id=link.sidecar_id,
            reachable=link.reachable,
            redis_calls=link.redis_calls,
            shares=len(shares.live),
            closing_shares=len(shares.closing),
            closing_shares_dropped=shares.dropped,
        )

    @unary
    async def ResetLedger(
        self, request: pb.ResetLedgerRequest, context: Context
    ) -> pb.ResetLedgerResponse:
        result = await self.runtime.apply(
            "reset_ledger", {"key": request.key, "request_id": request.request_id}
        )
        return pb.ResetLedgerResponse(
            final=convert.ledger_status(result.final), replayed=result.replayed
        )

    @unary
    async def SetLedgerLimits(
        self, request: pb.SetLedgerLimitsRequest, context: Context
    ) -> pb.SetLedgerLimitsResponse:
        status = await self.runtime.apply(
            "set_ledger_limits", {"key": request.key, "caps": convert.caps(request.caps)}
        )
        return pb.SetLedgerLimitsResponse(ledger=convert.ledger_status(status))

    @unary
    async def Snapshot(self, request: pb.SnapshotRequest, context: Context) -> pb.SnapshotResponse:
        written = await self.runtime.snapshot()
        return pb.SnapshotResponse(
            path=str(written.path.resolve()),
            sequence=written.seq,
            size_bytes=written.size_bytes,
            taken_at=convert.timestamp(written.taken_at),
        )
