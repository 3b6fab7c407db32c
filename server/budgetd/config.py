"""Daemon settings: one TOML file, then `BUDGETD_*` environment variables, then flags.

Everything a user can get wrong is checked here, before the daemon binds or loads
anything, and reported as a `ConfigError` that names the file (or `env` / `flag`), the
key and the reason: an operator fixes a typo from the message alone.

TOML floats are read as `Decimal`, so a `cost_usd = 12.50` cap converts exactly; only
durations in seconds become floats.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import ipaddress
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, cast

from budgetd.auth import tokens as token_files
from budgetd.auth.caller import ROLE_NAMES, Caller, Rate, Role
from budgetd.auth.peercred import MAX_LISTED_IDS, UnixRoles, roles_from
from budgetd.auth.tls import (
    MAX_CERTIFICATE_IDENTITIES,
    CertificateRoles,
    Material,
    TlsError,
    TlsFiles,
    read_material,
)
from budgetd.auth.tokens import EMPTY, TokenFileError, TokenTable, rate_of, scope_items
from budgetd.core import (
    Dimension,
    InvalidArgument,
    Limits,
    Policy,
    PriceTable,
    Window,
    WindowKind,
    default_policies,
    default_price_table,
)
from budgetd.core.usage import EdgeRules
from budgetd.paths import DEFAULT_TCP, default_socket_path
from budgetd.prices_file import PriceFileError, load_price_file
from budgetd.scaleout import settings as global_settings
from budgetd.scaleout.settings import GlobalSettings
from budgetd.telemetry import settings as telemetry_settings
from budgetd.telemetry.settings import TelemetrySettings


class ConfigError(Exception):
    """A setting that cannot be used: where it came from, which key, and why."""

    def __init__(self, path: str, key: str, reason: str, *, sep: str = ":") -> None:
        # Files read "budgetd.toml:server.tcp: ..."; env and flags "env BUDGETD_TCP: ...".
        super().__init__(f"{path}{sep}{key}: {reason}" if key else f"{path}: {reason}")
        self.path = path
        self.key = key
        self.reason = reason


DEFAULT_RATE = Rate(2000.0, 4000)  # per identity (agent and reader roles)
# The most operations one Batch message may carry (server.max_batch_operations).
MAX_BATCH_OPERATIONS = 4096


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """Who may call (see `budgetd.auth`). The defaults: the daemon's own user (and root)
    is admin on the socket, nobody else has a role, TCP calls need a token."""

    token_files: tuple[Path, ...] = ()
    tokens: TokenTable = EMPTY  # as read at start (SIGHUP reads the files again)
    anonymous_tcp: Role | None = None
    rate: Rate | None = DEFAULT_RATE
    unix: UnixRoles = field(default_factory=lambda: UnixRoles(rate=DEFAULT_RATE))
    certificates: CertificateRoles | None = None
    tls: TlsFiles | None = None
    tls_material: Material | None = None  # as read and checked at start


@dataclass(frozen=True, slots=True)
class Settings:
    """What the daemon runs with. `socket` / `tcp` None: that listener is off;
    `prices_file` None: the embedded price table (`prices` is the table in use)."""

    config_path: Path | None
    socket: Path | None
    tcp: str | None
    allow_non_loopback: bool
    max_message_bytes: int
    max_batch_operations: int
    grace_s: float
    tick_s: float
    log_format: str
    log_level: str
    loop: str
    state_dir: Path
    durability: str  # "journal", "snapshot" or "memory" (budgetd.runtime.Durability)
    snapshot_interval_s: float
    commit_delay_s: float
    prices_file: Path | None
    event_retention: int
    max_subscribers: int
    subscriber_queue: int
    subscriber_send_timeout_s: float
    max_streams: int
    max_streams_total: int
    max_streams_per_connection: int
    handshake_timeout_s: float
    idle_timeout_s: float
    limits: Limits
    policies: tuple[Policy, ...]
    prices: PriceTable
    auth: AuthSettings = AuthSettings()
    written_policies: frozenset[str] = frozenset()  # the file's [[policies]] names
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    # [global]: the Redis global policies are shared through.
    scaleout: GlobalSettings = field(default_factory=GlobalSettings)


# ---------------------------------------------------------------------------------------
# Where a value came from
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Layer:
    name: str  # the config file as given, "env" or "flag"
    text: bool  # env and flag values arrive as strings; file values are already typed
    base: Path | None = None  # relative paths in a file are relative to its directory

    def error(self, key: str, reason: str) -> ConfigError:
        return ConfigError(self.name, key, reason, sep=" " if self.text else ":")


_ENV = _Layer("env", text=True)
_FLAG = _Layer("flag", text=True)

# A value of one layer and the key it was set by, for errors found after merging.
_Found = tuple[object, _Layer, str]


class _Bad(ValueError):
    """What is wrong with a value, before it is known which layer and key to blame."""


# ---------------------------------------------------------------------------------------
# Value parsers: typed file values and env/flag strings share one set of rules
# ---------------------------------------------------------------------------------------

_Parse = Callable[[object, _Layer], object]


def _show(value: object) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return str(value)
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def _whole(value: object, layer: _Layer) -> int:
    if layer.text and isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"must be an integer, got {_show(value)}")
    return value


def _number(value: object, layer: _Layer) -> float:
    number = value
    if layer.text and isinstance(value, str):
        with contextlib.suppress(InvalidOperation):
            number = Decimal(value)
    if isinstance(number, Decimal) and number.is_finite():
        return float(number)
    if isinstance(number, bool) or not isinstance(number, int | float) or not math.isfinite(number):
        raise _Bad(f"must be a number, got {_show(value)}")
    return float(number)


def _integer(low: int, high: int) -> _Parse:
    def parse(value: object, layer: _Layer) -> int:
        number = _whole(value, layer)
        if not low <= number <= high:
            raise _Bad(f"must be in {low}..{high}, got {number}")
        return number

    return parse


def _seconds(low: float, high: float) -> _Parse:
    def parse(value: object, layer: _Layer) -> float:
        number = _number(value, layer)
        if not low <= number <= high:
            raise _Bad(f"must be in {low:g}..{high:g} seconds, got {number:g}")
        return number

    return parse


def _boolean(value: object, layer: _Layer) -> bool:
    if layer.text and isinstance(value, str):
        value = {"true": True, "1": True, "false": False, "0": False}.get(value.lower(), value)
    if not isinstance(value, bool):
        raise _Bad(f"must be true or false, got {_show(value)}")
    return value


def _choice(*choices: str) -> _Parse:
    def parse(value: object, layer: _Layer) -> str:
        if isinstance(value, str) and value.lower() in choices:
            return value.lower()
        raise _Bad(f"must be one of {', '.join(choices)}; got {_show(value)}")

    return parse


def _path(value: object, layer: _Layer) -> Path:
    if not isinstance(value, str) or not value:
        raise _Bad(f"must be a non-empty path, got {_show(value)}")
    path = Path(value).expanduser()
    return layer.base / path if layer.base is not None else path


# host:port, or [v6 address]:port; port 0 asks the system for a free one.
_ADDRESS = re.compile(r"(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]]+)):(?P<port>\d{1,5})")


def _address(value: object, layer: _Layer) -> str:
    found = _ADDRESS.fullmatch(value) if isinstance(value, str) else None
    if found is None or int(found["port"]) > 65_535:
        raise _Bad(
            'must be "host:port" ("[v6 address]:port" for IPv6) with a port in 0..65535, '
            f"got {_show(value)}"
        )
    if found["v6"] is not None:
        try:
            ipaddress.IPv6Address(found["v6"])
        except ValueError:
            raise _Bad(f"{found['v6']!r} is not an IPv6 address") from None
    return found.string


def _is_loopback(address: str) -> bool:
    return is_loopback_host(address.rsplit(":", 1)[0])


def is_loopback_host(host: str) -> bool:
    """`localhost` (any case), or an address in 127.0.0.0/8 or ::1 (brackets allowed)."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------
