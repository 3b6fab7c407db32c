"""The daemon: one grpc.aio server around one engine, its timer, signals and listeners.

Start-up: listeners are checked and bound, health says NOT_SERVING until everything is
ready, then SERVING. SIGTERM/SIGINT: health NOT_SERVING, subscriptions end, the server
stops accepting calls and drains in-flight ones for at most the grace period, exit 0; a
second signal exits at once. SIGHUP reloads policies from the config file.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import secrets
import signal
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2

from budgetd import config
from budgetd.core import COMPILED, BudgetError, Engine, Policy
from budgetd.core import events as ev
from budgetd.event_log import EventLog
from budgetd.logs import fields
from budgetd.server import SERVICE_NAMES, build_server
from budgetd.service import Runtime
from budgetd.tuning import settle_heap
from budgetd.unix_socket import SocketClaim, StartError

log = logging.getLogger("budgetd")


@dataclass
class Listeners:
    unix: SocketClaim | None
    tcp: str | None  # "host:port" actually bound (port resolved when 0 was asked)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(server: grpc.aio.Server, settings: config.Settings) -> Listeners:
    claim = None
    if settings.socket is not None:
        claim = SocketClaim(settings.socket)
        claim.acquire()
        try:
            server.add_insecure_port(f"unix:{settings.socket}")
        except RuntimeError:
            raise StartError(f"cannot listen on unix:{settings.socket}") from None
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
    if claim is None and tcp is None:
        raise StartError("no listener: both the Unix socket and TCP are turned off")
    return Listeners(claim, tcp)


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

    def _set_health(self, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        for name in ("", *SERVICE_NAMES):
            self.health.set(name, status)

    async def run(self) -> None:
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.listeners = bind(self.server, self.settings)
        await self.server.start()
        if self.listeners.unix is not None:
            self.listeners.unix.bound()
        self._install_signals()
        timer = asyncio.create_task(self._tick(), name="budgetd-timer")
        settle_heap()
        self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "ready",
            extra=fields(
                unix=self.listeners.unix.path if self.listeners.unix else "off",
                tcp=self.listeners.tcp or "off",
                loop=type(asyncio.get_running_loop()).__module__.split(".")[0],
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
        self.health.enter_graceful_shutdown()
        self.events.close()
        await self.server.stop(grace)
        timer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await timer
        if self.listeners is not None and self.listeners.unix is not None:
            self.listeners.unix.release()
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
            if events:
                _log_expiries(events)

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
        try:
            changed = apply_policies(self.runtime, policies)
        except BudgetError as error:  # the file passed the checks, the engine said no
            log.error("reload stopped part way", extra=fields(error=error))
            return
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
            # An operator who edits the file means it for the ledgers that exist too
            # (per-ledger SetLedgerLimits overrides are kept).
            _, events = engine.put_policy(policy, now, apply_to_existing=True)
            runtime.publish(events)
            changed += 1
    return changed


def _log_expiries(events: list[ev.Event]) -> None:
    """One summary line per tick (a tick can expire thousands), the ids at debug level."""
    holds = [e.reservation_id for e in events if isinstance(e, ev.ReservationExpired)]
    runs = [e.run_id for e in events if isinstance(e, ev.RunEnded)]
    if holds or runs:
        log.info("expired", extra=fields(reservations=len(holds), runs=len(runs)))
        if log.isEnabledFor(logging.DEBUG):
            log.debug("expired ids", extra=fields(reservations=holds[:100], runs=runs[:100]))
