"""One caller cannot starve the others, against the real daemon: a flood of idle health
Watch and Subscribe streams leaves unary calls answering; a subscriber that stops
reading is cut off even when no new event arrives; connections that never speak HTTP/2,
stay idle, or ping too often are closed by the server.

Each wait here is on a condition (an answer, an end of stream, a closed socket), with
a generous bound only so that a broken daemon fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from budgetd.v1 import budget_pb2 as pb
from budgetd.v1 import budget_pb2_grpc as rpc
from tests.auth_support import (
    ACK,
    ENHANCE_YOUR_CALM,
    GOAWAY,
    PING,
    PREFACE,
    SETTINGS,
    bearer,
    frame,
    frames,
    goaway,
    token_file,
)
from tests.e2e.support import WAIT_S, Daemon
from tests.stalled_subscriber import stalled_on_unix
from tests.waiting import wait_until

FLOOD = 10_000
CHANNELS = 100  # a hundred connections of a hundred streams each
LABELS = {"agent": "a", "thread": "t"}
USAGE = pb.Usage(input_tokens=10, model="gpt-4o")
OPS: dict[str, object] = {"name": "ops", "token": "tok-ops", "role": "admin"}  # no rate limit
OPS_TOKEN = bearer("tok-ops")
TOTAL_BOUND = "connections.max_streams_total=1000"
SUBSCRIBER_BOUND = "max_subscribers=64"


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


async def _opened(call: grpc.aio.UnaryStreamCall, subscribe: bool) -> str | None:  # type: ignore[type-arg]
    """None once the stream is open (a Watch's first answer; a Subscribe's initial
    metadata, as no event comes), else the refusal's message."""
    try:
        if subscribe:
            metadata = await asyncio.wait_for(call.initial_metadata(), WAIT_S)
            if any(key == "budgetd-resume-after" for key, _ in metadata or ()):
                return None
            await call.read()  # refused before any metadata: raises with the status
            raise AssertionError("a Subscribe stream ended without a status")
        await asyncio.wait_for(call.read(), WAIT_S)
    except grpc.aio.AioRpcError as error:
        # Refused. Under a burst gRPC's Python server sometimes ends a stream it aborts
        # before reading the client's half-close as CANCELLED rather than with the
        # abort's status (the same with a bare servicer that aborts, no budgetd code
        # involved); either way the stream took no slot.
        assert error.code() in (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.CANCELLED,
        ), error
        return str(error.details())
    return None


async def _flood(target: str, channels: list[grpc.aio.Channel]) -> tuple[Counter[str], list[str]]:
    """FLOOD streams over CHANNELS connections (added to `channels`), health Watch and
    Subscribe in turn, left open and idle: how many of each the daemon accepted, and
    the refusals' messages."""
    channels += [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(CHANNELS)
    ]
    calls = []
    for i in range(FLOOD):
        channel, subscribe = channels[i % CHANNELS], bool(i % 2)
        if subscribe:
            stub = rpc.BudgetServiceStub(channel)
            calls.append((stub.Subscribe(pb.SubscribeRequest(), metadata=OPS_TOKEN), True))
        else:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
            calls.append((watch, False))
    outcomes = await asyncio.gather(*(_opened(call, subscribe) for call, subscribe in calls))
    accepted: Counter[str] = Counter()
    refused = []
    for (_, subscribe), outcome in zip(calls, outcomes, strict=True):
        if outcome is None:
            accepted["Subscribe" if subscribe else "Watch"] += 1
        else:
            refused.append(outcome)
    return accepted, refused


def _consume_while_open(daemon: Daemon, count: int) -> list[float]:
    """`count` Consume calls, one after the other: how long each took (ms)."""
    budget, took = daemon.budget(), []
    for i in range(count):
        request = pb.ConsumeRequest(request_id=f"flood-{i}", labels=LABELS, usage=USAGE)
        started = time.monotonic()
        assert budget.Consume(request, timeout=WAIT_S).ledgers
        took.append((time.monotonic() - started) * 1000)
    return took


def _reason(refusal: str) -> str:
    return next((bound for bound in (TOTAL_BOUND, SUBSCRIBER_BOUND) if bound in refusal), refusal)