# The settings: file key, env variable, flag
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Option:
    name: str  # the Settings field
    key: str  # "section.key" in the file
    parse: _Parse
    env: str = ""
    flag: str = ""
    optional: bool = False  # an empty value turns it off (None)

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")


_OPTIONS = (
    _Option("socket", "server.socket", _path, "BUDGETD_SOCKET", "--socket", optional=True),
    _Option("tcp", "server.tcp", _address, "BUDGETD_TCP", "--tcp", optional=True),
    _Option(
        "allow_non_loopback",
        "server.allow_non_loopback",
        _boolean,
        "BUDGETD_ALLOW_NON_LOOPBACK",
        "--allow-non-loopback",
    ),
    _Option(
        "max_message_bytes",
        "server.max_message_bytes",
        _integer(1024, 16 * 1024 * 1024),
        "BUDGETD_MAX_MESSAGE_BYTES",
        "--max-message-bytes",
    ),
    _Option(
        "max_batch_operations",
        "server.max_batch_operations",
        _integer(1, MAX_BATCH_OPERATIONS),
        "BUDGETD_MAX_BATCH_OPERATIONS",
        "--max-batch-operations",
    ),
    _Option("grace_s", "server.grace_seconds", _seconds(0, 300), "BUDGETD_GRACE", "--grace"),
    _Option("tick_s", "server.tick_seconds", _seconds(0.01, 60), "BUDGETD_TICK", "--tick"),
    _Option(
        "log_format",
        "server.log_format",
        _choice("keyvalue", "json"),
        "BUDGETD_LOG_FORMAT",
        "--log-format",
    ),
    _Option(
        "log_level",
        "server.log_level",
        _choice("debug", "info", "warning", "error"),
        "BUDGETD_LOG_LEVEL",
        "--log-level",
    ),
    _Option("loop", "server.loop", _choice("uvloop", "asyncio"), "BUDGETD_LOOP", "--loop"),
    _Option("state_dir", "server.state_dir", _path, "BUDGETD_STATE_DIR", "--state-dir"),
    _Option(
        "durability",
        "server.durability",
        _choice("journal", "snapshot", "memory"),
        "BUDGETD_DURABILITY",
        "--durability",
    ),
    _Option(
        "snapshot_interval_s",
        "server.snapshot_seconds",
        _seconds(0.1, 86_400),
        "BUDGETD_SNAPSHOT_SECONDS",
        "--snapshot-seconds",
    ),
    _Option("commit_delay_s", "server.commit_delay_seconds", _seconds(0, 0.002)),
    _Option(
        "prices_file", "server.prices_file", _path, "BUDGETD_PRICES", "--prices", optional=True
    ),
    _Option("event_retention", "events.retention", _integer(1, 10_000_000)),
    _Option("max_subscribers", "events.max_subscribers", _integer(1, 10_000)),
    _Option("subscriber_queue", "events.subscriber_queue", _integer(1, 1_000_000)),
    _Option("subscriber_send_timeout_s", "events.send_timeout_seconds", _seconds(0.01, 3600)),
    _Option("max_streams", "events.max_streams", _integer(1, 10_000)),
    _Option("max_streams_total", "connections.max_streams_total", _integer(1, 100_000)),
    _Option(
        "max_streams_per_connection", "connections.max_streams_per_connection", _integer(1, 10_000)
    ),
    _Option("handshake_timeout_s", "connections.handshake_timeout_seconds", _seconds(0.1, 300)),
    _Option("idle_timeout_s", "connections.idle_timeout_seconds", _seconds(1, 86_400)),
)

