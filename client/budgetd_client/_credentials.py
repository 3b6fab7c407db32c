"""What a client proves to the daemon: a bearer token, TLS, a client certificate.

The daemon (`budgetd.auth`) identifies a TCP caller by `authorization: Bearer <token>`
call metadata, else by its client certificate (mTLS), and refuses a call that proves
nothing. Everything here is read once, when the client is made: a file that is missing,
unreadable or not what it should be is a `CredentialsError` naming the file then, not a
failed handshake or a refusal later, and never a traceback.

Each option is an argument, else its environment variable (`ENV_*` below); an argument
of a group (`token=` / `token_file=`, or any `tls_*`) makes the environment of that group
ignored, so a program that says what it wants gets exactly that (`tls=True` alone only
asks for TLS: the files may still come from the environment). A token is never sent
in plaintext beyond loopback: whoever sees it can spend as its holder.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from budgetd_client.errors import CredentialsError

ENV_TOKEN = "BUDGETD_TOKEN"
ENV_TOKEN_FILE = "BUDGETD_TOKEN_FILE"
ENV_TLS = "BUDGETD_TLS"
ENV_TLS_CA = "BUDGETD_TLS_CA"
ENV_TLS_CERT = "BUDGETD_TLS_CERT"
ENV_TLS_KEY = "BUDGETD_TLS_KEY"
ENV_TLS_SERVER_NAME = "BUDGETD_TLS_SERVER_NAME"

MAX_TOKEN_CHARS = 4096  # the daemon refuses longer ones unhashed (budgetd.auth.tokens)
MAX_TOKEN_FILE_BYTES = 64 * 1024  # a token and a comment or two, never a whole file tree
MAX_PEM_BYTES = 1 << 20  # a certificate chain, a key or a CA bundle (as the daemon)
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")

PathLike = str | os.PathLike[str]


@dataclass(frozen=True, slots=True)
class Tls:
    """The PEM bytes of a TLS connection. `ca` None: the system's trusted roots;
    `cert`/`key` None: no client certificate. Key material is kept out of repr()."""

    ca: bytes | None = None
    cert: bytes | None = field(default=None, repr=False)
    key: bytes | None = field(default=None, repr=False)
    server_name: str | None = None

    @property
    def mutual(self) -> bool:
        return self.cert is not None


@dataclass(frozen=True, slots=True)
class Credentials:
    """A token (None: none sent) and TLS (None: plaintext). The token stays out of
    repr(): settings get logged, tokens must not be."""

    token: str | None = field(default=None, repr=False)
    tls: Tls | None = None
    token_source: str = ""  # where the token came from, for error messages

    @property
    def metadata(self) -> tuple[tuple[str, str], ...] | None:
        """The call metadata of every call (None: nothing to add)."""
        if self.token is None:
            return None
        return (("authorization", f"Bearer {self.token}"),)


PLAINTEXT = Credentials()


def resolve(
    *,
    token: str | None = None,
    token_file: PathLike | None = None,
    tls: bool | None = None,
    tls_ca: PathLike | None = None,
    tls_cert: PathLike | None = None,
    tls_key: PathLike | None = None,
    tls_server_name: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Credentials:
    """The credentials of a client's arguments, else of the environment. Raises
    `CredentialsError` for a bad value or file, naming it."""
    env = os.environ if env is None else env
    value, source = _token(token, token_file, env)
    settings = _tls(tls, tls_ca, tls_cert, tls_key, tls_server_name, env)
    return Credentials(value, settings, source)


def _token(
    token: str | None, token_file: PathLike | None, env: Mapping[str, str]
) -> tuple[str | None, str]:
    if token is not None and token_file is not None:
        raise CredentialsError("give token= or token_file=, not both")
    if token is not None:
        return _checked_token(token, "token="), "token="
    if token_file is not None:
        return _read_token(Path(token_file), "token_file="), f"token_file {token_file}"
    from_env, from_file = env.get(ENV_TOKEN, ""), env.get(ENV_TOKEN_FILE, "")
    if from_env and from_file:
        raise CredentialsError(f"${ENV_TOKEN} and ${ENV_TOKEN_FILE} are both set; set one")
    if from_env:
        return _checked_token(from_env, f"${ENV_TOKEN}"), f"${ENV_TOKEN}"
    if from_file:
        where = f"${ENV_TOKEN_FILE}"
        return _read_token(Path(from_file), where), f"{where}={from_file}"
    return None, ""


def _checked_token(value: object, where: str) -> str:
    """A token as the daemon takes it: one word of printable ASCII (gRPC metadata
    values are printable ASCII; a newline would end the header)."""
    if not isinstance(value, str):
        raise CredentialsError(f"{where}: the token must be a str, not {type(value).__name__}")
    text = value.strip()
    if not text:
        raise CredentialsError(f"{where}: the token is empty")
    if len(text) > MAX_TOKEN_CHARS:
        raise CredentialsError(f"{where}: the token is longer than {MAX_TOKEN_CHARS} characters")
    if not all("!" <= char <= "~" for char in text):
        raise CredentialsError(
            f"{where}: the token must be printable ASCII without spaces "
            "(python -m budgetd.auth new makes one)"
        )
    return text


def _read_token(path: Path, where: str) -> str:
    """The token in a file: its text without surrounding whitespace (a trailing
    newline is how editors save it)."""
    data = _read(path, where, MAX_TOKEN_FILE_BYTES)
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise CredentialsError(f"{where} {path}: not ASCII text", path) from None
    try:
        return _checked_token(text, f"{where} {path}")
    except CredentialsError as error:
        raise CredentialsError(error.message, path) from None


def _read(path: Path, where: str, limit: int) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(limit + 1)
    except OSError as error:
        raise CredentialsError(
            f"{where} {path}: cannot read: {error.strerror or error}", path
        ) from None
    if len(data) > limit:
        raise CredentialsError(f"{where} {path}: larger than {limit} bytes", path)
    return data


def _env_flag(env: Mapping[str, str]) -> bool:
    """$BUDGETD_TLS: 1 forces TLS (the system's roots without a CA file); 0 or unset
    leaves it to the TLS variables."""
    raw = env.get(ENV_TLS, "").strip().lower()
    if raw not in _TRUE + _FALSE:
        raise CredentialsError(f"${ENV_TLS} must be 1 or 0 (true/false), not {raw!r}")
    return raw in _TRUE


def _tls(
    tls: bool | None,
    ca: PathLike | None,
    cert: PathLike | None,
    key: PathLike | None,
    server_name: str | None,
    env: Mapping[str, str],
) -> Tls | None:
    """TLS settings: on when asked (`tls=True`, $BUDGETD_TLS=1) or when a TLS file or a
    server name is given; `tls=False` with one of them is a contradiction, not a choice."""
    named = [
        name
        for name, value in (("tls_ca", ca), ("tls_cert", cert), ("tls_key", key),
                            ("tls_server_name", server_name))
        if value is not None
    ]  # fmt: skip
    if tls is False:
        if named:
            raise CredentialsError(f"tls=False, but {', '.join(named)} given")
        return None
    if not named:
        # No TLS argument: the environment's (with tls=True too: the flag says "TLS",
        # the variables may say with which files).
        ca, cert, key, server_name = (
            env.get(name) or None for name in (ENV_TLS_CA, ENV_TLS_CERT, ENV_TLS_KEY,
                                               ENV_TLS_SERVER_NAME)
        )  # fmt: skip
        tls = tls or _env_flag(env)
        if not tls and ca is None and cert is None and key is None and server_name is None:
            return None
    if (cert is None) != (key is None):
        raise CredentialsError("a client certificate needs both tls_cert and tls_key")
    if server_name is not None and not server_name.strip():
        raise CredentialsError("tls_server_name is empty")
    return _material(
        Path(ca) if ca else None, Path(cert) if cert else None, Path(key) if key else None,
        server_name,
    )  # fmt: skip


def _material(ca: Path | None, cert: Path | None, key: Path | None, name: str | None) -> Tls:
    """The files read and checked as a TLS client uses them: a key that is not the
    certificate's, or a CA file with no certificate, is found now."""
    ca_pem = _pem(ca, "tls_ca") if ca else None
    cert_pem = _pem(cert, "tls_cert") if cert else None
    key_pem = _pem(key, "tls_key") if key else None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca is not None and ca_pem is not None:
        try:
            context.load_verify_locations(cadata=ca_pem.decode("ascii", "replace"))
        except ssl.SSLError as error:
            reason = error.reason or error
            raise CredentialsError(f"tls_ca {ca}: no usable CA certificate: {reason}", ca) from None
    if cert is not None and key is not None:
        try:
            context.load_cert_chain(cert, key)
        except ssl.SSLError as error:
            reason = error.reason or str(error)
            if "MISMATCH" in reason:
                raise CredentialsError(
                    f"tls_key {key}: not the key of tls_cert {cert}", key
                ) from None
            raise CredentialsError(f"tls_cert {cert} with tls_key {key}: {reason}", cert) from None
        except OSError as error:
            raise CredentialsError(
                f"tls_cert {cert}: cannot read: {error.strerror or error}", cert
            ) from None
    return Tls(ca_pem, cert_pem, key_pem, name.strip() if name else None)


def _pem(path: Path, option: str) -> bytes:
    data = _read(path, option, MAX_PEM_BYTES)
    if b"-----BEGIN " not in data:
        raise CredentialsError(f"{option} {path}: not a PEM file", path)
    return data


# --- channels -------------------------------------------------------------------------


def tls_options(credentials: Credentials) -> list[tuple[str, Any]]:
    """The name the server's certificate must have, when it is not the target's host
    (a test certificate for "localhost" on 127.0.0.1, a daemon reached by address)."""
    tls = credentials.tls
    if tls is None or tls.server_name is None:
        return []
    return [("grpc.ssl_target_name_override", tls.server_name)]


def _ssl(tls: Tls) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(tls.ca, tls.key, tls.cert)


def open_channel(
    target: str, credentials: Credentials, options: Sequence[tuple[str, Any]]
) -> grpc.Channel:
    """A blocking channel: TLS when the credentials have it, else plaintext. `options`
    should include `tls_options(credentials)`."""
    if credentials.tls is None:
        return grpc.insecure_channel(target, options=options)
    return grpc.secure_channel(target, _ssl(credentials.tls), options=options)


def open_aio_channel(
    target: str,
    credentials: Credentials,
    options: Sequence[tuple[str, Any]],
    interceptors: Sequence[grpc.aio.ClientInterceptor] | None,
) -> grpc.aio.Channel:
    """The asyncio channel of `open_channel` (create it inside its event loop)."""
    if credentials.tls is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(
        target, _ssl(credentials.tls), options=options, interceptors=interceptors
    )


# --- where a token may go ------------------------------------------------------------


def check_transport(target: str, credentials: Credentials) -> None:
    """Refuse to send a token in plaintext beyond loopback. A Unix socket never leaves
    the machine, and loopback TCP never leaves it either; any other address (or one we
    cannot read: a resolver scheme) needs TLS."""
    if credentials.token is None or credentials.tls is not None or is_local(target):
        return
    raise CredentialsError(
        f"refusing to send the bearer token ({credentials.token_source}) in plaintext to "
        f"{target}, which is not a loopback address: use TLS (tls=True, tls_ca=..., or "
        f"${ENV_TLS_CA}), or a Unix socket or 127.0.0.1"
    )


def is_local(target: str) -> bool:
    """Whether a gRPC target is a Unix socket or loopback TCP (every address of it)."""
    if target.startswith(("unix:", "unix-abstract:", "/")):
        return True
    scheme, _, rest = target.partition(":")
    if scheme in ("ipv4", "ipv6"):
        return all(_loopback_host(_host(address)) for address in rest.split(","))
    if scheme == "dns":
        rest = rest.removeprefix("//")
        authority, slash, name = rest.partition("/")
        return _loopback_host(_host(name if slash else authority))
    # host:port, [v6]:port or a bare host; another resolver's target (xds:///...) has
    # no host to tell where it goes, and is not local.
    return _loopback_host(_host(target))


def _host(address: str) -> str:
    """The host of `host:port`, `[v6]:port`, `[v6]` or a bare host."""
    if address.startswith("["):
        return address[1:].partition("]")[0]
    host, colon, port = address.rpartition(":")
    if colon and port.isdigit() and ":" not in host:
        return host
    return address  # no port, or a bare IPv6 address


def _loopback_host(host: str) -> bool:
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name.partition("%")[0]).is_loopback
    except ValueError:
        return False
