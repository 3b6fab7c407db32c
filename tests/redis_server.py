"""A real redis-server a test starts: `bench.redis_peer.RedisServer` with what tests need.

`LocalRedis(home)` runs Debian's `redis-server` on loopback on a free port (and a Unix
socket) in `home`, persistence off unless `persistent=True` (an append-only file, fsync
on every write), and returns once it answers PING. `stop()` shuts it down, `restart()`
starts it again on the same port (a Redis restart mid-load: its script cache is empty),
`kill()` ends it with SIGKILL. `sentinel(home, master)` starts a Sentinel watching one,
`cluster_node(home)` a one-node Redis Cluster holding every slot.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Sequence
from pathlib import Path

import redis

from bench.redis_peer import RedisServer, free_port
from tests.waiting import wait_until

MASTER_NAME = "mymaster"
WAIT_S = 30.0  # generous: a loaded CI machine is slow, a healthy Redis is not


def require_redis_server() -> None:
    if shutil.which("redis-server") is None:
        raise RuntimeError(
            "no `redis-server` on PATH: tests/scaleout run a real Redis; "
            "`.ci/run` installs Debian's `redis-server` package (apt-get install redis-server)"
        )


class LocalRedis(RedisServer):
    """A redis-server of this test's own; also a Sentinel or a Cluster node (`extra`)."""

    def __init__(
        self,
        home: Path,
        *,
        persistent: bool = False,
        config: Path | None = None,
        extra: Sequence[str] = (),
        port: int | None = None,
    ) -> None:
        require_redis_server()
        home.mkdir(parents=True, exist_ok=True)
        durable = ("--appendonly", "yes", "--appendfsync", "always") if persistent else ()
        super().__init__(home, port=port, config=config, extra=(*durable, *extra))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def unix_url(self) -> str:
        return f"unix://{self.socket}"

    def client(self) -> redis.Redis:
        """A plain synchronous client, to look at the keys a test made."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=WAIT_S)

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=WAIT_S)

    def refuses(self) -> bool:
        """Nothing listens on its port any more."""
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return True
        return False


def sentinel(home: Path, master: LocalRedis, name: str = MASTER_NAME) -> LocalRedis:
    """A Sentinel monitoring `master` as `name` (quorum 1), once it reports it."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / "sentinel.conf"  # a Sentinel rewrites its config file: its own copy
    config.write_text(f"sentinel monitor {name} 127.0.0.1 {master.port} 1\n")
    watcher = LocalRedis(home, config=config, extra=("--sentinel",))
    with redis.Redis(host="127.0.0.1", port=watcher.port, socket_timeout=WAIT_S) as conn:
        wait_until(
            lambda: conn.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", name) is not None,
            f"the Sentinel on {watcher.port} knows {name}",
            limit_s=WAIT_S,
        )
    return watcher


def cluster_node(home: Path) -> LocalRedis:
    """A one-node Redis Cluster: every slot on this node, once it says cluster_state:ok.
    The bus port is chosen too (the default, port + 10000, may be out of range)."""
    node = LocalRedis(
        home,
        extra=(
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(home / "nodes.conf"),
            "--cluster-port",
            str(free_port()),
        ),
    )
    try:
        with node.client() as conn:
            conn.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            wait_until(
                lambda: b"cluster_state:ok" in conn.execute_command("CLUSTER", "INFO"),
                "the one-node cluster is ok",
                limit_s=WAIT_S,
            )
    except BaseException:
        node.stop()
        raise
    return node