_CONFIG_ENV = "BUDGETD_CONFIG"
# Other programs' BUDGETD_* variables: the client's target, the test suite's core switch.
_FOREIGN_ENV = frozenset({"BUDGETD_TARGET", "BUDGETD_CORE"})
_KNOWN_ENV = frozenset({_CONFIG_ENV, *(o.env for o in _OPTIONS if o.env)})
_ACCEPTED_ENV = _KNOWN_ENV | _FOREIGN_ENV
_SECTIONS = ("server", "events", "connections")
_TOP_KEYS = (
    *_SECTIONS,
    "auth",
    "tls",
    "limits",
    "telemetry",
    "global",
    "embedded_policies",
    "policies",
    "reload_may_replace_all",
)


def _defaults(environ: Mapping[str, str]) -> dict[str, Any]:
    return {
        "socket": default_socket_path(),
        "tcp": DEFAULT_TCP,
        "allow_non_loopback": False,
        "max_message_bytes": 65_536,
        "max_batch_operations": 256,
        "grace_s": 5.0,
        "tick_s": 1.0,
        "log_format": "keyvalue",
        "log_level": "info",
        "loop": "uvloop",
        "state_dir": _default_state_dir(environ),
        "durability": "journal",
        "snapshot_interval_s": 5.0,
        "commit_delay_s": 0.0,
        "prices_file": None,
        "event_retention": 100_000,
        "max_subscribers": 64,
        "subscriber_queue": 10_000,
        "subscriber_send_timeout_s": 30.0,
        "max_streams": 64,
        "max_streams_total": 1000,
        "max_streams_per_connection": 100,
        "handshake_timeout_s": 10.0,
        "idle_timeout_s": 600.0,
    }


def _default_state_dir(environ: Mapping[str, str]) -> Path:
    state_home = environ.get("XDG_STATE_HOME", "")
    if state_home and Path(state_home).is_absolute():  # the XDG spec ignores relative ones
        return Path(state_home) / "budgetd"
    return Path.home() / ".local" / "state" / "budgetd"


def _instance_dir(values: Mapping[str, Any]) -> str:
    """The default state directory's last part: one per listener, so two daemons on one
    host (each on its own socket) never share a journal."""
    socket, tcp = values["socket"], values["tcp"]
    if socket is not None and Path(socket) == default_socket_path():
        return "default"
    where = f"unix:{socket}" if socket is not None else f"tcp:{tcp}"
    return "listener-" + hashlib.sha256(where.encode()).hexdigest()[:16]


