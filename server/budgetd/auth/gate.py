"""The gate: every RPC handler is wrapped once, when the services are registered.

No interceptor runs per call. `Registrar` stands in for the server while the generated
`add_*_to_server` functions register their handlers, and replaces each handler by a
wrapped one:

- every deserializer: wrapped so that request bytes that do not decode answer
  INVALID_ARGUMENT, not UNKNOWN (`budgetd.auth.decoding`);
- a unary method on a server without identities (the owner-only socket), or of an open
  service (health, reflection): only that check;
- a unary method on the gated server: who the caller is (`Identities.of`), whether its
  role allows the method, its rate, its label scope (for requests with labels), then
  the servicer with the caller set for `caller_of`;
- a streaming method, on any server: the same checks where gated, then the stream
  bounds (per connection and in total, apart from unary calls).

Refusals name the rule that failed: UNAUTHENTICATED when the caller proved nothing,
PERMISSION_DENIED when its role or scope does not allow the call, RESOURCE_EXHAUSTED for
a rate (with a retry hint) or a stream bound.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from budgetd.auth import methods
from budgetd.auth.caller import Caller, Rate, Role, set_caller
from budgetd.auth.decoding import UNDECODABLE_LOG, RequestUndecodable, Undecodable, tolerant
from budgetd.auth.ratelimit import RateLimiter
from budgetd.auth.streams import StreamBounds
from budgetd.auth.tls import CertificateRoles
from budgetd.auth.tokens import EMPTY, TokenTable
from budgetd.auth.unix_proxy import UnixProxy
from budgetd.errors import PermissionDenied
from budgetd.v1.budget_pb2 import BatchStreamRequest
from budgetd.wire import passthrough

if TYPE_CHECKING:  # generic in the stubs only
    Handler = grpc.RpcMethodHandler[Any, Any]
    GenericHandler = grpc.GenericRpcHandler[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
    GenericHandler = grpc.GenericRpcHandler

Context = grpc.aio.ServicerContext[Any, Any]
# Trailing metadata of a rate-limited call: how long to wait before retrying. The first
# is gRPC's own retry pushback (honoured by a retry policy that retries
# RESOURCE_EXHAUSTED); the second is the same number under a name no library reserves.
PUSHBACK_METADATA = "grpc-retry-pushback-ms"
RETRY_AFTER_METADATA = "retry-after-ms"

NO_CREDENTIALS = "no credentials"
UNKNOWN_CONNECTION = Caller(
    "this Unix connection", None, "its peer credentials are unknown; reconnect",
    authenticated=False,
)  # fmt: skip
BAD_TOKEN = Caller(
    "the bearer token", None, "no token file lists its sha256 (auth.token_files)",
    authenticated=False,
)  # fmt: skip
MALFORMED = Caller(
    "the authorization metadata", None, "must be 'Bearer <token>'", authenticated=False
)


def anonymous_tcp(role: Role | None, rate: Rate | None = None) -> Caller:
    """The caller of a TCP call without a token or a client certificate."""
    if role is None:
        return Caller(
            NO_CREDENTIALS,
            None,
            "a TCP call needs 'authorization: Bearer <token>' (auth.token_files) or a "
            'client certificate (auth.certificates); auth.anonymous_tcp = "none"',
            authenticated=False,
        )
    if role is Role.ADMIN:
        rate = None  # admins are never limited
    # One identity for every anonymous caller: one bucket for all of them.
    return Caller("an anonymous TCP caller", role, "auth.anonymous_tcp", (), rate, key="anon")


@dataclass(slots=True)
class Identities:
    """Who the callers of the gated server are: relayed Unix connections by their relay
    address, TCP calls by bearer token, else client certificate, else anonymous."""

    anonymous: Caller
    tokens: TokenTable = EMPTY  # replaced whole on SIGHUP
    certificates: CertificateRoles | None = None
    proxy: UnixProxy | None = None

    def of(self, context: Context) -> Caller:
        peer = context.peer()
        if peer.startswith("unix"):  # a relayed connection ("unix-abstract:...")
            proxy = self.proxy
            found = proxy.callers.get(peer) if proxy is not None else None
            return found or UNKNOWN_CONNECTION
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                if not isinstance(value, str) or value[:7].lower() != "bearer ":
                    return MALFORMED
                return self.tokens.lookup(value[7:].strip()) or BAD_TOKEN
        certificates = self.certificates
        if certificates is not None:
            identities = context.peer_identities()
            if identities:
                return certificates.caller(identities) or certificates.unmapped(identities)
        return self.anonymous


class Gate:
    """Wraps handlers: identities (None: every caller is the daemon's own user, only
    streams are bounded), rates and stream bounds."""

    def __init__(
        self,
        identities: Identities | None,
        bounds: StreamBounds,
        limiter: RateLimiter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.identities = identities
        self.bounds = bounds
        self.limiter = limiter or RateLimiter()
        self.clock = clock

    def wrap(self, method: str, handler: Handler) -> Handler:
        kinds = (handler.request_streaming, handler.response_streaming)
        gated = self.identities is not None and not methods.is_open(method)
        common = {
            "request_deserializer": tolerant(method, handler.request_deserializer),
            # A handler may answer with its response already serialized (budgetd.wire).
            "response_serializer": passthrough(handler.response_serializer),
        }
        if kinds == (False, False):
            unary = self._unary if gated else _decoded_unary
            return grpc.unary_unary_rpc_method_handler(unary(method, handler.unary_unary), **common)
        if kinds == (False, True):
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, handler.unary_stream, gated, False), **common
            )
        if kinds == (True, True):
            return grpc.stream_stream_rpc_method_handler(
                self._stream(method, handler.stream_stream, gated, True), **common
            )
        return grpc.stream_unary_rpc_method_handler(
            self._stream_unary(method, handler.stream_unary, gated), **common
        )

    async def admit(
        self, method: str, allowed: frozenset[Role], context: Context, cost: int = 1
    ) -> Caller:
        """The caller if it may make this call now (`cost`: requests it counts as);
        else the call is aborted."""
        assert self.identities is not None
        caller = self.identities.of(context)
        if caller.role not in allowed:
            await _refuse(context, caller, method, allowed)
        if caller.rate is not None:
            wait = self.limiter.take(caller.key, caller.rate, self.clock(), cost)
            if wait:
                await _rate_limited(context, caller, wait)
        return caller

    def _unary(self, method: str, inner: Any) -> Any:
        allowed = methods.roles_for(method)
        labeled = method in methods.LABELED
        batch = method == methods.BATCH
        admit = self.admit

        async def call(request: Any, context: Context) -> Any:
            if request.__class__ is Undecodable:
                await _undecodable(context, request)
            cost = max(1, len(request.operations)) if batch else 1
            caller = await admit(method, allowed, context, cost)
            if labeled and caller.scope_items:
                violation = caller.scope_violation(request.labels)
                if violation is not None:
                    await context.abort(grpc.StatusCode.PERMISSION_DENIED, violation)
            set_caller(caller)
            return await inner(request, context)

        return call

    async def _open_stream(
        self, method: str, allowed: frozenset[Role], gated: bool, context: Context
    ) -> tuple[Caller | None, str]:
        """A new stream's caller (None: not gated) and its connection, counted; or the
        call is aborted (by its role, its rate or a stream bound)."""
        caller = await self.admit(method, allowed, context) if gated else None
        peer = context.peer()
        refusal = self.bounds.open(peer)
        if refusal is not None:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
        if caller is not None:
            set_caller(caller)
        return caller, peer

    def _stream(self, method: str, inner: Any, gated: bool, streaming_requests: bool) -> Any:
        allowed = methods.roles_for(method)
        checks_messages = method in (methods.CONSUME_STREAM, methods.BATCH_STREAM)
        bounds = self.bounds

        async def call(argument: Any, context: Context) -> AsyncIterator[Any]:
            if argument.__class__ is Undecodable:
                await _undecodable(context, argument)
            caller, peer = await self._open_stream(method, allowed, gated, context)
            try:
                if checks_messages and caller and (caller.scope_items or caller.rate):
                    argument = self._messages(argument, caller)
                elif streaming_requests:
                    argument = _decoded_messages(argument)
                result = inner(argument, context)
                if hasattr(result, "__aiter__"):
                    async for item in result:
                        yield item
                else:  # a handler that writes with context.write (health Watch)
                    await result
            except PermissionDenied as denied:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(denied))
            except RequestUndecodable as undecodable:
                await _undecodable(context, undecodable.args[0])
            finally:
                bounds.close(peer)

        return call

    def _stream_unary(self, method: str, inner: Any, gated: bool) -> Any:
        """No such RPC in the contract today; gated and bounded like the others."""
        allowed = methods.roles_for(method)
        bounds = self.bounds

        async def call(requests: Any, context: Context) -> Any:
            _, peer = await self._open_stream(method, allowed, gated, context)
            try:
                return await inner(requests, context)
            finally:
                bounds.close(peer)

        return call

    async def _messages(self, requests: AsyncIterator[Any], caller: Caller) -> AsyncIterator[Any]:
        """ConsumeStream and BatchStream messages held to the caller's scope and rate: a
        ConsumeStream message outside the scope ends the stream (after the answers to
        those before it; a batch's operations get an error result each instead); a
        message over the rate waits for the bucket (the stream is flow-controlled: it
        slows down rather than failing). A batch costs its number of operations."""
        rate, limiter = caller.rate, self.limiter
        async for item in requests:
            if item.__class__ is Undecodable:
                raise RequestUndecodable(item)
            cost = 1
            if isinstance(item, BatchStreamRequest):
                # Scope is held per operation by the batch itself (an error result each).
                cost = max(1, len(item.batch.operations))
            elif caller.scope_items and item.HasField("request"):
                violation = caller.scope_violation(item.request.labels, "request.labels")
                if violation is not None:
                    raise PermissionDenied(violation)
            if rate is not None:
                while wait := limiter.take(caller.key, rate, self.clock(), cost):
                    await asyncio.sleep(wait)
            yield item


def _decoded_unary(method: str, inner: Any) -> Any:
    """An ungated unary method: only the check that its request decoded."""
    del method

    async def call(request: Any, context: Context) -> Any:
        if request.__class__ is Undecodable:
            await _undecodable(context, request)
        return await inner(request, context)

    return call


async def _decoded_messages(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A request stream that ends with RequestUndecodable at a message that does not
    decode (it has no sequence to answer it by: the stream ends)."""
    async for item in requests:
        if item.__class__ is Undecodable:
            raise RequestUndecodable(item)
        yield item


async def _undecodable(context: Context, request: Undecodable) -> None:
    UNDECODABLE_LOG.record(request.method, context.peer())
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message())


