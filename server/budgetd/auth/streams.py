"""Bounds on long-lived streams, apart from unary calls.

Subscribe, health Watch, reflection and ConsumeStream hold a call open for as long as
the client likes; idle ones cost a slot and little else, so a client could open
thousands. They are counted here, per connection and in total, and refused past either
bound (RESOURCE_EXHAUSTED naming it), while unary calls have their own, much larger,
budget in gRPC's `maximum_concurrent_rpcs`: a flood of streams cannot starve Check,
Reserve or Consume.

The connection is the call's peer address. Every caller on the owner-only Unix socket
has the same one ("unix:": gRPC sees no address for an unbound client socket), and they
are all the daemon's own user, so that peer counts in the total only.
"""

from __future__ import annotations

OWNER_SOCKET_PEER = "unix:"


class StreamBounds:
    def __init__(self, max_total: int, max_per_connection: int) -> None:
        self.max_total = max_total
        self.max_per_connection = max_per_connection
        self.total = 0
        # Only connections with an open stream are in the map, so it is bounded by
        # `max_total`.
        self._by_peer: dict[str, int] = {}

    def open(self, peer: str) -> str | None:
        """Count a new stream of `peer`, or say which bound refuses it."""
        if self.total >= self.max_total:
            return (
                f"server limit connections.max_streams_total={self.max_total} reached "
                "(long-lived streams: Subscribe, ConsumeStream, health Watch, reflection)"
            )
        if peer != OWNER_SOCKET_PEER:
            count = self._by_peer.get(peer, 0)
            if count >= self.max_per_connection:
                return (
                    "limit connections.max_streams_per_connection="
                    f"{self.max_per_connection} reached on this connection"
                )
            self._by_peer[peer] = count + 1
        self.total += 1
        return None

    def close(self, peer: str) -> None:
        """The end of a stream that `open` counted."""
        self.total -= 1
        if peer != OWNER_SOCKET_PEER:
            count = self._by_peer[peer] - 1
            if count:
                self._by_peer[peer] = count
            else:
                del self._by_peer[peer]

    def open_on(self, peer: str) -> int:
        return self._by_peer.get(peer, 0)
