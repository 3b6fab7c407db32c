"""The daemon: one grpc.aio server around one engine, its timer, signals and listeners.

Start-up: the state directory is locked, listeners are checked and bound, the state is
recovered (health says NOT_SERVING and calls get UNAVAILABLE meanwhile), then SERVING.
SIGTERM/SIGINT: health NOT_SERVING (open health watches report it and end before the
server's GOAWAY), subscriptions end, the server stops accepting calls and drains
in-flight ones for at most the grace period, a final snapshot is written and the
journal emptied, exit 0; a second signal exits at once.
SIGHUP reloads the config file's policies (those put over the API stay), the token files
and the TLS files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2

from budgetd import __version__, config, startup
from budgetd.auth.access import Access, closed_directory
from budgetd.auth.gate import Gate
from budgetd.auth.ratelimit import RateLimiter
from budgetd.auth.tls import TlsError
from budgetd.auth.tokens import TokenFileError
from budgetd.core import COMPILED, Engine, Policy
from budgetd.core import events as ev
from budgetd.event_log import EventLog
from budgetd.health import GLOBAL_SERVICE as HEALTH_GLOBAL
from budgetd.health import Health
from budgetd.logs import fields
from budgetd.persistence import lease
from budgetd.persistence.statedir import StateDir
from budgetd.runtime import STARTING, Durability, LinkStatus, Runtime
from budgetd.server import SERVICE_NAMES, ConnectionLimits, build_server
from budgetd.tuning import MAINTAIN_EVERY_S, settle_heap
from budgetd.unix_socket import SocketClaim, StartError

if TYPE_CHECKING:  # loaded only when metrics are on (`_telemetry`), Redis when [global]
    from budgetd.scaleout.link import Link
    from budgetd.telemetry.pipeline import Telemetry

log = logging.getLogger("budgetd")
# How long before the end of the grace period the calls still waiting for durability
# are answered UNAVAILABLE: time for those answers to leave before the servers cancel.
CUT_MARGIN_S = 0.2
# A reloaded file is read until two reads this far apart agree, at most this many times.
SETTLE_S = 0.1
SETTLE_TRIES = 20


@dataclass
class Listeners:
    unix: SocketClaim | None
    tcp: str | None  # "host:port" actually bound (port resolved when 0 was asked)


@dataclass
class Servers:
    """The owner server (no identities: the owner-only socket) and the gated one (TCP,
    and the relayed socket when other users have roles); either may be absent."""

    owner: grpc.aio.Server | None
    gated: grpc.aio.Server | None

    @property
    def all(self) -> list[grpc.aio.Server]:
        return [s for s in (self.owner, self.gated) if s is not None]


_is_loopback = config.is_loopback_host  # the config's check and the listener's agree


def _telemetry(settings: config.Settings, runtime: Runtime) -> Telemetry | None:
    """The metrics pipeline, when an exporter is configured and the SDK not disabled."""
    s = settings.telemetry
    if s.disabled or not s.exporters:
        return None
    # Imported here: the SDK and its exporters take ~0.4 s to load, paid only when on.
    from budgetd.telemetry.pipeline import Telemetry  # noqa: PLC0415

    return Telemetry(s, runtime, __version__)


def bind(servers: Servers, settings: config.Settings, access: Access) -> Listeners:
    claim = None
    if settings.socket is not None:
        claim = SocketClaim(settings.socket)
        claim.acquire()
        proxy = access.proxy
        # With a relay, gRPC listens on the relay's private socket; the relay takes the
        # real path once the server runs (Daemon.run).
        where = proxy.backend if proxy is not None else settings.socket
        server = servers.gated if proxy is not None else servers.owner
        assert server is not None
        try:
            server.add_insecure_port(f"unix:{where}")
        except RuntimeError:
            raise StartError(f"cannot listen on unix:{where}") from None
    tcp = settings.tcp
    if tcp is not None:
        tcp = _bind_tcp(servers, settings, access, tcp)
    if claim is None and tcp is None:
        raise StartError("no listener: both the Unix socket and TCP are turned off")
    return Listeners(claim, tcp)


def _bind_tcp(servers: Servers, settings: config.Settings, access: Access, tcp: str) -> str:
    host, _, port = tcp.rpartition(":")
    if not _is_loopback(host) and not (settings.allow_non_loopback or access.tls):
        raise StartError(
            f"{tcp} is not a loopback address; configure [tls] or pass --allow-non-loopback"
        )
    server = servers.gated if access.tcp_gated else servers.owner
    assert server is not None
    try:
        if access.tls is not None:
            bound = server.add_secure_port(tcp, access.tls.credentials())
        else:
            bound = server.add_insecure_port(tcp)
    except RuntimeError:
        raise StartError(f"cannot listen on {tcp} (address in use?)") from None
    if not _is_loopback(host) and access.tls is None:
        log.warning(
            "INSECURE: plaintext TCP on a non-loopback address: tokens and budgets cross "
            "the network unencrypted (allow_non_loopback); configure [tls]",
            extra=fields(tcp=tcp),
        )
    return f"{host}:{bound if port == '0' else port}"


class Daemon:
    def __init__(self, settings: config.Settings) -> None:
        self.settings = settings
        self.mode = Durability(settings.durability)
        self.state = StateDir(settings.state_dir) if self.mode is not Durability.MEMORY else None
        self.runtime = Runtime(
            Engine(
                settings.policies,
                limits=settings.limits,
                prices=settings.prices,
                id_prefix=startup.new_id_prefix(),
                global_enabled=settings.scaleout.enabled,
                max_slice_fraction=settings.scaleout.max_slice,
            ),
            self._event_log(0),
            max_streams=settings.max_streams,
            max_batch_operations=settings.max_batch_operations,
            mode=self.mode,
        )
        self.runtime.refusing = STARTING
        self._written = settings.written_policies  # the file's [[policies]], as last applied
        self.telemetry = _telemetry(settings, self.runtime)
        self.access = Access.of(settings)
        self.health = Health()
        self.servers = self._servers()
        self.stopping = asyncio.Event()
        self.listeners: Listeners | None = None
        self.link: Link | None = None  # [global]: the Redis of global policies

    def _servers(self) -> Servers:
        """One stream bound for both servers; the gate only where a caller may be
        someone other than the daemon's own user."""
        s, access = self.settings, self.access
        limits = ConnectionLimits(
            s.max_streams_total,
            s.max_streams_per_connection,
            s.handshake_timeout_s,
            s.idle_timeout_s,
        )
        bounds = limits.bounds()
        owner_needed = (s.socket is not None and access.proxy is None) or (
            s.tcp is not None and not access.tcp_gated
        )

        def server(gate: Gate) -> grpc.aio.Server:
            built, _ = build_server(
                self.runtime,
                s.max_message_bytes,
                log_calls=s.log_level == "debug",
                gate=gate,
                health_servicer=self.health,
                limits=limits,
                outer=self.telemetry.rpc.wrap if self.telemetry else None,
            )
            return built

        identities = access.identities
        return Servers(
            server(Gate(None, bounds)) if owner_needed else None,
            server(Gate(identities, bounds, RateLimiter())) if identities is not None else None,
        )

    def _event_log(self, last_seq: int) -> EventLog:
        s = self.settings
        return EventLog(
            s.event_retention,
            s.max_subscribers,
            s.subscriber_queue,
            last_seq,
            s.subscriber_send_timeout_s,
        )

    def _set_health(self, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        for name in ("", *SERVICE_NAMES):
            self.health.set(name, status)

    async def run(self) -> None:
        if self.state is not None:
            self.state.open()  # before the listeners: a second daemon stops here
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.listeners = bind(self.servers, self.settings, self.access)
        self.runtime.listeners = [
            *([f"unix:{self.listeners.unix.path}"] if self.listeners.unix else []),
            *([self.listeners.tcp] if self.listeners.tcp else []),
        ]
        try:
            for server in self.servers.all:
                await server.start()
            if self.listeners.unix is not None:
                if self.access.proxy is not None:
                    await self.access.proxy.start(self.access.socket_mode)
                    _warn_if_unreachable(self.access.proxy.path)
                self.listeners.unix.bound(self.access.socket_mode)
            self._install_signals()
            metrics = self._start_telemetry()
            await self._recover()
            self._make_link()
        except BaseException:  # e.g. a damaged state directory: no half-started daemon
            for server in self.servers.all:
                await server.stop(None)
            if self.telemetry is not None:
                await self.telemetry.stop()
            self._release()
            raise
        if self.telemetry is not None:
            self.telemetry.attach()
        timer = asyncio.create_task(self._tick(), name="budgetd-timer")
        collector = asyncio.create_task(self._collector(), name="budgetd-collector")
        snapshots = asyncio.create_task(self._snapshots(), name="budgetd-snapshots")
        settle_heap()
        # Pauses are timed from here: the one full collection above happens before the
        # daemon serves.
        self.runtime.collector.install()
        store = self.runtime.store
        journal = store.journal if store is not None else None
        self.runtime.refusing = journal.error if journal is not None else None
        status = health_pb2.HealthCheckResponse
        self._set_health(status.NOT_SERVING if self.runtime.refusing else status.SERVING)
        if self.link is not None:  # (its syncs go through the mutation path: open now)
            self.link.start()
        log.info(
            "ready",
            extra=fields(
                unix=self.listeners.unix.path if self.listeners.unix else "off",
                tcp=self.listeners.tcp or "off",
                loop=type(asyncio.get_running_loop()).__module__.split(".")[0],
                policies=len(self.runtime.engine.policies),
                core="compiled" if COMPILED else "pure-python",
                durability=self.mode.value,
                state_dir=str(self.state.path) if self.state else "off",
                pid=os.getpid(),
                metrics=metrics,
                **self.access.summary(),
            ),
        )
        await self.stopping.wait()
        await self._drain(timer, snapshots, collector)

    def _start_telemetry(self) -> str:
        """Open the metrics pipeline (before recovery: a port in use fails the start
        at once). Returns what the start-up log says of it."""
        if self.telemetry is None:
            return "off"
        from budgetd.telemetry.pipeline import TelemetryError  # noqa: PLC0415 (on only)

        try:
            return ",".join(self.telemetry.start()) or "off"
        except TelemetryError as error:
            raise StartError(str(error)) from None
        except OSError as error:
            s = self.settings.telemetry
            raise StartError(
                f"cannot serve Prometheus metrics on {s.prometheus_host}:{s.prometheus_port}"
                f" ({error.strerror or error}; OTEL_EXPORTER_PROMETHEUS_PORT picks another)"
            ) from None

    async def _recover(self) -> None:
        """Rebuild the state, then make the file's policies current through the one
        mutation path (a start is a reload of the file)."""
        settings, state = self.settings, self.state
        if state is None:
            return  # memory mode: the embedded engine is the state
        fresh = await startup.restore(
            self.runtime,
            state,
            settings.policies,
            settings.limits,
            settings.prices,
            self._event_log,
            self._on_journal_health,
            settings.commit_delay_s,
            global_enabled=settings.scaleout.enabled,
            max_slice_fraction=settings.scaleout.max_slice,
        )
        if not fresh:
            self.runtime.refusing = None
            await self._apply_file_policies("start")
            self.runtime.refusing = STARTING  # until the daemon says ready

    async def _drain(self, *tasks: asyncio.Task[None]) -> None:
        """Stop serving within the grace period, then the daemon's own tasks."""
        grace = self.settings.grace_s
        log.info("draining", extra=fields(grace_s=grace))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        self.health.enter_graceful_shutdown()
        self.runtime.events.close()
        # Watchers hear NOT_SERVING and the end of their stream before the GOAWAY; a
        # watcher that does not read holds this no longer than the grace period.
        if self.access.proxy is not None:
            self.access.proxy.stop_accepting()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.health.watches_ended(), grace)
        remaining = max(0.0, deadline - loop.time())
        stopped = asyncio.gather(*(server.stop(remaining) for server in self.servers.all))
        # Just before the servers cancel what is still in flight, calls waiting for
        # their record to be durable answer UNAVAILABLE (retry), not CANCELLED.
        done, _ = await asyncio.wait({stopped}, timeout=max(0.0, remaining - CUT_MARGIN_S))
        if not done:
            cut = self.runtime.cut_waiting()
            if cut:
                log.warning(
                    "grace period over: calls answered UNAVAILABLE", extra=fields(calls=cut)
                )
        await stopped
        if self.link is not None:  # no call is left: settle and give every lease back
            await self.link.stop()
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._final_snapshot()
        if self.telemetry is not None:
            await self.telemetry.stop()  # a last export of the final counts
        self._release()
        store = self.runtime.store
        journal = store.journal if store is not None else None
        totals: dict[str, object] = {}
        if journal is not None:
            stats = journal.stats
            totals = {
                "journal_records": stats.records,
                "journal_fsyncs": stats.fsyncs,
                "fsync_ms": round(stats.fsync_seconds * 1000, 1),
            }
        log.info("stopped", extra=fields(events=self.runtime.events.last_seq, **totals))

    def _release(self) -> None:
        """Give back the socket path and the state directory's lock (and stop timing
        the collector: a process may run another daemon after this one)."""
        self.runtime.collector.uninstall()
        if self.listeners is not None and self.listeners.unix is not None:
            self.listeners.unix.release()
        if self.access.proxy is not None:
            self.access.proxy.remove_backend()
        if self.state is not None:
            self.state.close()

    async def _final_snapshot(self) -> None:
        """A clean stop leaves one snapshot that covers everything and an empty journal."""
        store = self.runtime.store
        if store is None:
            return
        journal = store.journal
        try:
            if journal is not None:
                pending = journal.pending()
                if pending is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(pending)
            written = await self.runtime.snapshot(keep_journal_back_to_previous=False)
            log.info("final snapshot", extra=fields(path=str(written.path), lsn=written.lsn))
            if journal is None:  # snapshot mode: nothing past this seq was handed out
                lease.write(store.state, written.seq)
        except Exception as error:  # the journal still has it all: the next start replays
            log.error("final snapshot failed; the journal is kept", extra=fields(error=error))
        if journal is not None:
            await journal.close()

    def _make_link(self) -> None:
        """[global]: the link to Redis, started once the daemon serves (a Redis that does
        not answer is a degraded link, health "budgetd.global" NOT_SERVING, not a failed
        start)."""
        scaleout = self.settings.scaleout
        if not scaleout.enabled:
            return
        from budgetd.scaleout.link import Link, SidecarIdError, sidecar_id  # noqa: PLC0415

        try:
            sidecar = sidecar_id(scaleout, self.state.path if self.state else None)
        except SidecarIdError as error:
            raise StartError(str(error)) from None
        self.health.set(HEALTH_GLOBAL, health_pb2.HealthCheckResponse.NOT_SERVING)
        link = Link(self.runtime, scaleout, sidecar, self._on_link_health)
        self.link = link
        self.runtime.link_status = lambda: LinkStatus(
            scaleout.shown_url(), sidecar, link.leaser.reachable, link.leaser.calls
        )

    def _on_link_health(self, reachable: bool) -> None:
        status = health_pb2.HealthCheckResponse
        if not self.health.draining:
            self.health.set(HEALTH_GLOBAL, status.SERVING if reachable else status.NOT_SERVING)

    def _on_journal_health(self, problem: str | None) -> None:
        self.runtime.refusing = problem
        status = health_pb2.HealthCheckResponse
        self._set_health(status.NOT_SERVING if problem else status.SERVING)

    async def _snapshots(self) -> None:
        """A snapshot every interval (skipped when nothing changed since the last one)."""
        runtime, last_reason = self.runtime, ""
        while True:
            await asyncio.sleep(self.settings.snapshot_interval_s)
            store = runtime.store
            if store is None or runtime.lsn == store.snapshot_lsn or runtime.refusing:
                continue
            try:
                await runtime.snapshot()
                last_reason = ""
            except Exception as error:  # logged once per distinct reason, retried next time
                if str(error) != last_reason:
                    log.error("snapshot failed", extra=fields(error=error))
                    last_reason = str(error)

    async def _tick(self) -> None:
        """Drive the core's clock: expire holds and runs, roll windows."""
        runtime = self.runtime
        while True:
            await asyncio.sleep(self.settings.tick_s)
            if runtime.refusing:
                continue  # the journal cannot take it; the next tick catches up
            before = runtime.assigned_seq
            try:
                _, durable = runtime.submit("expire", {})
                after = runtime.assigned_seq
                if durable is not None:
                    await asyncio.shield(durable)
            except Exception as error:
                log.error("expiry failed", extra=fields(error=error))
                continue
            if after != before:
                _log_expiries(runtime.events, before, after)

    async def _collector(self) -> None:
        """Keep the oldest generation small (budgetd.tuning)."""
        collector = self.runtime.collector
        while True:
            await asyncio.sleep(MAINTAIN_EVERY_S)
            collector.maintain()

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
        self._reload_credentials()
        asyncio.get_running_loop().create_task(self._reload(path), name="budgetd-reload")

    def _reload_credentials(self) -> None:
        """Token files and TLS files, each all or nothing: what cannot be read keeps
        what is in force (and says why). [auth] itself changes with a restart."""
        try:
            count = self.access.reload_tokens(self.settings)
        except TokenFileError as error:
            log.error("tokens reload rejected; keeping the current ones", extra=fields(error=error))
        else:
            if count is not None:
                log.info("tokens reloaded", extra=fields(tokens=count))
        tls = self.access.tls
        if tls is not None:
            try:
                tls.reload()
            except TlsError as error:
                log.error(
                    "tls reload rejected; keeping the current files", extra=fields(error=error)
                )
            else:
                log.info("tls reloaded", extra=fields(cert_file=str(tls.files.cert_file)))

    async def _reload(self, path: Path) -> None:
        try:
            text = await _settled_text(path)
            found = config.reload_policies(
                path, self.settings.limits, text, global_enabled=self.settings.scaleout.enabled
            )
        except config.ConfigError as error:
            log.error("reload rejected; keeping the current policies", extra=fields(error=error))
            return
        before = self._written
        if before and not before & found.written and not found.may_replace_all:
            # An emptied or half-written file looks like this: refuse, say how to mean it.
            shown = sorted(before)
            log.error(
                "reload rejected; keeping the current policies",
                extra=fields(
                    error=f"{path}: would remove every policy the file wrote ({len(shown)}: "
                    f"{', '.join(shown[:5])}{', ...' if len(shown) > 5 else ''}) and keep "
                    "none; set reload_may_replace_all = true in the file if that is meant"
                ),
            )
            return
        if await self._apply_file_policies("reload", found.policies):
            self._written = found.written

    async def _apply_file_policies(
        self, why: str, policies: tuple[Policy, ...] | None = None
    ) -> bool:
        """One atomic core operation: the file's policies replace the file's policies;
        those put over the API stay. Logged by name. False: the engine refused them."""
        wanted = self.settings.policies if policies is None else policies
        try:
            result, durable = self.runtime.submit("replace_policies", {"policies": wanted})
        except Exception as error:  # nothing changed: the engine checks all before any
            log.error(
                f"{why}: policies rejected; keeping the current ones", extra=fields(error=error)
            )
            return False
        if durable is not None:
            try:
                await self.runtime.until_durable(durable)
            except Exception as error:  # applied, but its record may not survive a crash
                log.warning(
                    f"{why}: policies applied, not yet durable; the next start reads the "
                    "file again",
                    extra=fields(error=error),
                )
                return True
        log.info(
            "policies reloaded" if why == "reload" else "policies from the config file",
            extra=fields(
                added=list(result.added), changed=list(result.changed), removed=list(result.removed)
            ),
        )
        return True


