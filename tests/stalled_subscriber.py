"""A Subscribe call from a client that stops reading, in raw HTTP/2 over a socket.

A gRPC library grants flow-control window as it reads, so it cannot be made to stop.
This client announces a small INITIAL_WINDOW_SIZE and then never sends WINDOW_UPDATE
(until `grant`): once the window is full the server's sends block, exactly as for a
client that stopped reading. It does answer SETTINGS and PING, so that the connection
itself stays healthy (keepalive would close a dead one, which is not what is tested),
and it collects what the server sends on the call's stream.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import urllib.parse
from collections.abc import Callable
from types import TracebackType

from budgetd.v1 import budget_pb2 as pb
from tests.auth_support import ACK, PING, PREFACE, SETTINGS, frame

DATA, HEADERS, RST_STREAM, WINDOW_UPDATE = 0x0, 0x1, 0x3, 0x8
END_STREAM, END_HEADERS = 0x1, 0x4
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
STREAM = 1
SUBSCRIBE = b"/budgetd.v1.BudgetService/Subscribe"


def _literal(name: bytes, value: bytes) -> bytes:
    """An HPACK literal field without indexing, new name, no Huffman (RFC 7541 6.2.2)."""
    assert len(name) < 0x7F and len(value) < 0x7F  # one-byte lengths
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def subscribe_frames(request: pb.SubscribeRequest, stream: int = STREAM) -> bytes:
    """HEADERS and DATA (the whole request, END_STREAM) of a Subscribe call."""
    fields = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", SUBSCRIBE),
        (b":authority", b"localhost"),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
    ]
    block = b"".join(_literal(name, value) for name, value in fields)
    body = request.SerializeToString()
    message = b"\x00" + len(body).to_bytes(4, "big") + body  # not compressed, its length
    return frame(HEADERS, END_HEADERS, block, stream) + frame(DATA, END_STREAM, message, stream)


def window_settings(window: int) -> bytes:
    """A SETTINGS frame announcing INITIAL_WINDOW_SIZE `window`."""
    setting = SETTINGS_INITIAL_WINDOW_SIZE.to_bytes(2, "big") + window.to_bytes(4, "big")
    return frame(SETTINGS, payload=setting)


def header_value(block: bytes, name: bytes) -> str | None:
    """`name`'s value in a header block, as gRPC's encoder writes a new name: a literal
    with its length in one byte and no Huffman coding (each call here has its own
    connection, so no field comes from the dynamic table)."""
    at = block.find(bytes([len(name)]) + name)
    if at < 0:
        return None
    at += 1 + len(name)
    size = block[at]
    assert size < 0x7F, f"{name!r}: a Huffman-coded or long value"
    return urllib.parse.unquote(block[at + 1 : at + 1 + size].decode())


class StalledSubscriber:
    """A Subscribe call on its own connection whose flow-control window is `window`
    bytes and never grows until `grant`."""

    def __init__(
        self, sock: socket.socket, request: pb.SubscribeRequest, window: int, wait_s: float
    ) -> None:
        self.sock = sock
        self.wait_s = wait_s
        self.headers: list[bytes] = []  # header blocks of the call: initial, then trailers
        self.data = bytearray()  # the call's DATA payloads, joined
        self.ended = False  # trailers, RST_STREAM or the connection closed
        self._changed = threading.Condition()
        self._sending = threading.Lock()
        self._send(PREFACE + window_settings(window) + subscribe_frames(request))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def __enter__(self) -> StalledSubscriber:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _send(self, data: bytes) -> None:
        with self._sending:  # the reader thread answers pings meanwhile
            self.sock.sendall(data)

    def _read(self) -> None:
        buffer = b""
        try:
            while data := self.sock.recv(65536):
                buffer += data
                while len(buffer) >= 9 and len(buffer) >= 9 + int.from_bytes(buffer[:3], "big"):
                    size = int.from_bytes(buffer[:3], "big")
                    kind, flags, stream = buffer[3], buffer[4], int.from_bytes(buffer[5:9], "big")
                    self._frame(kind, flags, stream, buffer[9 : 9 + size])
                    buffer = buffer[9 + size :]
        except OSError:
            pass  # closed by `close`, or reset by the server
        with self._changed:
            self.ended = True
            self._changed.notify_all()

    def _frame(self, kind: int, flags: int, stream: int, payload: bytes) -> None:
        if kind == SETTINGS and not flags & ACK:
            self._send(frame(SETTINGS, ACK))
        elif kind == PING and not flags & ACK:
            self._send(frame(PING, ACK, payload))
        elif stream == STREAM:
            with self._changed:
                if kind == HEADERS:
                    self.headers.append(payload)
                elif kind == DATA:
                    self.data += payload
                self.ended = self.ended or kind == RST_STREAM or bool(flags & END_STREAM)
                self._changed.notify_all()

    def until(self, condition: Callable[[], bool], what: str) -> None:
        with self._changed:
            if not self._changed.wait_for(condition, timeout=self.wait_s):
                raise AssertionError(f"no {what} in {self.wait_s} s")

    def resume_after(self) -> str | None:
        """The initial metadata's `budgetd-resume-after`."""
        self.until(lambda: bool(self.headers), "initial metadata")
        return header_value(self.headers[0], b"budgetd-resume-after")

    def messages(self) -> list[pb.SubscribeResponse]:
        """The whole messages received so far."""
        found, data = [], bytes(self.data)
        while len(data) >= 5 and len(data) >= 5 + int.from_bytes(data[1:5], "big"):
            size = int.from_bytes(data[1:5], "big")
            found.append(pb.SubscribeResponse.FromString(data[5 : 5 + size]))
            data = data[5 + size :]
        return found

    def grant(self, size: int = 1 << 24) -> None:
        """Read again: window for the stream and the connection."""
        increment = size.to_bytes(4, "big")
        self._send(frame(WINDOW_UPDATE, 0, increment, STREAM) + frame(WINDOW_UPDATE, 0, increment))

    def status(self) -> tuple[int, str]:
        """The call's grpc-status and grpc-message, once the trailers came."""
        self.until(lambda: self.ended, "end of the call")
        assert len(self.headers) == 2, f"no trailers: {self.headers}"
        code = header_value(self.headers[1], b"grpc-status")
        assert code is not None, self.headers[1]
        return int(code), header_value(self.headers[1], b"grpc-message") or ""

    def close(self) -> None:
        with contextlib.suppress(OSError):  # already closed by the server
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the reader's recv
        self.sock.close()
        self._reader.join(timeout=self.wait_s)


def stalled_on_unix(
    path: str, request: pb.SubscribeRequest, window: int, wait_s: float
) -> StalledSubscriber:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    return StalledSubscriber(sock, request, window, wait_s)
