"""Long-lived streams have their own bounds, per connection and in total, apart from
unary calls; and the Unix-socket relay carries calls with the client's credentials."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from budgetd.auth import Role
from budgetd.auth.gate import Identities, anonymous_tcp
from budgetd.auth.peercred import UnixRoles
from budgetd.auth.unix_proxy import UnixProxy
from budgetd.server import ConnectionLimits
from budgetd.v1 import budget_pb2 as pb
from tests.auth_support import GOAWAY, frames_of
from tests.service.gated import Gated, eventually, run_in, serve_gated

ANYONE = Identities(anonymous_tcp(Role.AGENT))


@pytest.fixture
def bounded() -> Iterator[Gated]:
    limits = ConnectionLimits(max_streams_total=3, max_streams_per_connection=2)
    yield from serve_gated(ANYONE, limits=limits)


def _watch(channel: grpc.Channel) -> Any:
    """An open health Watch: its first answer is read, the stream stays open."""
    stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=60)
    return stream


def _first(stream: Any) -> grpc.StatusCode:
    try:
        next(stream)
    except grpc.RpcError as error:
        failed: Any = error
        return failed.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def _details(stream: Any) -> str:
    try:
        next(stream)
    except grpc.RpcError as error:
        failed: Any = error
        return str(failed.details())
    raise AssertionError("the stream was not refused")


def test_streams_are_bounded_per_connection(bounded: Gated) -> None:
    one = bounded.channel()
    kept = [_watch(one), _watch(one)]
    assert [_first(s) for s in kept] == [grpc.StatusCode.OK] * 2
    third = _watch(one)
    assert "connections.max_streams_per_connection=2" in _details(third)
    assert _first(_watch(bounded.channel())) == grpc.StatusCode.OK  # another connection


def test_streams_are_bounded_in_total_and_unary_calls_go_on(bounded: Gated) -> None:
    kept = [_watch(bounded.channel()) for _ in range(3)]
    assert [_first(s) for s in kept] == [grpc.StatusCode.OK] * 3
    refused = _watch(bounded.channel())
    assert "connections.max_streams_total=3" in _details(refused)
    subscribe = bounded.budget().Subscribe(pb.SubscribeRequest(), timeout=60)
    assert _first(subscribe) == grpc.StatusCode.RESOURCE_EXHAUSTED  # every kind of stream
    # Unary calls are not streams: they answer while every stream slot is taken.
    budget = bounded.budget()
    request = pb.ConsumeRequest(
        request_id="c1", labels={"agent": "a", "thread": "t"}, usage=pb.Usage(input_tokens=1)
    )
    assert budget.Consume(request, timeout=30).ledgers
    # A stream that ends gives its slot back.
    kept[0].cancel()
    assert eventually(bounded, lambda: bounded.gate.bounds.total == 2)
    assert _first(_watch(bounded.channel())) == grpc.StatusCode.OK
    assert run_in(bounded, lambda: bounded.gate.bounds.total) == 3


# ---------------------------------------------------------------------------------------
# The relay on the Unix socket
# ---------------------------------------------------------------------------------------


@pytest.fixture
def relayed() -> Iterator[tuple[Gated, UnixProxy, Path]]:
    """A gated server behind the relay, the way the daemon runs it when other users
    have roles (the test runs as the daemon's own user: its calls are admin)."""
    directory = Path(tempfile.mkdtemp(prefix="budgetd-relay-test-"))
    path = directory / "budgetd.sock"
    proxy = UnixProxy(path, UnixRoles(uids={65534: Role.AGENT}))
    identities = Identities(anonymous_tcp(None), proxy=proxy)
    for gated in serve_gated(identities, probe=True, backend=proxy.backend):
        asyncio.run_coroutine_threadsafe(proxy.start(), gated.loop).result(timeout=30)
        try:
            yield gated, proxy, path
        finally:
            run_in(gated, proxy.stop_accepting)
            proxy.remove_backend()
            path.unlink(missing_ok=True)
            directory.rmdir()


def test_the_relay_carries_calls_with_the_clients_credentials(
    relayed: tuple[Gated, UnixProxy, Path],
) -> None:
    gated, proxy, path = relayed
    assert os.stat(path).st_mode & 0o777 == 0o666  # every user may connect; the daemon decides
    channel = grpc.insecure_channel(f"unix:{path}")
    try:
        who = gated.who(channel)
        assert who == {"name": f"uid {os.geteuid()}", "role": "admin", "scope": None}
        assert len(run_in(gated, lambda: dict(proxy.callers))) == 1
        # A second connection is a second relay with its own address.
        other = grpc.insecure_channel(
            f"unix:{path}", options=[("grpc.use_local_subchannel_pool", 1)]
        )
        assert gated.who(other)["role"] == "admin"
        assert len(run_in(gated, lambda: dict(proxy.callers))) == 2
        other.close()
    finally:
        channel.close()


def test_a_silent_client_of_the_relay_is_closed_by_the_handshake_bound(tmp_path: Path) -> None:
    directory = Path(tempfile.mkdtemp(prefix="budgetd-relay-test-"))
    path = directory / "budgetd.sock"
    proxy = UnixProxy(path, UnixRoles())
    limits = ConnectionLimits(handshake_timeout_s=0.2)
    identities = Identities(anonymous_tcp(None), proxy=proxy)
    for gated in serve_gated(identities, probe=True, backend=proxy.backend, limits=limits):
        asyncio.run_coroutine_threadsafe(proxy.start(), gated.loop).result(timeout=30)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.settimeout(60)  # the bound is 0.2 s: this only keeps a broken test finite
        client.connect(str(path))
        received = b""
        while chunk := client.recv(4096):  # until the server closes the connection
            received += chunk
        client.close()
        # gRPC says goodbye (GOAWAY) and closes: the wait above ended.
        assert any(kind == GOAWAY for kind, _, _ in frames_of(received))
        assert eventually(gated, lambda: not proxy.callers)  # the relay is gone too
        run_in(gated, proxy.stop_accepting)
    proxy.remove_backend()
    path.unlink(missing_ok=True)
    directory.rmdir()