def _value(option: _Option, raw: object, layer: _Layer, key: str) -> _Found:
    if raw == "" and option.optional:
        return None, layer, key
    return _parsed(option.parse, raw, layer, key), layer, key


def _parsed(parse: _Parse, raw: object, layer: _Layer, key: str) -> object:
    try:
        return parse(raw, layer)
    except _Bad as bad:
        raise layer.error(key, str(bad)) from None


# ---------------------------------------------------------------------------------------
# The file
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _File:
    layer: _Layer
    data: Mapping[str, object]
    found: dict[str, _Found]
    limits: Limits


def read_text(path: Path) -> str:
    """The file as UTF-8 text, or a ConfigError naming it."""
    layer = _Layer(str(path), text=False, base=path.parent)
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise layer.error("", f"cannot read: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise layer.error("", "not UTF-8 text") from None


def _read_file(path: Path, text: str | None = None) -> _File:
    layer = _Layer(str(path), text=False, base=path.parent)
    if text is None:
        text = read_text(path)
    try:
        data = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as error:
        raise _syntax_error(layer, str(error)) from None
    _check_keys(layer, "", data, _TOP_KEYS)
    found: dict[str, _Found] = {}
    for section in _SECTIONS:
        found.update(_section(layer, section, data.get(section, {})))
    return _File(layer, data, found, _limits(layer, data.get("limits", {})))


def _syntax_error(layer: _Layer, message: str) -> ConfigError:
    at = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if at is None:
        return layer.error("", f"not valid TOML: {message}")
    return layer.error(f"line {at[1]}", f"not valid TOML: {message[: at.start()]} (column {at[2]})")


def _check_keys(
    layer: _Layer, section: str, table: Mapping[str, object], known: Collection[str]
) -> None:
    unknown = sorted(set(table) - set(known))
    if unknown:
        key = f"{section}.{unknown[0]}" if section else unknown[0]
        raise layer.error(key, f"unknown key (known: {', '.join(sorted(known))})")


def _table(layer: _Layer, key: str, value: object) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise layer.error(key, f"must be a table ([{key}]), got {_show(value)}")
    return value


def _section(layer: _Layer, section: str, value: object) -> dict[str, _Found]:
    table = _table(layer, section, value)
    options = {o.key.split(".", 1)[1]: o for o in _OPTIONS if o.key.startswith(f"{section}.")}
    _check_keys(layer, section, table, options)
    found: dict[str, _Found] = {}
    for key, raw in table.items():
        option = options[key]
        found[option.name] = _value(option, raw, layer, option.key)
    return found


def _limits(layer: _Layer, value: object) -> Limits:
    table = _table(layer, "limits", value)
    defaults = Limits()
    _check_keys(layer, "limits", table, [f.name for f in fields(Limits)])
    values: dict[str, Any] = {
        name: _parsed(
            _whole if isinstance(getattr(defaults, name), int) else _number,
            raw,
            layer,
            f"limits.{name}",
        )
        for name, raw in table.items()
    }
    try:
        return Limits(**values)  # which checks that each is > 0
    except InvalidArgument as error:
        raise layer.error(error.field, error.rule) from None


def _policies(file: _File, limits: Limits, global_enabled: bool) -> tuple[Policy, ...]:
    """The file's policies: the embedded ones first (when on), then its [[policies]]
    (a global one only when [global] names a Redis)."""
    layer, raw = file.layer, file.data.get("policies", [])
    if not isinstance(raw, list):
        raise layer.error("policies", "must be an array of tables ([[policies]])")
    embedded = file.data.get("embedded_policies", not raw)
    if not isinstance(embedded, bool):
        raise layer.error("embedded_policies", f"must be true or false, got {_show(embedded)}")
    policies = list(_embedded(layer, limits)) if embedded else []
    owners = {p.name: "an embedded policy" for p in policies}
    for i, item in enumerate(raw):
        where = f"policies[{i}]"
        try:
            policy = Policy.from_mapping(item, limits, where)
        except InvalidArgument as error:
            raise layer.error(error.field, error.rule) from None
        if policy.is_global and not global_enabled:
            raise layer.error(
                f"{where}.scope", "'global' needs a Redis to share it: set [global] redis_url"
            )
        if policy.name in owners:
            raise layer.error(
                f"{where}.name", f"{policy.name!r} is already the name of {owners[policy.name]}"
            )
        owners[policy.name] = where
        policies.append(policy)
    if len(policies) > limits.max_policies:
        raise layer.error(
            "policies",
            f"{len(policies)} policies, more than limits.max_policies = {limits.max_policies}",
        )
    return tuple(policies)


def _written(file: _File | None) -> frozenset[str]:
    """The names of the policies the file itself writes ([[policies]], not embedded);
    only called on a file `_policies` has accepted."""
    raw = cast(list[dict[str, Any]], file.data.get("policies", []) if file else [])
    return frozenset(str(item["name"]) for item in raw)


def _embedded(layer: _Layer, limits: Limits) -> tuple[Policy, ...]:
    try:
        return default_policies(limits)
    except InvalidArgument as error:  # the file's [limits] are too tight for them
        raise layer.error("embedded_policies", str(error)) from None


# ---------------------------------------------------------------------------------------
# [auth] and [tls]: who may call (budgetd.auth)
# ---------------------------------------------------------------------------------------

_AUTH_KEYS = (
    "token_files",
    "anonymous_tcp",
    "rate_per_second",
    "rate_burst",
    "unix",
    "certificates",
)
_UNIX_KEYS = tuple(
    f"{role}_{kind}" for role in ("admin", "reader", "agent") for kind in ("uids", "gids")
)
_CERTIFICATE_KEYS = ("identity", "role", "scope", "rate_per_second", "rate_burst")
_TLS_KEYS = ("cert_file", "key_file", "client_ca_file")
_MAX_ID = 2**32 - 2  # (uid_t)-1 means "no id"
_MAX_IDENTITY_CHARS = 1024


def _auth(file: _File | None, limits: Limits) -> AuthSettings:
    """[auth] and [tls] as written; token files and TLS files are read by `_load_auth`."""
    if file is None:
        return AuthSettings()
    layer = file.layer
    table = _table(layer, "auth", file.data.get("auth", {}))
    _check_keys(layer, "auth", table, _AUTH_KEYS)
    rate = _rate(layer, "auth", table, DEFAULT_RATE)
    anonymous = table.get("anonymous_tcp", "none")
    if anonymous not in ("none", *ROLE_NAMES):
        raise layer.error(
            "auth.anonymous_tcp",
            f"must be one of none, {', '.join(ROLE_NAMES)}; got {_show(anonymous)}",
        )
    raw_files = table.get("token_files", [])
    if not isinstance(raw_files, list) or len(raw_files) > token_files.MAX_TOKEN_FILES:
        raise layer.error(
            "auth.token_files", f"must be an array of at most {token_files.MAX_TOKEN_FILES} paths"
        )
    paths = tuple(
        _parsed(_path, raw, layer, f"auth.token_files[{i}]") for i, raw in enumerate(raw_files)
    )
    return AuthSettings(
        token_files=tuple(p for p in paths if isinstance(p, Path)),
        anonymous_tcp=None if anonymous == "none" else Role(anonymous),
        rate=rate,
        unix=_unix_roles(layer, table.get("unix", {}), rate),
        certificates=_certificates(layer, table.get("certificates"), rate, limits),
        tls=_tls(layer, file.data.get("tls", {})),
    )


def _rate(
    layer: _Layer, where: str, table: Mapping[str, object], default: Rate | None
) -> Rate | None:
    plain = {k: float(v) if isinstance(v, Decimal) else v for k, v in table.items()}
    try:
        return rate_of(plain, default, Role.AGENT)
    except ValueError as error:
        key, _, reason = str(error).partition(": ")
        raise layer.error(f"{where}.{key}", reason) from None


def _unix_roles(layer: _Layer, value: object, rate: Rate | None) -> UnixRoles:
    table = _table(layer, "auth.unix", value)
    _check_keys(layer, "auth.unix", table, _UNIX_KEYS)
    listed: dict[Role, tuple[list[int], list[int]]] = {role: ([], []) for role in Role}
    count = 0
    for key, ids in table.items():
        role_name, kind = key.split("_")
        if not isinstance(ids, list):
            raise layer.error(f"auth.unix.{key}", f"must be an array of {kind}, got {_show(ids)}")
        for i, number in enumerate(ids):
            if (
                isinstance(number, bool)
                or not isinstance(number, int)
                or not 0 <= number <= _MAX_ID
            ):
                raise layer.error(
                    f"auth.unix.{key}[{i}]",
                    f"must be a {kind[:-1]} in 0..{_MAX_ID}, got {_show(number)}",
                )
        count += len(ids)
        listed[Role(role_name)][0 if kind == "uids" else 1].extend(ids)
    if count > MAX_LISTED_IDS:
        raise layer.error("auth.unix", f"at most {MAX_LISTED_IDS} uids and gids in all")
    return roles_from(listed, rate)


def _certificates(
    layer: _Layer, value: object, rate: Rate | None, limits: Limits
) -> CertificateRoles | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_CERTIFICATE_IDENTITIES:
        raise layer.error(
            "auth.certificates",
            f"must be an array of at most {MAX_CERTIFICATE_IDENTITIES} tables "
            "([[auth.certificates]])",
        )
    rules = EdgeRules(limits)
    callers = {}
    for i, entry in enumerate(value):
        where = f"auth.certificates[{i}]"
        table = _table(layer, where, entry)
        _check_keys(layer, where, table, _CERTIFICATE_KEYS)
        identity = table.get("identity")
        if not isinstance(identity, str) or not 0 < len(identity) <= _MAX_IDENTITY_CHARS:
            raise layer.error(
                f"{where}.identity",
                "required: a subject alternative name of the certificate (DNS name, URI such "
                "as spiffe://..., e-mail or IP), or its common name when it has none",
            )
        if identity in callers:
            raise layer.error(f"{where}.identity", f"{identity!r} is listed twice")
        role_name = table.get("role")
        if role_name not in ROLE_NAMES:
            raise layer.error(f"{where}.role", f"required, one of {', '.join(ROLE_NAMES)}")
        role = Role(role_name)
        try:
            scope = scope_items(table.get("scope", {}), role, rules)
        except ValueError as error:
            key, _, reason = str(error).partition(": ")
            raise layer.error(f"{where}.{key}", reason) from None
        own_rate = None if role is Role.ADMIN else _rate(layer, where, table, rate)
        callers[identity] = Caller(
            f"client certificate {identity!r}", role, where, scope, own_rate, key=f"cert:{identity}"
        )
    return CertificateRoles(callers)


def _tls(layer: _Layer, value: object) -> TlsFiles | None:
    table = _table(layer, "tls", value)
    _check_keys(layer, "tls", table, _TLS_KEYS)
    paths = {key: _parsed(_path, raw, layer, f"tls.{key}") for key, raw in table.items()}
    if not paths:
        return None
    cert, key, ca = paths.get("cert_file"), paths.get("key_file"), paths.get("client_ca_file")
    if not isinstance(cert, Path):
        raise layer.error("tls.cert_file", "required with the other tls keys")
    if not isinstance(key, Path):
        raise layer.error("tls.key_file", "required with tls.cert_file")
    return TlsFiles(cert, key, ca if isinstance(ca, Path) else None)


def _load_auth(auth: AuthSettings, layer: _Layer | None, limits: Limits) -> AuthSettings:
    """The token files and TLS files read and checked, for the start."""
    if layer is None:
        return auth
    if auth.certificates is not None and (auth.tls is None or auth.tls.client_ca_file is None):
        raise layer.error(
            "auth.certificates",
            "needs tls.client_ca_file: without it no client certificate is asked for",
        )
    if auth.anonymous_tcp is Role.ADMIN and (auth.token_files or auth.certificates):
        raise layer.error(
            "auth.anonymous_tcp",
            '"admin" makes tokens and certificates pointless: a caller without them is admin',
        )
    try:
        table = token_files.load(auth.token_files, auth.rate, limits)
    except TokenFileError as error:
        raise ConfigError(str(error.path), error.key, error.reason) from None
    material = None
    if auth.tls is not None:
        try:
            material = read_material(auth.tls)
        except TlsError as error:
            raise layer.error(error.key, error.reason) from None
    return replace(auth, tokens=table, tls_material=material)


# ---------------------------------------------------------------------------------------
# Environment and flags
# ---------------------------------------------------------------------------------------


def _env_values(env: Mapping[str, str]) -> dict[str, _Found]:
    unknown = sorted(n for n in env if n.startswith("BUDGETD_") and n not in _ACCEPTED_ENV)
    if unknown:
        raise _ENV.error(unknown[0], f"unknown variable (known: {', '.join(sorted(_KNOWN_ENV))})")
    found: dict[str, _Found] = {}
    for option in _OPTIONS:
        raw = env.get(option.env) if option.env else None
        # An empty variable means "not set", except where empty means "off".
        if raw is None or (raw == "" and not option.optional):
            continue
        found[option.name] = _value(option, raw, _ENV, option.env)
    return found


def _flag_values(args: argparse.Namespace) -> dict[str, _Found]:
    found: dict[str, _Found] = {}
    for option in _OPTIONS:
        raw = getattr(args, option.dest, None) if option.flag else None
        if raw is not None:
            found[option.name] = _value(option, raw, _FLAG, option.flag)
    return found


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The daemon's flags. Each defaults to None so that a flag not given leaves the
    environment's or the file's value in place."""
    group = parser.add_argument_group("settings (flags > BUDGETD_* variables > config file)")
    group.add_argument("--config", metavar="FILE", help="TOML config file [BUDGETD_CONFIG]")
    socket = group.add_mutually_exclusive_group()
    socket.add_argument("--socket", metavar="PATH", help="Unix socket path [BUDGETD_SOCKET]")
    socket.add_argument(
        "--no-socket", dest="socket", action="store_const", const="", help="no Unix socket"
    )
    tcp = group.add_mutually_exclusive_group()
    tcp.add_argument("--tcp", metavar="HOST:PORT", help=f"TCP address, default {DEFAULT_TCP}")
    tcp.add_argument("--no-tcp", dest="tcp", action="store_const", const="", help="no TCP")
    group.add_argument(
        "--allow-non-loopback",
        action="store_const",
        const=True,
        help="allow a --tcp host other than loopback",
    )
    group.add_argument("--max-message-bytes", metavar="N", help="largest request, 1024..16 MiB")
    group.add_argument(
        "--max-batch-operations",
        metavar="N",
        help=f"most operations in one Batch message, 1..{MAX_BATCH_OPERATIONS} (default 256)",
    )
    group.add_argument("--grace", metavar="SECONDS", help="drain time on SIGTERM, 0..300")
    group.add_argument("--tick", metavar="SECONDS", help="expiry timer period, 0.01..60")
    group.add_argument("--log-format", choices=("keyvalue", "json"))
    group.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    group.add_argument("--loop", choices=("uvloop", "asyncio"))
    group.add_argument(
        "--state-dir", metavar="DIR", help="snapshots and journal [BUDGETD_STATE_DIR]"
    )
    group.add_argument(
        "--durability",
        choices=("journal", "snapshot", "memory"),
        help="journal: answer after fsync (default); snapshot: periodic only; memory: none",
    )
    group.add_argument(
        "--snapshot-seconds", metavar="SECONDS", help="snapshot interval, 0.1..86400 (5)"
    )
    group.add_argument("--prices", metavar="FILE", help="price file (TOML or LiteLLM JSON)")


# ---------------------------------------------------------------------------------------
# Putting it together
# ---------------------------------------------------------------------------------------


def resolve(args: argparse.Namespace, env: Mapping[str, str]) -> Settings:
    """Defaults < config file < `BUDGETD_*` variables < flags."""
    env_found = _env_values(env)
    flag_found = _flag_values(args)
    config = getattr(args, "config", None)
    if config is None:
        config = env.get(_CONFIG_ENV, "")
    path = Path(config).expanduser() if config else None
    file = _read_file(path) if path is not None else None
    return _settings(path, file, {**env_found, **flag_found}, env)


def load_file(path: Path) -> Settings:
    """The settings of one file over the defaults, with no env or flags (`check-config`)."""
    return _settings(path, _read_file(path), {}, os.environ)


@dataclass(frozen=True, slots=True)
class Reloaded:
    """What a SIGHUP found in the file: its policies, and whether it allows them to
    replace every policy the file had before (`reload_may_replace_all = true`)."""

    policies: tuple[Policy, ...]
    written: frozenset[str]  # the names in its [[policies]] (the embedded ones aside)
    may_replace_all: bool


def reload_policies(
    path: Path, limits: Limits, text: str | None = None, *, global_enabled: bool = False
) -> Reloaded:
    """The file's policies for a running daemon (SIGHUP). The file must parse, with
    known keys of the right types, but only its policies are used: they are parsed
    against the running `limits`, and every other setting waits for a restart (where
    the flags and environment the daemon started with apply again). `text`: the file's
    content as already read (the daemon reads until two reads agree)."""
    file = _read_file(path, text)
    replace_all = file.data.get("reload_may_replace_all", False)
    if not isinstance(replace_all, bool):
        raise file.layer.error(
            "reload_may_replace_all", f"must be true or false, got {_show(replace_all)}"
        )
    return Reloaded(_policies(file, limits, global_enabled), _written(file), replace_all)


def _settings(
    path: Path | None, file: _File | None, overrides: dict[str, _Found], env: Mapping[str, str]
) -> Settings:
    found = {**(file.found if file else {}), **overrides}
    values = _defaults(env) | {name: value for name, (value, _, _) in found.items()}
    if "state_dir" not in found:
        values["state_dir"] = values["state_dir"] / _instance_dir(values)
    limits = file.limits if file else Limits()
    auth = _auth(file, limits)
    _check_loopback(values, found, auth)
    scaleout = _scaleout(file)
    return Settings(
        config_path=path,
        limits=limits,
        policies=_policies(file, limits, scaleout.enabled) if file else default_policies(limits),
        written_policies=_written(file),
        prices=_prices(found.get("prices_file")),
        auth=_load_auth(auth, file.layer if file else None, limits),
        telemetry=_telemetry(file, env),
        scaleout=scaleout,
        **values,
    )


def _scaleout(file: _File | None) -> GlobalSettings:
    """[global]: the Redis global policies are shared through (none: they are refused)."""
    if file is None:
        return GlobalSettings()
    table = _table(file.layer, "global", file.data.get("global", {}))
    try:
        return global_settings.from_file(table)
    except global_settings.SettingError as error:
        raise file.layer.error(f"global.{error.key}", error.reason) from None


def _telemetry(file: _File | None, env: Mapping[str, str]) -> TelemetrySettings:
    """[telemetry] under the OTEL_* variables; errors name the key or the variable."""
    table: Mapping[str, object] = {}
    if file is not None:
        table = _table(file.layer, "telemetry", file.data.get("telemetry", {}))
    try:
        return telemetry_settings.resolve(telemetry_settings.from_file(table), env)
    except telemetry_settings.SettingError as error:
        if error.env or file is None:
            raise ConfigError("env", error.key, error.reason, sep=" ") from None
        raise file.layer.error(f"telemetry.{error.key}", error.reason) from None


def _check_loopback(
    values: Mapping[str, Any], found: Mapping[str, _Found], auth: AuthSettings
) -> None:
    """Beyond loopback: TLS, or plaintext asked for explicitly (and logged loudly at
    start); never anonymous callers."""
    tcp = values["tcp"]
    if tcp is None or _is_loopback(tcp):
        return
    _, layer, key = found["tcp"]  # the default is loopback, so someone set this one
    if auth.anonymous_tcp is not None:
        raise layer.error(
            key,
            f"{tcp} is not a loopback address, and auth.anonymous_tcp = "
            f'"{auth.anonymous_tcp.value}" would let any host on the network call; '
            "use tokens (auth.token_files) or client certificates (auth.certificates)",
        )
    if auth.tls is None and not values["allow_non_loopback"]:
        raise layer.error(
            key,
            f"{tcp} is not a loopback address; configure [tls] (cert_file, key_file), or "
            "to listen in plaintext anyway set allow_non_loopback (--allow-non-loopback, "
            "BUDGETD_ALLOW_NON_LOOPBACK=true)",
        )


def _prices(found: _Found | None) -> PriceTable:
    if found is None or found[0] is None:
        return default_price_table()
    path, layer, key = found
    assert isinstance(path, Path)
    if not path.is_file():
        raise layer.error(key, f"no price file at {path}")
    try:
        return load_price_file(path, default_price_table())
    except PriceFileError as error:
        raise ConfigError(str(error.path), error.key, error.reason) from None


# ---------------------------------------------------------------------------------------
# What `budgetd check-config` prints
# ---------------------------------------------------------------------------------------


def describe_policies(policies: Sequence[Policy]) -> str:
    """One block per policy, in the words of the config file."""
    if not policies:
        return "no policies: requests are allowed and nothing is counted\n"
    return "\n".join(_describe(policy) for policy in policies)


def _describe(policy: Policy) -> str:
    title = f"{policy.name} — {policy.description}" if policy.description else policy.name
    # A request must carry the `per` keys too: show what match and per require together.
    applies = ", ".join(f"{key}={value or '*'}" for key, value in policy.requirements)
    caps = ", ".join(_cap(dimension, limit) for dimension, limit in policy.caps)
    thresholds = ", ".join(f"{t.percent}% {t.severity.name.lower()}" for t in policy.thresholds)
    ledgers = "evicted when idle at the ledger limit" if policy.evictable else "never evicted"
    if policy.close_with_run:
        ledgers += "; closed with their run"
    rows = (
        ("applies to", applies or "every request"),
        ("per", ", ".join(policy.per) or "(one shared ledger)"),
        ("caps", caps or "none (a meter)"),
        ("window", _window(policy.window)),
        ("enforcement", policy.enforcement.value),
        ("thresholds", thresholds),
        ("ledgers", ledgers),
    )
    return "\n".join([title, *(f"  {label + ':':<13}{text}" for label, text in rows)]) + "\n"


def _cap(dimension: Dimension, limit: int) -> str:
    if dimension is Dimension.COST_MICRO_USD:
        dollars, micro = divmod(limit, 1_000_000)
        return f"cost_usd ${dollars:,}.{f'{micro:06d}'.rstrip('0').ljust(2, '0')}"
    if dimension is Dimension.RUN_DURATION_MS:
        seconds, ms = divmod(limit, 1000)
        return f"run_duration {_duration(seconds) if not ms else f'{limit:,} ms'}"
    return f"{dimension.name.lower()} {limit:,}"


def _window(window: Window) -> str:
    if window.kind is WindowKind.CALENDAR:
        assert window.unit is not None
        return f"calendar {window.unit.value} ({window.time_zone})"
    if window.kind is WindowKind.FIXED:
        return f"fixed {_duration(window.duration_s)} from first use"
    if window.kind is WindowKind.SLIDING:
        return f"sliding {_duration(window.duration_s)}"
    return "lifetime"


def _duration(seconds: int) -> str:
    for unit, size in (("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
