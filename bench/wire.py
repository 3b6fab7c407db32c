"""Request messages of the load generator, encoded straight to protobuf bytes.

The load generator must cost as little as it can, so that the server is what limits a
cell: building a Batch of 64 ConsumeRequests through the protobuf classes costs several
hundred microseconds per message of the load process's CPU, which on a 2-core machine is
taken from the server. The few messages it sends are simple (strings, one map, one
pre-encoded Usage), so they are joined from bytes here; tests check each against the
protobuf classes' own encoding.
"""

from __future__ import annotations

from budgetd.v1 import budget_pb2 as pb


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): strings, bytes, messages, map entries."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def labels_field(number: int, labels: dict[str, str]) -> bytes:
    """A map<string, string> field: one entry message (key = 1, value = 2) per label."""
    return b"".join(
        field(number, field(1, key.encode()) + field(2, value.encode()))
        for key, value in labels.items()
    )


class Encoder:
    """Encodes the bench's requests; the Usage and the estimate are fixed, pre-encoded."""

    def __init__(self, usage: pb.Usage, estimate: pb.Usage) -> None:
        self.usage = usage.SerializeToString()
        self.estimate = estimate.SerializeToString()

    def consume(self, request_id: str, labels: dict[str, str]) -> bytes:
        return field(1, request_id.encode()) + labels_field(2, labels) + field(3, self.usage)

    def check(self, labels: dict[str, str]) -> bytes:
        return labels_field(1, labels) + field(2, self.estimate)

    def reserve(self, request_id: str, labels: dict[str, str]) -> bytes:
        return field(1, request_id.encode()) + labels_field(2, labels) + field(3, self.estimate)

    def commit(self, request_id: str, reservation_id: str) -> bytes:
        return (
            field(1, request_id.encode()) + field(2, reservation_id.encode()) + field(3, self.usage)
        )

    @staticmethod
    def batch_operation(kind: str, request: bytes) -> bytes:
        """A BatchOperation: check is field 1 of its oneof, consume field 5."""
        return field(1 if kind == "check" else 5, request)

    @staticmethod
    def batch(operations: list[bytes]) -> bytes:
        return b"".join(field(1, operation) for operation in operations)

    @staticmethod
    def consume_stream(sequence: int, request: bytes) -> bytes:
        return b"\x08" + varint(sequence) + field(2, request)

    @staticmethod
    def batch_stream(sequence: int, batch: bytes) -> bytes:
        return b"\x08" + varint(sequence) + field(2, batch)
