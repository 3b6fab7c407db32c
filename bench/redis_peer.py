"""The Redis + Lua peer of the side-by-side bench: what a budget check-and-consume costs
when it is one EVALSHA on a Redis server, the usual way to build this without budgetd.

`RedisServer` starts `redis-server` on loopback (a free TCP port and a Unix socket, no
persistence: `--save '' --appendonly no`), and the load generator (`bench.loadgen`,
operations `redis` and `redis_pipelined`) drives it with redis.asyncio over hiredis.

The script does what one budgetd Consume does to the bench's policy set, in Redis
terms: four counters (per-thread, per-agent, daily, per-model, as the four ledgers one
call touches), each checked against its cap, then all INCRBY'd when every one fits;
it answers the decision (1 = allowed and counted, 0 = denied) and which key blocked.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

CHECK_AND_CONSUME = """
local amount = tonumber(ARGV[1])
for i = 1, #KEYS do
  local used = tonumber(redis.call('GET', KEYS[i]) or '0')
  if used + amount > tonumber(ARGV[i + 1]) then
    return {0, i}
  end
end
for i = 1, #KEYS do
  redis.call('INCRBY', KEYS[i], amount)
end
return {1, 0}
"""
# Caps as large as the bench policies' (budgetd.core's bench set): nothing is ever denied,
# so every call does the whole check and the four increments.
CAPS = (10**11, 10**12, 10**12, 10**15)
AMOUNT = 200  # 120 input + 80 output tokens, as the budgetd cells consume
PIPELINE_DEPTH = 64  # EVALSHA per round trip in `redis_pipelined`


def keys_for(agent: str, thread: str, model: str) -> list[bytes]:
    """The four counters one call checks and counts, like budgetd's four ledgers (as
    bytes: redis-py then sends them as they are, with no encoding per call)."""
    return [
        f"per-thread:{thread}".encode(),
        f"per-agent:{agent}".encode(),
        b"daily",
        f"model-usage:{model}".encode(),
    ]


def script_args() -> list[bytes]:
    return [str(n).encode() for n in (AMOUNT, *CAPS)]


def missing_reason() -> str | None:
    """Why the peer cannot be measured here, or None when redis-server is on PATH."""
    if shutil.which("redis-server") is None:
        return "redis-server is not on PATH (apt-get install redis-server to measure it)"
    try:
        import redis.asyncio  # noqa: F401, PLC0415 - only the peer's cells need it
    except ImportError:
        return "redis-py is not installed (make setup installs redis[hiredis])"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """A redis-server of our own on loopback, stopped by `stop()` (also on error)."""

    def __init__(
        self,
        home: Path,
        *,
        port: int | None = None,
        config: Path | None = None,
        extra: Sequence[str] = (),
    ) -> None:
        """`port` (else a free one), a `config` file read first (a Sentinel's: it
        rewrites it) and `extra` arguments after the defaults (e.g. `--sentinel`)."""
        self.home = home
        self.port = free_port() if port is None else port
        self.socket = home / "redis.sock"
        self.config = config
        self.extra = tuple(extra)
        self.process = self._spawn()
        try:
            self._wait_ready(home / "redis.log")
        except BaseException:
            self.stop()
            raise

    def _spawn(self) -> subprocess.Popen[bytes]:
        home = self.home
        return subprocess.Popen(
            [
                "redis-server",
                *([str(self.config)] if self.config is not None else []),
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--unixsocket",
                str(self.socket),
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(home),
                "--logfile",
                str(home / "redis.log"),
                "--daemonize",
                "no",
                *self.extra,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start(self) -> None:
        """Start it again after `stop()`, on the same port, socket and directory."""
        if self.process.poll() is None:
            raise RuntimeError("redis-server is already running")
        self.process = self._spawn()
        try:
            self._wait_ready(self.home / "redis.log")
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, log: Path) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: {log}")
            if self.socket.exists() and self._pings():
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING within 30 s")

    def _pings(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                # A server with a password answers, refusing: it is up all the same.
                return conn.recv(16).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    @property
    def pid(self) -> int:
        return self.process.pid

    def target(self, transport: str) -> str:
        """The load generator's --target for this transport (`uds` or `tcp`)."""
        return f"unix:{self.socket}" if transport == "uds" else f"127.0.0.1:{self.port}"

    def version(self) -> str:
        out = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
        return out.split("v=", 1)[1].split()[0] if "v=" in out else out.strip()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