async def _settled_text(path: Path) -> str:
    """The file's text once two reads `SETTLE_S` apart agree: a file being written in
    place is not read half-way as if it were whole. One that keeps changing for
    `SETTLE_TRIES` reads is refused."""
    text = config.read_text(path)
    for _ in range(SETTLE_TRIES):
        await asyncio.sleep(SETTLE_S)
        again = config.read_text(path)
        if again == text:
            return text
        text = again
    raise config.ConfigError(str(path), "", f"still changing after {SETTLE_TRIES * SETTLE_S:g} s")


def _warn_if_unreachable(socket: Path) -> None:
    closed = closed_directory(socket)
    if closed is not None:
        log.warning(
            "other users have roles ([auth.unix]) but cannot reach the socket: a directory "
            "above it is closed to them; choose a socket in a directory they can traverse",
            extra=fields(socket=str(socket), directory=str(closed)),
        )


def _log_expiries(events: EventLog, after_seq: int, through_seq: int) -> None:
    """One summary line per tick (a tick can expire thousands), the ids at debug level."""
    # The tick's events, from the log (journal mode publishes them once durable).
    fresh = [e for seq, e in events.since(after_seq) if seq <= through_seq]
    holds = [e.reservation_id for e in fresh if isinstance(e, ev.ReservationExpired)]
    runs = [e.run_id for e in fresh if isinstance(e, ev.RunEnded)]
    if holds or runs:
        log.info("expired", extra=fields(reservations=len(holds), runs=len(runs)))
        if log.isEnabledFor(logging.DEBUG):
            log.debug("expired ids", extra=fields(reservations=holds[:100], runs=runs[:100]))
