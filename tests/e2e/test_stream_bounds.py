"""One caller cannot starve the others, against the real daemon: a flood of idle health
Watch streams leaves unary calls answering; connections that never speak HTTP/2, stay
idle, or ping too often are closed by the server.

Each wait here is on a condition (an answer, an end of stream, a closed socket), with
a generous bound only so that a broken daemon fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from budgetd.v1 import budget_pb2 as pb
from tests.auth_support import (
    ACK,
    ENHANCE_YOUR_CALM,
    GOAWAY,
    PING,
    PREFACE,
    SETTINGS,
    frame,
    frames,
    goaway,
)
from tests.e2e.support import WAIT_S, Daemon

FLOOD = 10_000
CHANNELS = 100  # a hundred connections of a hundred streams each
LABELS = {"agent": "a", "thread": "t"}


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.kill()


def _start(
    daemons: list[Daemon], home: Path, config: str = "", socket: Path | None = None
) -> Daemon:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "budgetd.toml"
    path.write_text(config)
    args = ["--config", str(path)]
    if socket is not None:
        args += ["--socket", str(socket)]
    daemon = Daemon(home, args, socket=socket)
    daemons.append(daemon)
    return daemon.start()


async def _flood(target: str, channels: list[grpc.aio.Channel]) -> tuple[int, list[str]]:
    """FLOOD health Watch streams over CHANNELS connections (added to `channels`), left
    open and idle: how many the daemon accepted (their first answer came), and the
    refusals' messages."""
    channels += [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(CHANNELS)
    ]
    calls = [
        health_pb2_grpc.HealthStub(channels[i % CHANNELS]).Watch(health_pb2.HealthCheckRequest())
        for i in range(FLOOD)
    ]

    async def first(call: grpc.aio.UnaryStreamCall) -> str | None:  # type: ignore[type-arg]
        try:
            await asyncio.wait_for(call.read(), WAIT_S)
        except grpc.aio.AioRpcError as error:
            # Refused. Under a burst gRPC's Python server sometimes ends a stream it
            # aborts before reading the client's half-close as CANCELLED rather than with
            # the abort's status (the same with a bare servicer that aborts, no budgetd
            # code involved); either way the stream took no slot.
            assert error.code() in (
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.StatusCode.CANCELLED,
            ), error
            return str(error.details())
        return None

    outcomes = await asyncio.gather(*(first(call) for call in calls))
    refused = [o for o in outcomes if o is not None]
    return len(outcomes) - len(refused), refused


def test_a_flood_of_idle_watch_streams_leaves_unary_calls_answering(
    daemons: list[Daemon], tmp_path: Path
) -> None:
    daemon = _start(daemons, tmp_path / "d")
    loop = asyncio.new_event_loop()
    channels: list[grpc.aio.Channel] = []
    try:
        accepted, refused = loop.run_until_complete(_flood(daemon.tcp_target, channels))
        # The streams' own bounds: 100 per connection, 1000 in all (the defaults).
        assert accepted == 1000
        assert len(refused) == FLOOD - 1000
        bounded = [r for r in refused if "connections.max_streams_total=1000" in r]
        assert bounded and all(r in (bounded[0], "CANCELLED") for r in refused)

        # Meanwhile every unary call answers, for the owner on the socket and on TCP.
        budget = daemon.budget()
        usage = pb.Usage(input_tokens=10, model="gpt-4o")
        assert budget.Check(pb.CheckRequest(labels=LABELS, estimate=usage), timeout=WAIT_S)
        held = budget.Reserve(
            pb.ReserveRequest(request_id="r1", labels=LABELS, estimate=usage), timeout=WAIT_S
        )
        assert held.reservation_id
        request = pb.ConsumeRequest(request_id="c1", labels=LABELS, usage=usage)
        assert budget.Consume(request, timeout=WAIT_S).ledgers
        assert daemon.health(daemon.tcp_target) == health_pb2.HealthCheckResponse.SERVING
        info = daemon.admin().GetServerInfo(pb.GetServerInfoRequest(), timeout=WAIT_S)
        assert info.pid > 0
    finally:
        for channel in channels:
            loop.run_until_complete(channel.close(None))
        loop.close()
    assert daemon.stop() == 0


def _until_closed(sock: socket.socket) -> list[tuple[int, int, bytes]]:
    """Every frame the server sends until it closes the connection."""
    sock.settimeout(WAIT_S)  # the daemon's bounds are far shorter; this keeps a failure finite
    return list(frames(sock))


@pytest.fixture
def shared() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="budgetd-bounds-e2e-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize("unix_auth", ["owner-only", "peer-credentials"])
def test_a_connection_that_never_speaks_is_closed_within_the_handshake_bound(
    daemons: list[Daemon], tmp_path: Path, shared: Path, unix_auth: str
) -> None:
    config = "[connections]\nhandshake_timeout_seconds = 0.5\n"
    if unix_auth == "peer-credentials":
        config += "[auth.unix]\nagent_uids = [65534]\n"
    daemon = _start(daemons, tmp_path / "d", config, shared / "budgetd.sock")
    assert daemon.ready["unix_auth"] == unix_auth
    host, port = daemon.tcp_target.rsplit(":", 1)
    silent_tcp = socket.create_connection((host, int(port)))
    silent_unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent_unix.connect(str(daemon.socket))
    for silent in (silent_tcp, silent_unix):
        with silent:
            sent = _until_closed(silent)  # returns only once the server closed it
        assert any(kind == GOAWAY for kind, _, _ in sent)
    assert daemon.health() == health_pb2.HealthCheckResponse.SERVING


def test_an_idle_connection_is_closed_and_a_ping_flood_is_refused(
    daemons: list[Daemon], tmp_path: Path
) -> None:
    daemon = _start(daemons, tmp_path / "d", "[connections]\nidle_timeout_seconds = 1\n")
    host, port = daemon.tcp_target.rsplit(":", 1)

    # HTTP/2 spoken, then no call at all: closed once idle for the bound.
    with socket.create_connection((host, int(port))) as idle:
        idle.sendall(PREFACE + frame(SETTINGS))
        idle.settimeout(WAIT_S)
        ends = []
        for kind, flags, payload in frames(idle):
            if kind == SETTINGS and not flags & ACK:
                idle.sendall(frame(SETTINGS, ACK))
            if kind == GOAWAY:
                ends.append(goaway(payload))
        assert ends and ends[-1][1] == b"connection idle"  # a goodbye, then the close

    # A client that pings as fast as it can is told to calm down and cut off.
    with socket.create_connection((host, int(port))) as pinger:
        pinger.sendall(PREFACE + frame(SETTINGS) + frame(PING, payload=b"12345678"))
        pinger.settimeout(WAIT_S)
        sent, told = 1, None
        for kind, flags, payload in frames(pinger):
            if kind == PING and flags & ACK and sent < 100:
                pinger.sendall(frame(PING, payload=b"12345678"))
                sent += 1
            if kind == GOAWAY:
                told = goaway(payload)
        assert told == (ENHANCE_YOUR_CALM, b"too_many_pings")
        assert sent < 100  # long before the test would have given up
