"""TLS for the TCP listener, and client certificates (mTLS) as identities.

The server's certificate, key and (for mTLS) the CA that signs client certificates are
files. They are checked at start with the standard library's TLS (a key that does not
match its certificate is a configuration error, not a failed handshake later), and read
again on SIGHUP: gRPC asks `_fetch` before each handshake, which hands over a reloaded
configuration once, so new connections use the new files and open ones keep theirs. A
reload that fails keeps the files in force.

With a client CA, every TCP connection must present a certificate it signed; its
identities (the subject alternative names, or the common name when it has none, as gRPC
reports them) map to roles in `[[auth.certificates]]`.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import grpc

from budgetd.auth.caller import Caller

MAX_PEM_BYTES = 1 << 20  # a certificate chain, a key or a CA bundle
MAX_CERTIFICATE_IDENTITIES = 10_000  # entries of [[auth.certificates]]


class TlsError(Exception):
    """A TLS file that cannot be used: the config key naming it and why."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None  # set: client certificates required (mTLS)


@dataclass(frozen=True, slots=True)
class Material:
    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None


def _read(path: Path, key: str) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(MAX_PEM_BYTES + 1)
    except OSError as error:
        raise TlsError(key, f"cannot read {path}: {error.strerror or error}") from None
    if len(data) > MAX_PEM_BYTES:
        raise TlsError(key, f"{path} is larger than {MAX_PEM_BYTES} bytes")
    if b"-----BEGIN " not in data:
        raise TlsError(key, f"{path} is not PEM")
    return data


def read_material(files: TlsFiles) -> Material:
    """The three files, checked together as a TLS server would use them."""
    cert = _read(files.cert_file, "tls.cert_file")
    key = _read(files.key_file, "tls.key_file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(files.cert_file, files.key_file)
    except ssl.SSLError as error:
        reason = error.reason or str(error)
        if "MISMATCH" in reason:
            raise TlsError(
                "tls.key_file", f"{files.key_file} is not the key of tls.cert_file"
            ) from None
        raise TlsError(
            "tls.cert_file", f"{files.cert_file} with {files.key_file}: {reason}"
        ) from None
    except OSError as error:
        raise TlsError("tls.cert_file", f"cannot read: {error.strerror or error}") from None
    ca = None
    if files.client_ca_file is not None:
        ca = _read(files.client_ca_file, "tls.client_ca_file")
        try:
            context.load_verify_locations(cadata=ca.decode("ascii", "replace"))
        except ssl.SSLError as error:
            raise TlsError(
                "tls.client_ca_file", f"{files.client_ca_file}: {error.reason or error}"
            ) from None
    # The checks read the files by path: a file replaced meanwhile is read again later.
    if (
        _read(files.cert_file, "tls.cert_file") != cert
        or _read(files.key_file, "tls.key_file") != key
    ):
        raise TlsError("tls.cert_file", "changed while being read; try again")
    return Material(cert, key, ca)


class Tls:
    """The listener's credentials, whose files a reload replaces for new connections."""

    def __init__(self, files: TlsFiles, material: Material | None = None) -> None:
        self.files = files
        self._initial = _configuration(material or read_material(files))
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self._lock = threading.Lock()  # gRPC calls _fetch from its own threads
        self.reloads = 0

    @property
    def mutual(self) -> bool:
        return self.files.client_ca_file is not None

    def credentials(self) -> grpc.ServerCredentials:
        # gRPC's contract: the fetcher returns None for "no change" (the stubs forget it).
        fetch = cast(Callable[[], grpc.ServerCertificateConfiguration], self._fetch)
        return grpc.dynamic_ssl_server_credentials(
            self._initial, fetch, require_client_authentication=self.mutual
        )

    def reload(self) -> None:
        """Read the files again; the next handshake uses them. Raises TlsError."""
        configuration = _configuration(read_material(self.files))
        with self._lock:
            self._pending = configuration
        self.reloads += 1

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            pending, self._pending = self._pending, None
        return pending


def _configuration(material: Material) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(material.private_key, material.cert_chain)], root_certificates=material.client_ca
    )


@dataclass(frozen=True, slots=True)
class CertificateRoles:
    """Callers by client-certificate identity (a SAN, or the CN without SANs)."""

    by_identity: Mapping[str, Caller]

    def caller(self, identities: Iterable[bytes]) -> Caller | None:
        """The caller of the first listed identity of a verified certificate."""
        for identity in identities:
            caller = self.by_identity.get(identity.decode("utf-8", "replace"))
            if caller is not None:
                return caller
        return None

    def unmapped(self, identities: Iterable[bytes]) -> Caller:
        first = next(iter(identities), b"?")
        shown = first.decode("utf-8", "replace")
        return Caller(
            f"client certificate {shown!r}", None, "auth.certificates lists none of its identities"
        )
