"""The `[telemetry]` settings: the config file's, then the standard `OTEL_*` variables.

Exporters are turned on and configured the way every OpenTelemetry SDK is: the
variables (`OTEL_METRICS_EXPORTER`, `OTEL_EXPORTER_OTLP_*`, `OTEL_EXPORTER_PROMETHEUS_*`,
`OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_SDK_DISABLED`, ...) win over the file, as `BUDGETD_*`
variables win over it for every other setting. Everything is checked here, before the
daemon starts: a bad value is a `SettingError` naming the file key or the variable.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

EXPORTERS = ("otlp", "prometheus", "console")
PROTOCOLS = ("grpc", "http/protobuf")
# Which request labels may become metric attributes, by default. `model` and `provider`
# become `gen_ai.request.model` / `gen_ai.provider.name`, `policy` is `budgetd.policy`.
DEFAULT_ATTRIBUTES = ("tenant", "agent", "model", "provider", "policy")
# Labels that are ids (one value per task, run, call): never attributes, or every new
# id would be a new series.
NEVER_ATTRIBUTES = frozenset({"thread", "run", "run_id", "request_id", "reservation_id"})
MAX_ATTRIBUTES = 16
DEFAULT_PROMETHEUS_PORT = 9464
DEFAULT_MAX_SERIES = 2000  # attribute sets per instrument (the SDK's own default)
DEFAULT_MAX_LEDGER_SERIES = 1000  # ledgers of `export_ledgers` policies exported
_LABEL_KEY = re.compile(r"[a-z0-9_.-]{1,64}")
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}")


class SettingError(ValueError):
    """`key` (a file key under [telemetry], or a variable when `env`) broke `reason`."""

    def __init__(self, key: str, reason: str, *, env: bool) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason
        self.env = env


@dataclass(frozen=True, slots=True)
class TelemetrySettings:
    exporters: tuple[str, ...] = ()  # none: metrics are kept but not exported
    disabled: bool = False  # OTEL_SDK_DISABLED: no metrics at all
    attributes: tuple[str, ...] = DEFAULT_ATTRIBUTES
    export_interval_s: float = 60.0
    export_timeout_s: float = 30.0
    max_series: int = DEFAULT_MAX_SERIES
    max_ledger_series: int = DEFAULT_MAX_LEDGER_SERIES
    service_name: str = "budgetd"
    resource_attributes: tuple[tuple[str, str], ...] = ()
    # OTLP: None = the SDK's own default (or its variable, which then wins).
    otlp_protocol: str = "grpc"
    otlp_endpoint: str | None = None
    otlp_headers: tuple[tuple[str, str], ...] | None = None
    otlp_timeout_s: float | None = None
    prometheus_host: str = "127.0.0.1"
    prometheus_port: int = DEFAULT_PROMETHEUS_PORT
    prometheus_allow_non_loopback: bool = False
    # Which OTLP settings came from a variable (the SDK then reads it itself).
    from_env: frozenset[str] = field(default=frozenset())

    @property
    def label_attributes(self) -> tuple[str, ...]:
        """The allowed request labels named as themselves (model, provider, policy and
        operation have names of their own)."""
        special = ("model", "provider", "policy", "operation")
        return tuple(a for a in self.attributes if a not in special)


_FILE_KEYS = {
    "exporters",
    "attributes",
    "export_interval_seconds",
    "export_timeout_seconds",
    "max_series",
    "max_ledger_series",
    "service_name",
    "resource_attributes",
    "otlp",
    "prometheus",
}
_OTLP_KEYS = {"protocol", "endpoint", "headers", "timeout_seconds"}
_PROMETHEUS_KEYS = {"host", "port", "allow_non_loopback"}


def from_file(table: Mapping[str, object]) -> dict[str, object]:
    """The `[telemetry]` table as TelemetrySettings fields (only those it sets)."""
    _known("", table, _FILE_KEYS)
    values: dict[str, object] = {}
    if "exporters" in table:
        values["exporters"] = _exporters(_strings(table["exporters"], "exporters"), "exporters")
    if "attributes" in table:
        values["attributes"] = _attributes(_strings(table["attributes"], "attributes"))
    for key, name, low, high in (
        ("export_interval_seconds", "export_interval_s", 0.1, 86_400.0),
        ("export_timeout_seconds", "export_timeout_s", 0.1, 3_600.0),
    ):
        if key in table:
            values[name] = _seconds(table[key], key, low, high)
    for key in ("max_series", "max_ledger_series"):
        if key in table:
            values[key] = _count(table[key], key, 1, 100_000)
    if "service_name" in table:
        values["service_name"] = _text(table["service_name"], "service_name")
    if "resource_attributes" in table:
        values["resource_attributes"] = _pairs(table["resource_attributes"], "resource_attributes")
    values |= _otlp_file(_subtable(table, "otlp"))
    values |= _prometheus_file(_subtable(table, "prometheus"))
    return values


def _otlp_file(table: Mapping[str, object]) -> dict[str, object]:
    _known("otlp", table, _OTLP_KEYS)
    values: dict[str, object] = {}
    if "protocol" in table:
        values["otlp_protocol"] = _choice(table["protocol"], "otlp.protocol", PROTOCOLS)
    if "endpoint" in table:
        values["otlp_endpoint"] = _url(_text(table["endpoint"], "otlp.endpoint"), "otlp.endpoint")
    if "headers" in table:
        values["otlp_headers"] = _headers(_pairs(table["headers"], "otlp.headers"), "otlp.headers")
    if "timeout_seconds" in table:
        values["otlp_timeout_s"] = _seconds(table["timeout_seconds"], "otlp.timeout_seconds")
    return values


def _prometheus_file(table: Mapping[str, object]) -> dict[str, object]:
    _known("prometheus", table, _PROMETHEUS_KEYS)
    values: dict[str, object] = {}
    if "host" in table:
        values["prometheus_host"] = _host(
            _text(table["host"], "prometheus.host"), "prometheus.host"
        )
    if "port" in table:
        values["prometheus_port"] = _count(table["port"], "prometheus.port", 0, 65535)
    if "allow_non_loopback" in table:
        allow = table["allow_non_loopback"]
        if not isinstance(allow, bool):
            raise SettingError("prometheus.allow_non_loopback", "must be true or false", env=False)
        values["prometheus_allow_non_loopback"] = allow
    return values


def resolve(file_values: Mapping[str, object], env: Mapping[str, str]) -> TelemetrySettings:
    """The file's values under the variables'; checks what only the merge can tell."""
    values = dict(file_values) | _from_env(env)
    settings = TelemetrySettings(**values)  # type: ignore[arg-type]
    serves = "prometheus" in settings.exporters and not settings.prometheus_allow_non_loopback
    if serves and not is_loopback(settings.prometheus_host):
        key, is_env = (
            ("OTEL_EXPORTER_PROMETHEUS_HOST", True)
            if "prometheus_host" in settings.from_env
            else ("prometheus.host", False)
        )
        raise SettingError(
            key,
            f"{settings.prometheus_host} is not a loopback address; set "
            "[telemetry.prometheus] allow_non_loopback = true to serve metrics beyond "
            "this host",
            env=is_env,
        )
    return settings


def _from_env(env: Mapping[str, str]) -> dict[str, object]:
    values: dict[str, object] = {}
    from_env: set[str] = set()
    if (raw := env.get("OTEL_SDK_DISABLED")) is not None:
        values["disabled"] = _env_bool(raw, "OTEL_SDK_DISABLED")
    if (raw := env.get("OTEL_METRICS_EXPORTER")) is not None:
        names = [n.strip() for n in raw.split(",") if n.strip()]
        values["exporters"] = (
            () if names == ["none"] else _exporters(names, "OTEL_METRICS_EXPORTER", env=True)
        )
    for var, name in (
        ("OTEL_METRIC_EXPORT_INTERVAL", "export_interval_s"),
        ("OTEL_METRIC_EXPORT_TIMEOUT", "export_timeout_s"),
    ):
        if (raw := env.get(var)) is not None:
            values[name] = _env_millis(raw, var)
    if (raw := env.get("OTEL_EXPORTER_PROMETHEUS_HOST")) is not None:
        values["prometheus_host"] = _host(raw.strip(), "OTEL_EXPORTER_PROMETHEUS_HOST", env=True)
        from_env.add("prometheus_host")
    if (raw := env.get("OTEL_EXPORTER_PROMETHEUS_PORT")) is not None:
        values["prometheus_port"] = _env_port(raw, "OTEL_EXPORTER_PROMETHEUS_PORT")
    for var in ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        if (raw := env.get(var)) is not None:
            values["otlp_protocol"] = _choice(raw.strip(), var, PROTOCOLS, env=True)
            break
    # Endpoint, headers and timeout: the SDK reads its own variables (with their rules:
    # a base endpoint gets /v1/metrics over HTTP); the file's value is then not passed.
    for setting, variables in (
        ("otlp_endpoint", ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")),
        ("otlp_headers", ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS")),
        ("otlp_timeout_s", ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")),
    ):
        if any(name in env for name in variables):
            from_env.add(setting)
            values[setting] = None
    for name in ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        if name in env:
            _url(env[name].strip(), name, env=True)
    if (raw := env.get("OTEL_SERVICE_NAME")) is not None:
        values["service_name"] = _text(raw.strip(), "OTEL_SERVICE_NAME", env=True)
    values["from_env"] = frozenset(from_env)
    return values


# --- value rules ------------------------------------------------------------------------


def _known(section: str, table: Mapping[str, object], known: set[str]) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        key = f"{section}.{unknown[0]}" if section else unknown[0]
        raise SettingError(key, f"unknown key (known: {', '.join(sorted(known))})", env=False)


def _subtable(table: Mapping[str, object], key: str) -> Mapping[str, object]:
    value = table.get(key, {})
    if not isinstance(value, dict):
        raise SettingError(key, f"must be a table ([telemetry.{key}])", env=False)
    return value


def _strings(value: object, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SettingError(key, "must be an array of strings", env=False)
    return list(value)


def _exporters(names: list[str], key: str, *, env: bool = False) -> tuple[str, ...]:
    for name in names:
        if name not in EXPORTERS:
            allowed = ", ".join((*EXPORTERS, "none")) if env else ", ".join(EXPORTERS)
            raise SettingError(key, f"unknown exporter {name!r} (known: {allowed})", env=env)
    return tuple(dict.fromkeys(names))


def _attributes(names: list[str]) -> tuple[str, ...]:
    if len(names) > MAX_ATTRIBUTES:
        raise SettingError("attributes", f"at most {MAX_ATTRIBUTES} labels", env=False)
    for name in names:
        if _LABEL_KEY.fullmatch(name) is None:
            raise SettingError("attributes", f"{name!r} is not a label key", env=False)
        if name in NEVER_ATTRIBUTES:
            raise SettingError(
                "attributes",
                f"{name!r} holds ids (a new series for every value): never an attribute",
                env=False,
            )
    return tuple(dict.fromkeys(names))


def _text(value: object, key: str, *, env: bool = False) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 256:
        raise SettingError(key, "must be a string of 1..256 characters", env=env)
    return value


def _pairs(value: object, key: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise SettingError(key, "must be a table of strings", env=False)
    if len(value) > 64:
        raise SettingError(key, "at most 64 entries", env=False)
    return tuple((str(k), _text(v, f"{key}.{k}")) for k, v in value.items())


def _headers(pairs: tuple[tuple[str, str], ...], key: str) -> tuple[tuple[str, str], ...]:
    for name, _ in pairs:
        if _HEADER_NAME.fullmatch(name) is None:
            raise SettingError(f"{key}.{name}", "not a valid header name", env=False)
    return tuple((name.lower(), value) for name, value in pairs)


def _choice(value: object, key: str, choices: tuple[str, ...], *, env: bool = False) -> str:
    if value not in choices:
        raise SettingError(key, f"must be one of {', '.join(choices)}, got {value!r}", env=env)
    return str(value)


def _number(value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise SettingError(key, "must be a number", env=False)
    return float(value)


def _seconds(value: object, key: str, low: float = 0.1, high: float = 600.0) -> float:
    seconds = _number(value, key)
    if not (math.isfinite(seconds) and low <= seconds <= high):
        raise SettingError(key, f"must be {low:g} .. {high:g} seconds", env=False)
    return seconds


def _count(value: object, key: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SettingError(key, f"must be a whole number in {low}..{high}", env=False)
    return value


def _env_bool(raw: str, var: str) -> bool:
    text = raw.strip().lower()
    if text not in ("true", "false", ""):
        raise SettingError(var, f"must be true or false, got {raw!r}", env=True)
    return text == "true"


def _env_millis(raw: str, var: str) -> float:
    try:
        millis = int(raw.strip())
    except ValueError:
        raise SettingError(var, f"must be whole milliseconds, got {raw!r}", env=True) from None
    if not 100 <= millis <= 86_400_000:
        raise SettingError(var, "must be 100 .. 86400000 milliseconds", env=True)
    return millis / 1000


def _env_port(raw: str, var: str) -> int:
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or int(text) > 65535:
        raise SettingError(var, f"must be a port number 0..65535, got {raw!r}", env=True)
    return int(text)


def _url(value: str, key: str, *, env: bool = False) -> str:
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        raise SettingError(key, f"must be an http:// or https:// URL, got {value!r}", env=env)
    return value


def _host(value: str, key: str, *, env: bool = False) -> str:
    if not value or len(value) > 253 or any(c.isspace() or c in "/[]" for c in value):
        raise SettingError(key, f"must be a host name or address, got {value!r}", env=env)
    return value


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