def test_a_flood_of_idle_watch_and_subscribe_streams_leaves_unary_calls_answering(
    daemons: list[Daemon], tmp_path: Path
) -> None:
    home = tmp_path / "d"
    home.mkdir()
    token_file(home / "tokens.toml", OPS)
    daemon = _start(daemons, home, '[auth]\ntoken_files = ["tokens.toml"]\n')
    loop = asyncio.new_event_loop()
    channels: list[grpc.aio.Channel] = []
    try:
        accepted, refused = loop.run_until_complete(_flood(daemon.tcp_target, channels))
        # The bounds (the defaults): 1000 streams in all, 64 of them subscribers. 100 per
        # connection is each connection's share here, so that one refuses none. A
        # Subscribe refused by its bound frees its stream slot only after its status,
        # so the Watch streams do not always get every slot left.
        assert accepted["Subscribe"] == 64
        assert 0 < accepted["Watch"] <= 1000 - 64
        assert len(refused) == FLOOD - accepted.total()
        reasons = Counter(_reason(r) for r in refused)
        assert reasons[TOTAL_BOUND] and reasons[SUBSCRIBER_BOUND]
        assert set(reasons) <= {TOTAL_BOUND, SUBSCRIBER_BOUND, "CANCELLED"}, reasons

        # Meanwhile every unary call answers, for the owner on the socket and on TCP.
        took = _consume_while_open(daemon, 20)
        budget = daemon.budget()
        assert budget.Check(pb.CheckRequest(labels=LABELS, estimate=USAGE), timeout=WAIT_S)
        held = budget.Reserve(
            pb.ReserveRequest(request_id="r1", labels=LABELS, estimate=USAGE), timeout=WAIT_S
        )
        assert held.reservation_id
        assert daemon.health(daemon.tcp_target) == health_pb2.HealthCheckResponse.SERVING
        info = daemon.admin().GetServerInfo(pb.GetServerInfoRequest(), timeout=WAIT_S)
        assert info.subscribers == 64
        print(
            f"\nflood of {FLOOD} idle streams over {CHANNELS} connections: accepted "
            f"{dict(accepted)}, refused {len(refused)} {dict(reasons)}; while open, "
            f"{len(took)} Consume answered OK in {min(took):.1f}..{max(took):.1f} ms "
            f"(median {sorted(took)[len(took) // 2]:.1f} ms)"
        )
    finally:
        for channel in channels:
            loop.run_until_complete(channel.close(None))
        loop.close()
    admin = daemon.admin()
    _wait(
        lambda: admin.GetServerInfo(pb.GetServerInfoRequest(), timeout=WAIT_S).subscribers == 0,
        "the flood's subscribers gone",
    )
    assert daemon.stop() == 0


def _wait(
    condition: Callable[[], bool], what: str, between: Callable[[], None] | None = None
) -> None:
    wait_until(condition, what, limit_s=WAIT_S, between=between)


def _watch(daemon: Daemon) -> Any:
    stub = health_pb2_grpc.HealthStub(daemon.channel())
    return stub.Watch(health_pb2.HealthCheckRequest(), timeout=WAIT_S)


def test_a_subscriber_that_stops_reading_is_cut_off_though_no_event_comes(
    daemons: list[Daemon], tmp_path: Path
) -> None:
    config = "[events]\nsend_timeout_seconds = 0.3\n[connections]\nmax_streams_total = 1\n"
    daemon = _start(daemons, tmp_path / "d", config)
    budget, admin = daemon.budget(), daemon.admin()
    info = pb.GetServerInfoRequest()
    with stalled_on_unix(str(daemon.socket), pb.SubscribeRequest(), 0, WAIT_S) as stalled:
        assert stalled.resume_after() == "0"
        _wait(lambda: admin.GetServerInfo(info, timeout=WAIT_S).subscribers == 1, "subscribed")
        with pytest.raises(grpc.RpcError) as refused:  # its stream holds the only slot
            next(iter(_watch(daemon)))
        assert "connections.max_streams_total=1 " in str(refused.value.details())
        for i in range(10):  # events it cannot take (its window is 0), then none
            request = pb.ConsumeRequest(request_id=f"c{i}", labels=LABELS, usage=USAGE)
            assert budget.Consume(request, timeout=WAIT_S).ledgers
        retry = pb.ConsumeRequest(request_id="c9", labels=LABELS, usage=USAGE)

        def still_answering() -> None:  # a retry: answered, and no new event
            assert budget.Consume(retry, timeout=WAIT_S).ledgers

        _wait(
            lambda: admin.GetServerInfo(info, timeout=WAIT_S).subscribers == 0,
            "the subscriber cut off",
            still_answering,
        )
        assert admin.GetServerInfo(info, timeout=WAIT_S).last_event_seq == 10
        line = daemon.wait_for("subscriber cut off: stopped reading")
        assert (line["resume_after"], line["send_timeout_s"]) == (0, 0.3)

        # Its stream slot is free again (once the handler gave up on its status).
        def watch_opens() -> bool:
            try:
                watch = _watch(daemon)
                next(iter(watch))
            except grpc.RpcError:
                return False
            watch.cancel()
            return True

        _wait(watch_opens, "its stream slot freed")
        # Reading again, it gets the status, queued behind the message it never took.
        stalled.grant()
        assert stalled.status() == (
            grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
            "subscriber stopped reading for 0.3 s; resume with after_seq=0",
        )
        assert [m.event.seq for m in stalled.messages()] == [1]
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
