"""Length-prefixed, checksummed frames: the unit of every file in the state directory.

A frame is a 12-byte header — payload length (u64, big-endian) and the CRC-32 of the
payload (u32) — followed by the payload. A reader stops at the first frame that is
short or fails its checksum and reports where the valid prefix ends, so a torn write
(the tail of a crash) is found and cut, never half-applied.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

HEADER = struct.Struct(">QI")
JSON_START = b'{"'
MAX_FRAME_BYTES = 1 << 34  # 16 GiB: a bigger length field is garbage, not a frame


def frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


@dataclass(frozen=True, slots=True)
class Damage:
    """Where the valid prefix of a file ends and why the next bytes are not a frame."""

    offset: int
    reason: str


def frame_follows(data: bytes, offset: int) -> bool:
    """Is there a valid frame anywhere after the damage at `offset`? Then the damage is
    not a torn tail (a write the crash cut short) but corruption of what was written.
    Every payload budgetd writes is a JSON object, so candidates are the `{"` that a
    header could precede (found by bytes.find, not by trying every offset)."""
    size = len(data)
    at = data.find(JSON_START, offset + HEADER.size + 1)
    while at != -1:
        start = at - HEADER.size
        length, checksum = HEADER.unpack_from(data, start)
        if at + length <= size and zlib.crc32(data[at : at + length]) == checksum:
            return True
        at = data.find(JSON_START, at + 1)
    return False


def read_frames(data: bytes) -> tuple[list[bytes], Damage | None]:
    """Every valid frame from the start of `data`, and the damage after them (None when
    the data ends exactly at a frame boundary)."""
    payloads: list[bytes] = []
    for payload, damage in iter_frames(data):
        if damage is not None:
            return payloads, damage
        payloads.append(payload)
    return payloads, None


def iter_frames(data: bytes) -> Iterator[tuple[bytes, Damage | None]]:
    offset, size = 0, len(data)
    while offset < size:
        if size - offset < HEADER.size:
            yield b"", Damage(offset, f"{size - offset} bytes where a frame header needs 12")
            return
        length, checksum = HEADER.unpack_from(data, offset)
        start = offset + HEADER.size
        if length > MAX_FRAME_BYTES or start + length > size:
            yield b"", Damage(offset, f"frame of {length} bytes runs past the end")
            return
        payload = data[start : start + length]
        if zlib.crc32(payload) != checksum:
            yield b"", Damage(offset, "checksum mismatch")
            return
        yield payload, None
        offset = start + length
