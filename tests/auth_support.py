"""Helpers of the auth tests: certificates made in-process, token files, raw HTTP/2.

Certificates come from the `cryptography` package (a development dependency): a CA,
server and client certificates signed by it, written as PEM files.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Pem:
    key: bytes
    cert: bytes

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        cert, key = directory / f"{name}.pem", directory / f"{name}.key"
        cert.write_bytes(self.cert)
        key.write_bytes(self.key)
        key.chmod(0o600)
        return cert, key


class Authority:
    """A test CA that signs server and client certificates."""

    def __init__(self, name: str = "budgetd test CA") -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )

    @property
    def pem(self) -> bytes:
        return self._cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, common_name: str, sans: Sequence[str] = (), server: bool = False) -> Pem:
        """A certificate for `common_name`; `sans` are DNS names, or URIs when they have
        a scheme (spiffe://...)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + _DAY)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        names: list[x509.GeneralName] = [
            x509.UniformResourceIdentifier(san) if "://" in san else x509.DNSName(san)
            for san in sans
        ]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return Pem(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            cert.public_bytes(serialization.Encoding.PEM),
        )

    def server(self) -> Pem:
        return self.issue("localhost", ["localhost"], server=True)


def token_file(path: Path, *entries: Mapping[str, object]) -> Path:
    """A token file (0600) from entries with a plain `token`, stored as its sha256."""
    blocks = []
    for entry in entries:
        lines = ["[[tokens]]"]
        for given, raw in entry.items():
            key, value = given, raw
            if given == "token":
                key, value = "sha256", hashlib.sha256(str(raw).encode()).hexdigest()
            if isinstance(value, dict):
                pairs = ", ".join(f'"{k}" = "{v}"' for k, v in value.items())
                lines.append(f"{key} = {{ {pairs} }}")
            elif isinstance(value, str):
                lines.append(f'{key} = "{value}"')
            else:
                lines.append(f"{key} = {value}")
        blocks.append("\n".join(lines))
    # Written beside and renamed: a reader never sees half a file.
    partial = path.with_name(path.name + ".partial")
    partial.write_text("\n\n".join(blocks) + "\n")
    partial.chmod(0o600)
    os.replace(partial, path)
    return path


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


# ---------------------------------------------------------------------------------------
# Raw HTTP/2, for connections a gRPC library would never make
# ---------------------------------------------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS, PING, GOAWAY = 0x4, 0x6, 0x7
ACK = 0x1
ENHANCE_YOUR_CALM = 0xB


def frame(kind: int, flags: int = 0, payload: bytes = b"", stream: int = 0) -> bytes:
    return (
        len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload
    )


def frames(sock: socket.socket) -> Iterator[tuple[int, int, bytes]]:
    """(type, flags, payload) of each frame the server sends, until it closes."""
    buffer = b""
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return
        if not data:
            return
        buffer += data
        while len(buffer) >= 9:
            size = int.from_bytes(buffer[:3], "big")
            if len(buffer) < 9 + size:
                break
            yield buffer[3], buffer[4], buffer[9 : 9 + size]
            buffer = buffer[9 + size :]


def frames_of(data: bytes) -> list[tuple[int, int, bytes]]:
    """The whole frames in `data` (what a server sent before it closed)."""
    found = []
    while len(data) >= 9:
        size = int.from_bytes(data[:3], "big")
        if len(data) < 9 + size:
            break
        found.append((data[3], data[4], data[9 : 9 + size]))
        data = data[9 + size :]
    return found


def goaway(payload: bytes) -> tuple[int, bytes]:
    """The error code and debug text of a GOAWAY frame."""
    return int.from_bytes(payload[4:8], "big"), payload[8:]
