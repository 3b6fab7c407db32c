"""Batch and BatchStream: many operations in one message, each exactly as its own RPC.

A batch is submitted in one synchronous step: every operation goes through the same
submit function its own RPC uses (validation, scope, the runtime's one mutation path),
so the records of the whole batch reach the journal before its writer next runs and
share one write and one fsync. The answer then waits once for that write; an operation
that failed (bad input, another tenant's labels, a limit, the journal) gets its own
error result and the others stand.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from budgetd import wire
from budgetd.auth.caller import caller_of
from budgetd.core import InvalidArgument
from budgetd.errors import PermissionDenied
from budgetd.runtime import Runtime
from budgetd.status import status_of
from budgetd.v1 import budget_pb2 as pb

DEFAULT_MAX_OPERATIONS = 256
# BatchStream messages applied ahead of their answers: a bounded number of operations
# in flight per stream (at most this many batches), sharing fsyncs as ConsumeStream does.
STREAM_WINDOW = 8

Durable = Awaitable[None] | None
Submit = Callable[[Any], tuple[Any, Durable]]
Answer = Callable[[Any], bytes]  # a result -> its serialized response (budgetd.wire)


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of operation a batch may carry: its RPC's own submit and answer."""

    name: str  # the BatchOperation / BatchResult oneof field
    submit: Submit
    answer: Answer
    labeled: bool  # its request's labels are held to a scoped caller's scope


# One submitted operation: its kind, result, what to await, or the error it ended with.
_Entry = tuple[Kind | None, Any, Durable, "Placed | None"]


class Placed(Exception):
    """An operation's error and where in the batch the operation was."""

    def __init__(self, error: Exception, where: str) -> None:
        super().__init__(error, where)
        self.error = error
        self.where = where

    def status(self) -> tuple[int, str]:
        """The code and message its own RPC would end with, the message naming the
        operation's place: `operations[3].consume.usage.input_tokens: must be >= 0`."""
        code, message = status_of(self.error)
        if isinstance(self.error, PermissionDenied):
            return code.value[0], message  # already names operations[i]...labels
        separator = "." if isinstance(self.error, InvalidArgument) else ": "
        return code.value[0], f"{self.where}{separator}{message}"


class Batches:
    """Carries out batches for the BudgetService (which hands it the kinds)."""

    def __init__(self, runtime: Runtime, kinds: Mapping[str, Kind]) -> None:
        self.runtime = runtime
        self.kinds = dict(kinds)

    def submit(self, batch: pb.BatchRequest) -> list[_Entry]:
        """Apply every operation of `batch` now, in order (InvalidArgument for the
        whole batch when it holds none or too many)."""
        operations = batch.operations
        most = self.runtime.max_batch_operations
        if not 0 < len(operations) <= most:
            raise InvalidArgument(
                "operations",
                f"must hold 1..{most} operations (server.max_batch_operations); "
                f"got {len(operations)}",
            )
        scoped = bool(caller_of().scope_items)
        return [self._submit_one(i, op, scoped) for i, op in enumerate(operations)]

    def _submit_one(self, index: int, operation: pb.BatchOperation, scoped: bool) -> _Entry:
        name = operation.WhichOneof("operation")
        kind = self.kinds.get(name) if name is not None else None
        if kind is None:
            missing = InvalidArgument(
                "operation", "one of check, reserve, commit, release, consume is required"
            )
            return None, None, None, Placed(missing, f"operations[{index}]")
        try:
            request = getattr(operation, kind.name)
            if scoped and kind.labeled:
                caller_of().require_inside(
                    request.labels, f"operations[{index}].{kind.name}.labels"
                )
            result, durable = kind.submit(request)
        except Exception as error:  # this operation fails; the batch goes on
            return kind, None, None, Placed(error, f"operations[{index}].{kind.name}")
        return kind, result, durable, None

    async def answer(self, entries: list[_Entry]) -> bytes:
        """The serialized BatchResponse, results in order, once every record of the
        batch is durable."""
        failures: dict[int, Exception | None] = {}  # by the id of the awaited future
        results: list[bytes] = []
        for kind, result, durable, refused in entries:
            error = refused
            if error is None and durable is not None:
                failure = await self._durable(durable, failures)
                if failure is not None:
                    assert kind is not None
                    error = Placed(failure, f"operations[{len(results)}].{kind.name}")
            if error is not None:
                results.append(wire.batch_error(*error.status()))
            else:
                assert kind is not None
                results.append(wire.batch_result(kind.name, kind.answer(result)))
        return wire.batch_response(results)

    async def _durable(
        self, durable: Awaitable[None], failures: dict[int, Exception | None]
    ) -> Exception | None:
        """Wait for one record (a batch's records share one future: waited on once)."""
        key = id(durable)
        if key not in failures:
            try:
                await self.runtime.until_durable(durable)
                failures[key] = None
            except Exception as failure:  # not durable: these operations fail
                failures[key] = failure
        return failures[key]

    async def stream(self, requests: AsyncIterator[pb.BatchStreamRequest]) -> AsyncIterator[bytes]:
        """BatchStream: each message submitted as it arrives, answered (serialized
        BatchStreamResponse) in order once durable; at most STREAM_WINDOW batches wait
        for their answers."""
        answers: asyncio.Queue[tuple[int, list[_Entry] | None, Exception | None] | None]
        answers = asyncio.Queue(STREAM_WINDOW)
        reader = asyncio.create_task(self._read(requests, answers))
        try:
            while (pending := await answers.get()) is not None:
                sequence, entries, error = pending
                if entries is not None:
                    yield wire.stream_answer(sequence, await self.answer(entries))
                else:
                    assert error is not None
                    code, message = status_of(error)
                    yield wire.stream_error_answer(sequence, code.value[0], message)
            await reader  # re-raises what ended the request stream, if anything
        finally:
            reader.cancel()

    async def _read(
        self,
        requests: AsyncIterator[pb.BatchStreamRequest],
        answers: asyncio.Queue[tuple[int, list[_Entry] | None, Exception | None] | None],
    ) -> None:
        try:
            async for item in requests:
                try:
                    entries = self.submit(item.batch)
                except Exception as error:  # the whole batch is refused; the stream goes on
                    await answers.put((item.sequence, None, error))
                    continue
                await answers.put((item.sequence, entries, None))
        finally:
            await answers.put(None)