async def _refuse(context: Context, caller: Caller, method: str, allowed: frozenset[Role]) -> None:
    if not caller.authenticated:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"{caller.name}: {caller.rule}")
    held = "no role" if caller.role is None else f"the {caller.role.value} role"
    await context.abort(
        grpc.StatusCode.PERMISSION_DENIED,
        f"{caller.name} has {held} ({caller.rule}); {method} needs {methods.needs(allowed)}",
    )


async def _rate_limited(context: Context, caller: Caller, wait_s: float) -> None:
    assert caller.rate is not None
    wait_ms = max(1, math.ceil(wait_s * 1000))
    context.set_trailing_metadata(
        ((PUSHBACK_METADATA, str(wait_ms)), (RETRY_AFTER_METADATA, str(wait_ms)))
    )
    await context.abort(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"rate limit of {caller.name}: {caller.rate.per_second:g} requests/s, burst "
        f"{caller.rate.burst} (auth.rate_per_second); retry after {wait_ms} ms",
    )


Wrap = Callable[[str, Handler], Handler]


class Registrar:
    """Stands in for a server while services register: each handler is wrapped once, by
    the gate and then by `outer` (the RPC metrics: outside, so refused calls count too).
    Wrapping at registration costs a call nothing more than the wrapper itself, where a
    grpc.aio interceptor runs a chain of coroutines on every call."""

    def __init__(self, server: grpc.aio.Server, gate: Gate, outer: Wrap | None = None) -> None:
        self._server = server
        self._gate = gate
        self._outer = outer

    def wrap(self, method: str, handler: Handler) -> Handler:
        wrapped = self._gate.wrap(method, handler)
        return self._outer(method, wrapped) if self._outer is not None else wrapped

    def add_generic_rpc_handlers(self, handlers: Sequence[GenericHandler]) -> None:
        self._server.add_generic_rpc_handlers([_Wrapped(h, self.wrap) for h in handlers])

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Handler]) -> None:
        wrapped = {name: self.wrap(f"/{service}/{name}", h) for name, h in handlers.items()}
        self._server.add_registered_method_handlers(service, wrapped)  # type: ignore[attr-defined]


class _Wrapped(GenericHandler):
    """A generic handler whose method handlers come back wrapped (each once)."""

    def __init__(self, inner: GenericHandler, wrap: Wrap) -> None:
        self._inner = inner
        self._wrap = wrap
        self._wrapped: dict[str, Handler] = {}  # only the methods `inner` serves

    def service(self, details: grpc.HandlerCallDetails) -> Handler | None:
        method = details.method
        found = self._wrapped.get(method)
        if found is None:
            handler = self._inner.service(details)
            if handler is None:
                return None
            found = self._wrapped[method] = self._wrap(method, handler)
        return found
