"""The daemon: one grpc.aio server around one engine, its timer, signals and listeners.

Start-up: listeners are checked and bound, health says NOT_SERVING until everything is
ready, then SERVING. SIGTERM/SIGINT: health NOT_SERVING, subscriptions end, the server
stops accepting calls and drains in-flight ones for at most the grace period, exit 0; a
second signal exits at once. SIGHUP reloads policies from the config file.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import secrets
import signal
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2

from budgetd import config
from budgetd.core import COMPILED, Engine, Policy
from budgetd.core import events as ev
from budgetd.event_log import EventLog
from budgetd.logs import fields
from budgetd.server import SERVICE_NAMES, build_server
from budgetd.service import Runtime
from budgetd.tuning import settle_heap

log = logging.getLogger("budgetd")


class StartError(Exception):
    """The daemon cannot start (a listener cannot be used); the message says why."""


@dataclass
class Listeners:
    unix: Path | None
    tcp: str | None  # "host:port" actually bound (port resolved when 0 was asked)


def prepare_socket(path: Path) -> None:
    """Make `path` usable for a new Unix socket: create our private directory if needed,
    replace a stale socket left by a dead daemon, refuse a live one or a non-socket."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise StartError(f"{path} exists and is not a socket; remove it or choose --socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError as error:
        if error.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise StartError(f"cannot check {path}: {error.strerror}") from None
        path.unlink(missing_ok=True)  # nobody listens: a dead daemon's socket
        log.info("stale socket replaced", extra=fields(path=str(path)))
        return
    finally:
        probe.close()
    raise StartError(f"another budgetd is listening on {path}; stop it or choose --socket")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(server: grpc.aio.Server, settings: config.Settings) -> Listeners:
    unix = settings.socket
    if unix is not None:
        prepare_socket(unix)
        try:
            server.add_insecure_port(f"unix:{unix}")
        except RuntimeError:
            raise StartError(f"cannot listen on unix:{unix}") from None
    tcp = settings.tcp
    if tcp is not None:
        host, _, port = tcp.rpartition(":")
        if not _is_loopback(host) and not settings.allow_non_loopback:
            raise StartError(f"{tcp} is not a loopback address; pass --allow-non-loopback")
        try:
            bound = server.add_insecure_port(tcp)
        except RuntimeError:
            raise StartError(f"cannot listen on {tcp} (address in use?)") from None
        tcp = f"{host}:{bound if port == '0' else port}"
    if unix is None and tcp is None:
        raise StartError("no listener: both the Unix socket and TCP are turned off")
    return Listeners(unix, tcp)


class Daemon:
    def __init__(self, settings: config.Settings) -> None:
        self.settings = settings
        engine = Engine(
            settings.policies,
            limits=settings.limits,
            prices=settings.prices,
            # Ids must not repeat across restarts: a fresh prefix per start.
            id_prefix=f"res-{secrets.token_hex(4)}-",
        )
        self.events = EventLog(
            settings.event_retention, settings.max_subscribers, settings.subscriber_queue
        )
        self.runtime = Runtime(engine, self.events, settings.state_dir, settings.max_streams)
        self.server, self.health = build_server(self.runtime, settings.max_message_bytes)
        self.stopping = asyncio.Event()
        self.listeners: Listeners | None = None

    async def _set_health(self, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, status)

    async def run(self) -> None:
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.listeners = bind(self.server, self.settings)
        await self.server.start()
        if self.listeners.unix is not None:
            os.chmod(self.listeners.unix, 0o600)
        self._install_signals()
        timer = asyncio.create_task(self._tick(), name="budgetd-timer")
        settle_heap()
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "ready",
            extra=fields(
                unix=self.listeners.unix or "off",
                tcp=self.listeners.tcp or "off",
                policies=len(self.runtime.engine.policies),
                core="compiled" if COMPILED else "pure-python",
                pid=os.getpid(),
            ),
        )
        await self.stopping.wait()
        await self._drain(timer)

    async def _drain(self, timer: asyncio.Task[None]) -> None:
        grace = self.settings.grace_s
        log.info("draining", extra=fields(grace_s=grace))
        await self.health.enter_graceful_shutdown()
        self.events.close()
        await self.server.stop(grace)
        timer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await timer
        if self.listeners is not None and self.listeners.unix is not None:
            self.listeners.unix.unlink(missing_ok=True)
        log.info("stopped", extra=fields(events=self.events.last_seq))

    async def _tick(self) -> None:
        """Drive the core's clock: expire holds and runs, roll windows."""
        runtime = self.runtime
        while True:
            await asyncio.sleep(self.settings.tick_s)
            try:
                events = runtime.engine.expire(runtime.clock())
            except Exception:
                log.exception("expiry failed")
                continue
            runtime.publish(events)
            for event in events:
                if isinstance(event, ev.ReservationExpired | ev.RunEnded):
                    log.info(type(event).__name__, extra=fields(**_expiry_fields(event)))

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for number in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(number, self._on_stop_signal, number)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)

    def _on_stop_signal(self, number: int) -> None:
        if self.stopping.is_set():
            log.warning("second signal: exiting without draining", extra=fields(signal=number))
            logging.shutdown()
            os._exit(1)
        log.info("signal", extra=fields(signal=signal.Signals(number).name))
        self.stopping.set()

    def _on_reload_signal(self) -> None:
        path = self.settings.config_path
        if path is None:
            log.warning("reload ignored: started without a config file")
            return
        try:
            policies = config.reload_policies(path, self.settings.limits)
        except config.ConfigError as error:
            log.error("reload rejected; keeping the current policies", extra=fields(error=error))
            return
        changed = apply_policies(self.runtime, policies)
        log.info("policies reloaded", extra=fields(path=str(path), changed=changed))


def apply_policies(runtime: Runtime, policies: tuple[Policy, ...]) -> int:
    """Make the engine's policies equal `policies`; returns how many were deleted or
    put. Unchanged policies are left alone (their ledgers keep counting); deletions go
    first so the new set fits within max_policies."""
    engine, now = runtime.engine, runtime.clock()
    current = {p.name: p for p in engine.policies}
    wanted = {p.name for p in policies}
    changed = 0
    for name in sorted(current.keys() - wanted):
        _, events = engine.delete_policy(name, now)
        runtime.publish(events)
        changed += 1
    for policy in policies:
        if current.get(policy.name) != policy:
            _, events = engine.put_policy(policy, now)
            runtime.publish(events)
            changed += 1
    return changed


def _expiry_fields(event: ev.ReservationExpired | ev.RunEnded) -> dict[str, object]:
    if isinstance(event, ev.ReservationExpired):
        return {"reservation_id": event.reservation_id}
    return {"run_id": event.run_id, "reason": event.reason.value}
