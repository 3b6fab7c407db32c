import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Dimension(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DIMENSION_UNSPECIFIED: _ClassVar[Dimension]
    DIMENSION_TOTAL_TOKENS: _ClassVar[Dimension]
    DIMENSION_INPUT_TOKENS: _ClassVar[Dimension]
    DIMENSION_OUTPUT_TOKENS: _ClassVar[Dimension]
    DIMENSION_COST_MICRO_USD: _ClassVar[Dimension]
    DIMENSION_REQUESTS: _ClassVar[Dimension]
    DIMENSION_CONCURRENCY: _ClassVar[Dimension]
    DIMENSION_RUN_DURATION_MS: _ClassVar[Dimension]
    DIMENSION_WALL_CLOCK_MS: _ClassVar[Dimension]

class Decision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_UNSPECIFIED: _ClassVar[Decision]
    DECISION_ALLOW: _ClassVar[Decision]
    DECISION_ALLOW_WITH_WARNING: _ClassVar[Decision]
    DECISION_DENY: _ClassVar[Decision]

class LedgerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LEDGER_STATE_UNSPECIFIED: _ClassVar[LedgerState]
    LEDGER_STATE_OK: _ClassVar[LedgerState]
    LEDGER_STATE_WARNING: _ClassVar[LedgerState]
    LEDGER_STATE_CRITICAL: _ClassVar[LedgerState]
    LEDGER_STATE_FINAL: _ClassVar[LedgerState]
    LEDGER_STATE_EXHAUSTED: _ClassVar[LedgerState]

class Severity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEVERITY_UNSPECIFIED: _ClassVar[Severity]
    SEVERITY_WARNING: _ClassVar[Severity]
    SEVERITY_CRITICAL: _ClassVar[Severity]
    SEVERITY_FINAL: _ClassVar[Severity]

class Enforcement(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENFORCEMENT_UNSPECIFIED: _ClassVar[Enforcement]
    ENFORCEMENT_HARD: _ClassVar[Enforcement]
    ENFORCEMENT_SOFT: _ClassVar[Enforcement]
    ENFORCEMENT_SHADOW: _ClassVar[Enforcement]

class CalendarUnit(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CALENDAR_UNIT_UNSPECIFIED: _ClassVar[CalendarUnit]
    CALENDAR_UNIT_MINUTE: _ClassVar[CalendarUnit]
    CALENDAR_UNIT_HOUR: _ClassVar[CalendarUnit]
    CALENDAR_UNIT_DAY: _ClassVar[CalendarUnit]
    CALENDAR_UNIT_WEEK: _ClassVar[CalendarUnit]
    CALENDAR_UNIT_MONTH: _ClassVar[CalendarUnit]

class LedgerClosedReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LEDGER_CLOSED_REASON_UNSPECIFIED: _ClassVar[LedgerClosedReason]
    LEDGER_CLOSED_REASON_RESET: _ClassVar[LedgerClosedReason]
    LEDGER_CLOSED_REASON_EVICTED: _ClassVar[LedgerClosedReason]
    LEDGER_CLOSED_REASON_RUN_CLOSED: _ClassVar[LedgerClosedReason]
    LEDGER_CLOSED_REASON_POLICY_DELETED: _ClassVar[LedgerClosedReason]
    LEDGER_CLOSED_REASON_POLICY_CHANGED: _ClassVar[LedgerClosedReason]
    LEDGER_CLOSED_REASON_IDLE: _ClassVar[LedgerClosedReason]

class Unpriced(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNPRICED_UNSPECIFIED: _ClassVar[Unpriced]
    UNPRICED_DENY: _ClassVar[Unpriced]
    UNPRICED_ALLOW: _ClassVar[Unpriced]

class BlockReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BLOCK_REASON_UNSPECIFIED: _ClassVar[BlockReason]
    BLOCK_REASON_OVER_CAP: _ClassVar[BlockReason]
    BLOCK_REASON_UNPRICED: _ClassVar[BlockReason]
    BLOCK_REASON_LEASE: _ClassVar[BlockReason]

class Scope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCOPE_UNSPECIFIED: _ClassVar[Scope]
    SCOPE_LOCAL: _ClassVar[Scope]
    SCOPE_GLOBAL: _ClassVar[Scope]

class OnUnavailable(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ON_UNAVAILABLE_UNSPECIFIED: _ClassVar[OnUnavailable]
    ON_UNAVAILABLE_DENY: _ClassVar[OnUnavailable]
    ON_UNAVAILABLE_ALLOW_LOCAL: _ClassVar[OnUnavailable]

class RunEndReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_END_REASON_UNSPECIFIED: _ClassVar[RunEndReason]
    RUN_END_REASON_CLOSED: _ClassVar[RunEndReason]
    RUN_END_REASON_HEARTBEAT_TIMEOUT: _ClassVar[RunEndReason]
    RUN_END_REASON_DURATION_EXCEEDED: _ClassVar[RunEndReason]

class EventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_KIND_UNSPECIFIED: _ClassVar[EventKind]
    EVENT_KIND_USAGE_RECORDED: _ClassVar[EventKind]
    EVENT_KIND_THRESHOLD_CROSSED: _ClassVar[EventKind]
    EVENT_KIND_DENIED: _ClassVar[EventKind]
    EVENT_KIND_LEDGER_EXHAUSTED: _ClassVar[EventKind]
    EVENT_KIND_RESERVATION_EXPIRED: _ClassVar[EventKind]
    EVENT_KIND_RUN_OPENED: _ClassVar[EventKind]
    EVENT_KIND_RUN_ENDED: _ClassVar[EventKind]
    EVENT_KIND_WINDOW_ROLLED_OVER: _ClassVar[EventKind]
    EVENT_KIND_LEDGER_CLOSED: _ClassVar[EventKind]
    EVENT_KIND_POLICY_CHANGED: _ClassVar[EventKind]
    EVENT_KIND_GAP: _ClassVar[EventKind]
DIMENSION_UNSPECIFIED: Dimension
DIMENSION_TOTAL_TOKENS: Dimension
DIMENSION_INPUT_TOKENS: Dimension
DIMENSION_OUTPUT_TOKENS: Dimension
DIMENSION_COST_MICRO_USD: Dimension
DIMENSION_REQUESTS: Dimension
DIMENSION_CONCURRENCY: Dimension
DIMENSION_RUN_DURATION_MS: Dimension
DIMENSION_WALL_CLOCK_MS: Dimension
DECISION_UNSPECIFIED: Decision
DECISION_ALLOW: Decision
DECISION_ALLOW_WITH_WARNING: Decision
DECISION_DENY: Decision
LEDGER_STATE_UNSPECIFIED: LedgerState
LEDGER_STATE_OK: LedgerState
LEDGER_STATE_WARNING: LedgerState
LEDGER_STATE_CRITICAL: LedgerState
LEDGER_STATE_FINAL: LedgerState
LEDGER_STATE_EXHAUSTED: LedgerState
SEVERITY_UNSPECIFIED: Severity
SEVERITY_WARNING: Severity
SEVERITY_CRITICAL: Severity
SEVERITY_FINAL: Severity
ENFORCEMENT_UNSPECIFIED: Enforcement
ENFORCEMENT_HARD: Enforcement
ENFORCEMENT_SOFT: Enforcement
ENFORCEMENT_SHADOW: Enforcement
CALENDAR_UNIT_UNSPECIFIED: CalendarUnit
CALENDAR_UNIT_MINUTE: CalendarUnit
CALENDAR_UNIT_HOUR: CalendarUnit
CALENDAR_UNIT_DAY: CalendarUnit
CALENDAR_UNIT_WEEK: CalendarUnit
CALENDAR_UNIT_MONTH: CalendarUnit
LEDGER_CLOSED_REASON_UNSPECIFIED: LedgerClosedReason
LEDGER_CLOSED_REASON_RESET: LedgerClosedReason
LEDGER_CLOSED_REASON_EVICTED: LedgerClosedReason
LEDGER_CLOSED_REASON_RUN_CLOSED: LedgerClosedReason
LEDGER_CLOSED_REASON_POLICY_DELETED: LedgerClosedReason
LEDGER_CLOSED_REASON_POLICY_CHANGED: LedgerClosedReason
LEDGER_CLOSED_REASON_IDLE: LedgerClosedReason
UNPRICED_UNSPECIFIED: Unpriced
UNPRICED_DENY: Unpriced
UNPRICED_ALLOW: Unpriced
BLOCK_REASON_UNSPECIFIED: BlockReason
BLOCK_REASON_OVER_CAP: BlockReason
BLOCK_REASON_UNPRICED: BlockReason
BLOCK_REASON_LEASE: BlockReason
SCOPE_UNSPECIFIED: Scope
SCOPE_LOCAL: Scope
SCOPE_GLOBAL: Scope
ON_UNAVAILABLE_UNSPECIFIED: OnUnavailable
ON_UNAVAILABLE_DENY: OnUnavailable
ON_UNAVAILABLE_ALLOW_LOCAL: OnUnavailable
RUN_END_REASON_UNSPECIFIED: RunEndReason
RUN_END_REASON_CLOSED: RunEndReason
RUN_END_REASON_HEARTBEAT_TIMEOUT: RunEndReason
RUN_END_REASON_DURATION_EXCEEDED: RunEndReason
EVENT_KIND_UNSPECIFIED: EventKind
EVENT_KIND_USAGE_RECORDED: EventKind
EVENT_KIND_THRESHOLD_CROSSED: EventKind
EVENT_KIND_DENIED: EventKind
EVENT_KIND_LEDGER_EXHAUSTED: EventKind
EVENT_KIND_RESERVATION_EXPIRED: EventKind
EVENT_KIND_RUN_OPENED: EventKind
EVENT_KIND_RUN_ENDED: EventKind
EVENT_KIND_WINDOW_ROLLED_OVER: EventKind
EVENT_KIND_LEDGER_CLOSED: EventKind
EVENT_KIND_POLICY_CHANGED: EventKind
EVENT_KIND_GAP: EventKind

class Usage(_message.Message):
    __slots__ = ("input_tokens", "output_tokens", "cached_input_tokens", "cost_micro_usd", "model", "provider", "latency_ms", "cache_write_input_tokens", "reasoning_tokens", "latency_us")
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REASONING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_US_FIELD_NUMBER: _ClassVar[int]
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cost_micro_usd: int
    model: str
    provider: str
    latency_ms: int
    cache_write_input_tokens: int
    reasoning_tokens: int
    latency_us: int
    def __init__(self, input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cached_input_tokens: _Optional[int] = ..., cost_micro_usd: _Optional[int] = ..., model: _Optional[str] = ..., provider: _Optional[str] = ..., latency_ms: _Optional[int] = ..., cache_write_input_tokens: _Optional[int] = ..., reasoning_tokens: _Optional[int] = ..., latency_us: _Optional[int] = ...) -> None: ...

class Totals(_message.Message):
    __slots__ = ("total_tokens", "input_tokens", "output_tokens", "cached_input_tokens", "cost_micro_usd", "requests", "unpriced_requests", "run_duration_ms", "latency_ms_sum", "latency_samples", "first_use", "last_use", "cache_write_input_tokens", "reasoning_tokens", "latency_us_sum", "unpriced_tokens")
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    UNPRICED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    RUN_DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_SUM_FIELD_NUMBER: _ClassVar[int]
    LATENCY_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    FIRST_USE_FIELD_NUMBER: _ClassVar[int]
    LAST_USE_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REASONING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_US_SUM_FIELD_NUMBER: _ClassVar[int]
    UNPRICED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    total_tokens: int
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cost_micro_usd: int
    requests: int
    unpriced_requests: int
    run_duration_ms: int
    latency_ms_sum: int
    latency_samples: int
    first_use: _timestamp_pb2.Timestamp
    last_use: _timestamp_pb2.Timestamp
    cache_write_input_tokens: int
    reasoning_tokens: int
    latency_us_sum: int
    unpriced_tokens: int
    def __init__(self, total_tokens: _Optional[int] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cached_input_tokens: _Optional[int] = ..., cost_micro_usd: _Optional[int] = ..., requests: _Optional[int] = ..., unpriced_requests: _Optional[int] = ..., run_duration_ms: _Optional[int] = ..., latency_ms_sum: _Optional[int] = ..., latency_samples: _Optional[int] = ..., first_use: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_use: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cache_write_input_tokens: _Optional[int] = ..., reasoning_tokens: _Optional[int] = ..., latency_us_sum: _Optional[int] = ..., unpriced_tokens: _Optional[int] = ...) -> None: ...

class DimensionStatus(_message.Message):
    __slots__ = ("dimension", "used", "reserved", "limit", "remaining", "percent", "resets_at")
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    RESETS_AT_FIELD_NUMBER: _ClassVar[int]
    dimension: Dimension
    used: int
    reserved: int
    limit: int
    remaining: int
    percent: int
    resets_at: _timestamp_pb2.Timestamp
    def __init__(self, dimension: _Optional[_Union[Dimension, str]] = ..., used: _Optional[int] = ..., reserved: _Optional[int] = ..., limit: _Optional[int] = ..., remaining: _Optional[int] = ..., percent: _Optional[int] = ..., resets_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class LedgerBrief(_message.Message):
    __slots__ = ("key", "state")
    KEY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    key: str
    state: LedgerState
    def __init__(self, key: _Optional[str] = ..., state: _Optional[_Union[LedgerState, str]] = ...) -> None: ...

class LedgerStatus(_message.Message):
    __slots__ = ("key", "policy", "labels", "state", "dimensions", "totals", "window_start", "window_end", "enforcement", "open_runs", "reservations", "share")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KEY_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    TOTALS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    ENFORCEMENT_FIELD_NUMBER: _ClassVar[int]
    OPEN_RUNS_FIELD_NUMBER: _ClassVar[int]
    RESERVATIONS_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    key: str
    policy: str
    labels: _containers.ScalarMap[str, str]
    state: LedgerState
    dimensions: _containers.RepeatedCompositeFieldContainer[DimensionStatus]
    totals: Totals
    window_start: _timestamp_pb2.Timestamp
    window_end: _timestamp_pb2.Timestamp
    enforcement: Enforcement
    open_runs: int
    reservations: int
    share: GlobalShare
    def __init__(self, key: _Optional[str] = ..., policy: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., state: _Optional[_Union[LedgerState, str]] = ..., dimensions: _Optional[_Iterable[_Union[DimensionStatus, _Mapping]]] = ..., totals: _Optional[_Union[Totals, _Mapping]] = ..., window_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., enforcement: _Optional[_Union[Enforcement, str]] = ..., open_runs: _Optional[int] = ..., reservations: _Optional[int] = ..., share: _Optional[_Union[GlobalShare, _Mapping]] = ...) -> None: ...

class GlobalShare(_message.Message):
    __slots__ = ("dimensions", "sidecars", "reachable", "lease_until", "synced_at")
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    SIDECARS_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    LEASE_UNTIL_FIELD_NUMBER: _ClassVar[int]
    SYNCED_AT_FIELD_NUMBER: _ClassVar[int]
    dimensions: _containers.RepeatedCompositeFieldContainer[GlobalDimension]
    sidecars: int
    reachable: bool
    lease_until: _timestamp_pb2.Timestamp
    synced_at: _timestamp_pb2.Timestamp
    def __init__(self, dimensions: _Optional[_Iterable[_Union[GlobalDimension, _Mapping]]] = ..., sidecars: _Optional[int] = ..., reachable: _Optional[bool] = ..., lease_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., synced_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GlobalDimension(_message.Message):
    __slots__ = ("dimension", "global_used", "lease_remaining", "bound", "unsettled")
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_USED_FIELD_NUMBER: _ClassVar[int]
    LEASE_REMAINING_FIELD_NUMBER: _ClassVar[int]
    BOUND_FIELD_NUMBER: _ClassVar[int]
    UNSETTLED_FIELD_NUMBER: _ClassVar[int]
    dimension: Dimension
    global_used: int
    lease_remaining: int
    bound: int
    unsettled: int
    def __init__(self, dimension: _Optional[_Union[Dimension, str]] = ..., global_used: _Optional[int] = ..., lease_remaining: _Optional[int] = ..., bound: _Optional[int] = ..., unsettled: _Optional[int] = ...) -> None: ...

class Blocker(_message.Message):
    __slots__ = ("policy", "ledger", "dimension", "used", "reserved", "requested", "limit", "shortfall", "enforcement", "resets_at", "reason", "model")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    LEDGER_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    SHORTFALL_FIELD_NUMBER: _ClassVar[int]
    ENFORCEMENT_FIELD_NUMBER: _ClassVar[int]
    RESETS_AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    policy: str
    ledger: str
    dimension: Dimension
    used: int
    reserved: int
    requested: int
    limit: int
    shortfall: int
    enforcement: Enforcement
    resets_at: _timestamp_pb2.Timestamp
    reason: BlockReason
    model: str
    def __init__(self, policy: _Optional[str] = ..., ledger: _Optional[str] = ..., dimension: _Optional[_Union[Dimension, str]] = ..., used: _Optional[int] = ..., reserved: _Optional[int] = ..., requested: _Optional[int] = ..., limit: _Optional[int] = ..., shortfall: _Optional[int] = ..., enforcement: _Optional[_Union[Enforcement, str]] = ..., resets_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[_Union[BlockReason, str]] = ..., model: _Optional[str] = ...) -> None: ...

class ThresholdCrossing(_message.Message):
    __slots__ = ("policy", "ledger", "dimension", "percent", "severity", "used", "limit", "percent_used", "remaining")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    LEDGER_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PERCENT_USED_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    policy: str
    ledger: str
    dimension: Dimension
    percent: int
    severity: Severity
    used: int
    limit: int
    percent_used: int
    remaining: int
    def __init__(self, policy: _Optional[str] = ..., ledger: _Optional[str] = ..., dimension: _Optional[_Union[Dimension, str]] = ..., percent: _Optional[int] = ..., severity: _Optional[_Union[Severity, str]] = ..., used: _Optional[int] = ..., limit: _Optional[int] = ..., percent_used: _Optional[int] = ..., remaining: _Optional[int] = ...) -> None: ...

class Cap(_message.Message):
    __slots__ = ("dimension", "limit")
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    dimension: Dimension
    limit: int
    def __init__(self, dimension: _Optional[_Union[Dimension, str]] = ..., limit: _Optional[int] = ...) -> None: ...

class Threshold(_message.Message):
    __slots__ = ("percent", "severity")
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    percent: int
    severity: Severity
    def __init__(self, percent: _Optional[int] = ..., severity: _Optional[_Union[Severity, str]] = ...) -> None: ...

class Window(_message.Message):
    __slots__ = ("lifetime", "calendar", "fixed", "sliding")
    class Lifetime(_message.Message):
        __slots__ = ()
        def __init__(self) -> None: ...
    class Calendar(_message.Message):
        __slots__ = ("unit", "time_zone")
        UNIT_FIELD_NUMBER: _ClassVar[int]
        TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
        unit: CalendarUnit
        time_zone: str
        def __init__(self, unit: _Optional[_Union[CalendarUnit, str]] = ..., time_zone: _Optional[str] = ...) -> None: ...
    class Fixed(_message.Message):
        __slots__ = ("duration",)
        DURATION_FIELD_NUMBER: _ClassVar[int]
        duration: _duration_pb2.Duration
        def __init__(self, duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...
    class Sliding(_message.Message):
        __slots__ = ("duration",)
        DURATION_FIELD_NUMBER: _ClassVar[int]
        duration: _duration_pb2.Duration
        def __init__(self, duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...
    LIFETIME_FIELD_NUMBER: _ClassVar[int]
    CALENDAR_FIELD_NUMBER: _ClassVar[int]
    FIXED_FIELD_NUMBER: _ClassVar[int]
    SLIDING_FIELD_NUMBER: _ClassVar[int]
    lifetime: Window.Lifetime
    calendar: Window.Calendar
    fixed: Window.Fixed
    sliding: Window.Sliding
    def __init__(self, lifetime: _Optional[_Union[Window.Lifetime, _Mapping]] = ..., calendar: _Optional[_Union[Window.Calendar, _Mapping]] = ..., fixed: _Optional[_Union[Window.Fixed, _Mapping]] = ..., sliding: _Optional[_Union[Window.Sliding, _Mapping]] = ...) -> None: ...

class Policy(_message.Message):
    __slots__ = ("name", "description", "match", "per", "caps", "window", "enforcement", "thresholds", "evictable", "close_with_run", "unpriced", "missing", "idle_ttl", "export_ledgers", "scope", "on_unavailable")
    class MatchEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class MissingEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MATCH_FIELD_NUMBER: _ClassVar[int]
    PER_FIELD_NUMBER: _ClassVar[int]
    CAPS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    ENFORCEMENT_FIELD_NUMBER: _ClassVar[int]
    THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    EVICTABLE_FIELD_NUMBER: _ClassVar[int]
    CLOSE_WITH_RUN_FIELD_NUMBER: _ClassVar[int]
    UNPRICED_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    IDLE_TTL_FIELD_NUMBER: _ClassVar[int]
    EXPORT_LEDGERS_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    ON_UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    match: _containers.ScalarMap[str, str]
    per: _containers.RepeatedScalarFieldContainer[str]
    caps: _containers.RepeatedCompositeFieldContainer[Cap]
    window: Window
    enforcement: Enforcement
    thresholds: _containers.RepeatedCompositeFieldContainer[Threshold]
    evictable: bool
    close_with_run: bool
    unpriced: Unpriced
    missing: _containers.ScalarMap[str, str]
    idle_ttl: _duration_pb2.Duration
    export_ledgers: bool
    scope: Scope
    on_unavailable: OnUnavailable
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., match: _Optional[_Mapping[str, str]] = ..., per: _Optional[_Iterable[str]] = ..., caps: _Optional[_Iterable[_Union[Cap, _Mapping]]] = ..., window: _Optional[_Union[Window, _Mapping]] = ..., enforcement: _Optional[_Union[Enforcement, str]] = ..., thresholds: _Optional[_Iterable[_Union[Threshold, _Mapping]]] = ..., evictable: _Optional[bool] = ..., close_with_run: _Optional[bool] = ..., unpriced: _Optional[_Union[Unpriced, str]] = ..., missing: _Optional[_Mapping[str, str]] = ..., idle_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., export_ledgers: _Optional[bool] = ..., scope: _Optional[_Union[Scope, str]] = ..., on_unavailable: _Optional[_Union[OnUnavailable, str]] = ...) -> None: ...

class CheckRequest(_message.Message):
    __slots__ = ("labels", "estimate", "run_id")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LABELS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.ScalarMap[str, str]
    estimate: Usage
    run_id: str
    def __init__(self, labels: _Optional[_Mapping[str, str]] = ..., estimate: _Optional[_Union[Usage, _Mapping]] = ..., run_id: _Optional[str] = ...) -> None: ...

class CheckResponse(_message.Message):
    __slots__ = ("decision", "ledgers", "blockers", "warnings", "cost_known", "estimated_cost_micro_usd")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    LEDGERS_FIELD_NUMBER: _ClassVar[int]
    BLOCKERS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    COST_KNOWN_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_COST_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    ledgers: _containers.RepeatedCompositeFieldContainer[LedgerStatus]
    blockers: _containers.RepeatedCompositeFieldContainer[Blocker]
    warnings: _containers.RepeatedCompositeFieldContainer[Blocker]
    cost_known: bool
    estimated_cost_micro_usd: int
    def __init__(self, decision: _Optional[_Union[Decision, str]] = ..., ledgers: _Optional[_Iterable[_Union[LedgerStatus, _Mapping]]] = ..., blockers: _Optional[_Iterable[_Union[Blocker, _Mapping]]] = ..., warnings: _Optional[_Iterable[_Union[Blocker, _Mapping]]] = ..., cost_known: _Optional[bool] = ..., estimated_cost_micro_usd: _Optional[int] = ...) -> None: ...

class ReserveRequest(_message.Message):
    __slots__ = ("request_id", "labels", "estimate", "ttl", "run_id")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    labels: _containers.ScalarMap[str, str]
    estimate: Usage
    ttl: _duration_pb2.Duration
    run_id: str
    def __init__(self, request_id: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., estimate: _Optional[_Union[Usage, _Mapping]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., run_id: _Optional[str] = ...) -> None: ...

class ReserveResponse(_message.Message):
    __slots__ = ("decision", "reservation_id", "expires_at", "ledgers", "blockers", "warnings", "cost_known", "reserved_cost_micro_usd", "replayed")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    LEDGERS_FIELD_NUMBER: _ClassVar[int]
    BLOCKERS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    COST_KNOWN_FIELD_NUMBER: _ClassVar[int]
    RESERVED_COST_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    reservation_id: str
    expires_at: _timestamp_pb2.Timestamp
    ledgers: _containers.RepeatedCompositeFieldContainer[LedgerBrief]
    blockers: _containers.RepeatedCompositeFieldContainer[Blocker]
    warnings: _containers.RepeatedCompositeFieldContainer[Blocker]
    cost_known: bool
    reserved_cost_micro_usd: int
    replayed: bool
    def __init__(self, decision: _Optional[_Union[Decision, str]] = ..., reservation_id: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ledgers: _Optional[_Iterable[_Union[LedgerBrief, _Mapping]]] = ..., blockers: _Optional[_Iterable[_Union[Blocker, _Mapping]]] = ..., warnings: _Optional[_Iterable[_Union[Blocker, _Mapping]]] = ..., cost_known: _Optional[bool] = ..., reserved_cost_micro_usd: _Optional[int] = ..., replayed: _Optional[bool] = ...) -> None: ...

class CommitRequest(_message.Message):
    __slots__ = ("request_id", "reservation_id", "actual")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    reservation_id: str
    actual: Usage
    def __init__(self, request_id: _Optional[str] = ..., reservation_id: _Optional[str] = ..., actual: _Optional[_Union[Usage, _Mapping]] = ...) -> None: ...

class CommitResponse(_message.Message):
    __slots__ = ("ledgers", "crossings", "overruns", "cost_known", "cost_micro_usd", "replayed")
    LEDGERS_FIELD_NUMBER: _ClassVar[int]
    CROSSINGS_FIELD_NUMBER: _ClassVar[int]
    OVERRUNS_FIELD_NUMBER: _ClassVar[int]
    COST_KNOWN_FIELD_NUMBER: _ClassVar[int]
    COST_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    ledgers: _containers.RepeatedCompositeFieldContainer[LedgerBrief]
    crossings: _containers.RepeatedCompositeFieldContainer[ThresholdCrossing]
    overruns: _containers.RepeatedCompositeFieldContainer[Overrun]
    cost_known: bool
    cost_micro_usd: int
    replayed: bool
    def __init__(self, ledgers: _Optional[_Iterable[_Union[LedgerBrief, _Mapping]]] = ..., crossings: _Optional[_Iterable[_Union[ThresholdCrossing, _Mapping]]] = ..., overruns: _Optional[_Iterable[_Union[Overrun, _Mapping]]] = ..., cost_known: _Optional[bool] = ..., cost_micro_usd: _Optional[int] = ..., replayed: _Optional[bool] = ...) -> None: ...

class Overrun(_message.Message):
    __slots__ = ("dimension", "reserved", "actual")
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_FIELD_NUMBER: _ClassVar[int]
    dimension: Dimension
    reserved: int
    actual: int
    def __init__(self, dimension: _Optional[_Union[Dimension, str]] = ..., reserved: _Optional[int] = ..., actual: _Optional[int] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("request_id", "reservation_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    reservation_id: str
    def __init__(self, request_id: _Optional[str] = ..., reservation_id: _Optional[str] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ("released", "replayed")
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    released: bool
    replayed: bool
    def __init__(self, released: _Optional[bool] = ..., replayed: _Optional[bool] = ...) -> None: ...

class ConsumeRequest(_message.Message):
    __slots__ = ("request_id", "labels", "usage", "run_id")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    labels: _containers.ScalarMap[str, str]
    usage: Usage
    run_id: str
    def __init__(self, request_id: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., run_id: _Optional[str] = ...) -> None: ...

class ConsumeResponse(_message.Message):
    __slots__ = ("ledgers", "crossings", "cost_known", "cost_micro_usd", "replayed")
    LEDGERS_FIELD_NUMBER: _ClassVar[int]
    CROSSINGS_FIELD_NUMBER: _ClassVar[int]
    COST_KNOWN_FIELD_NUMBER: _ClassVar[int]
    COST_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    ledgers: _containers.RepeatedCompositeFieldContainer[LedgerBrief]
    crossings: _containers.RepeatedCompositeFieldContainer[ThresholdCrossing]
    cost_known: bool
    cost_micro_usd: int
    replayed: bool
    def __init__(self, ledgers: _Optional[_Iterable[_Union[LedgerBrief, _Mapping]]] = ..., crossings: _Optional[_Iterable[_Union[ThresholdCrossing, _Mapping]]] = ..., cost_known: _Optional[bool] = ..., cost_micro_usd: _Optional[int] = ..., replayed: _Optional[bool] = ...) -> None: ...

class ConsumeStreamRequest(_message.Message):
    __slots__ = ("sequence", "request")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    request: ConsumeRequest
    def __init__(self, sequence: _Optional[int] = ..., request: _Optional[_Union[ConsumeRequest, _Mapping]] = ...) -> None: ...

class ConsumeStreamResponse(_message.Message):
    __slots__ = ("sequence", "response", "error")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    response: ConsumeResponse
    error: StreamError
    def __init__(self, sequence: _Optional[int] = ..., response: _Optional[_Union[ConsumeResponse, _Mapping]] = ..., error: _Optional[_Union[StreamError, _Mapping]] = ...) -> None: ...

class BatchOperation(_message.Message):
    __slots__ = ("check", "reserve", "commit", "release", "consume")
    CHECK_FIELD_NUMBER: _ClassVar[int]
    RESERVE_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    CONSUME_FIELD_NUMBER: _ClassVar[int]
    check: CheckRequest
    reserve: ReserveRequest
    commit: CommitRequest
    release: ReleaseRequest
    consume: ConsumeRequest
    def __init__(self, check: _Optional[_Union[CheckRequest, _Mapping]] = ..., reserve: _Optional[_Union[ReserveRequest, _Mapping]] = ..., commit: _Optional[_Union[CommitRequest, _Mapping]] = ..., release: _Optional[_Union[ReleaseRequest, _Mapping]] = ..., consume: _Optional[_Union[ConsumeRequest, _Mapping]] = ...) -> None: ...

class BatchRequest(_message.Message):
    __slots__ = ("operations",)
    OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    operations: _containers.RepeatedCompositeFieldContainer[BatchOperation]
    def __init__(self, operations: _Optional[_Iterable[_Union[BatchOperation, _Mapping]]] = ...) -> None: ...

class BatchResult(_message.Message):
    __slots__ = ("check", "reserve", "commit", "release", "consume", "error")
    CHECK_FIELD_NUMBER: _ClassVar[int]
    RESERVE_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    CONSUME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    check: CheckResponse
    reserve: ReserveResponse
    commit: CommitResponse
    release: ReleaseResponse
    consume: ConsumeResponse
    error: StreamError
    def __init__(self, check: _Optional[_Union[CheckResponse, _Mapping]] = ..., reserve: _Optional[_Union[ReserveResponse, _Mapping]] = ..., commit: _Optional[_Union[CommitResponse, _Mapping]] = ..., release: _Optional[_Union[ReleaseResponse, _Mapping]] = ..., consume: _Optional[_Union[ConsumeResponse, _Mapping]] = ..., error: _Optional[_Union[StreamError, _Mapping]] = ...) -> None: ...

class BatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[BatchResult]
    def __init__(self, results: _Optional[_Iterable[_Union[BatchResult, _Mapping]]] = ...) -> None: ...

class BatchStreamRequest(_message.Message):
    __slots__ = ("sequence", "batch")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    batch: BatchRequest
    def __init__(self, sequence: _Optional[int] = ..., batch: _Optional[_Union[BatchRequest, _Mapping]] = ...) -> None: ...

class BatchStreamResponse(_message.Message):
    __slots__ = ("sequence", "response", "error")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    response: BatchResponse
    error: StreamError
    def __init__(self, sequence: _Optional[int] = ..., response: _Optional[_Union[BatchResponse, _Mapping]] = ..., error: _Optional[_Union[StreamError, _Mapping]] = ...) -> None: ...

class StreamError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class OpenRunRequest(_message.Message):
    __slots__ = ("request_id", "labels", "run_id", "ttl")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    labels: _containers.ScalarMap[str, str]
    run_id: str
    ttl: _duration_pb2.Duration
    def __init__(self, request_id: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., run_id: _Optional[str] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class OpenRunResponse(_message.Message):
    __slots__ = ("decision", "blockers", "warnings", "expires_at", "deadline", "ledgers", "replayed")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    BLOCKERS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    LEDGERS_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    blockers: _containers.RepeatedCompositeFieldContainer[Blocker]
    warnings: _containers.RepeatedCompositeFieldContainer[Blocker]
    expires_at: _timestamp_pb2.Timestamp
    deadline: _timestamp_pb2.Timestamp
    ledgers: _containers.RepeatedCompositeFieldContainer[LedgerBrief]
    replayed: bool
    def __init__(self, decision: _Optional[_Union[Decision, str]] = ..., blockers: _Optional[_Iterable[_Union[Blocker, _Mapping]]] = ..., warnings: _Optional[_Iterable[_Union[Blocker, _Mapping]]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ledgers: _Optional[_Iterable[_Union[LedgerBrief, _Mapping]]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("expires_at", "deadline")
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    expires_at: _timestamp_pb2.Timestamp
    deadline: _timestamp_pb2.Timestamp
    def __init__(self, expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CloseRunRequest(_message.Message):
    __slots__ = ("request_id", "run_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    run_id: str
    def __init__(self, request_id: _Optional[str] = ..., run_id: _Optional[str] = ...) -> None: ...

class CloseRunResponse(_message.Message):
    __slots__ = ("totals", "duration", "closed_ledgers", "replayed")
    TOTALS_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    CLOSED_LEDGERS_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    totals: Totals
    duration: _duration_pb2.Duration
    closed_ledgers: _containers.RepeatedCompositeFieldContainer[LedgerStatus]
    replayed: bool
    def __init__(self, totals: _Optional[_Union[Totals, _Mapping]] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., closed_ledgers: _Optional[_Iterable[_Union[LedgerStatus, _Mapping]]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("selector", "kinds", "min_severity", "after_seq")
    class SelectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    MIN_SEVERITY_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    selector: _containers.ScalarMap[str, str]
    kinds: _containers.RepeatedScalarFieldContainer[EventKind]
    min_severity: Severity
    after_seq: int
    def __init__(self, selector: _Optional[_Mapping[str, str]] = ..., kinds: _Optional[_Iterable[_Union[EventKind, str]]] = ..., min_severity: _Optional[_Union[Severity, str]] = ..., after_seq: _Optional[int] = ...) -> None: ...

class SubscribeResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: Event
    def __init__(self, event: _Optional[_Union[Event, _Mapping]] = ...) -> None: ...

class GetLedgerRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class GetLedgerResponse(_message.Message):
    __slots__ = ("ledger",)
    LEDGER_FIELD_NUMBER: _ClassVar[int]
    ledger: LedgerStatus
    def __init__(self, ledger: _Optional[_Union[LedgerStatus, _Mapping]] = ...) -> None: ...

class ListLedgersRequest(_message.Message):
    __slots__ = ("policy", "selector", "min_state", "page_size", "page_token")
    class SelectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    POLICY_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    MIN_STATE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    policy: str
    selector: _containers.ScalarMap[str, str]
    min_state: LedgerState
    page_size: int
    page_token: str
    def __init__(self, policy: _Optional[str] = ..., selector: _Optional[_Mapping[str, str]] = ..., min_state: _Optional[_Union[LedgerState, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListLedgersResponse(_message.Message):
    __slots__ = ("ledgers", "next_page_token")
    LEDGERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ledgers: _containers.RepeatedCompositeFieldContainer[LedgerStatus]
    next_page_token: str
    def __init__(self, ledgers: _Optional[_Iterable[_Union[LedgerStatus, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ("selector", "page_size", "page_token")
    class SelectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    selector: _containers.ScalarMap[str, str]
    page_size: int
    page_token: str
    def __init__(self, selector: _Optional[_Mapping[str, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class RunStatus(_message.Message):
    __slots__ = ("run_id", "labels", "opened_at", "last_heartbeat", "expires_at", "deadline", "totals")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    OPENED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    TOTALS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    labels: _containers.ScalarMap[str, str]
    opened_at: _timestamp_pb2.Timestamp
    last_heartbeat: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    deadline: _timestamp_pb2.Timestamp
    totals: Totals
    def __init__(self, run_id: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., opened_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_heartbeat: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., totals: _Optional[_Union[Totals, _Mapping]] = ...) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs", "next_page_token")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[RunStatus]
    next_page_token: str
    def __init__(self, runs: _Optional[_Iterable[_Union[RunStatus, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetPriceRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class ModelPrice(_message.Message):
    __slots__ = ("model", "input_micro_usd", "output_micro_usd", "cached_input_micro_usd", "cache_write_input_micro_usd", "reasoning_micro_usd", "source")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUT_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    CACHED_INPUT_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_INPUT_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    REASONING_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    model: str
    input_micro_usd: int
    output_micro_usd: int
    cached_input_micro_usd: int
    cache_write_input_micro_usd: int
    reasoning_micro_usd: int
    source: str
    def __init__(self, model: _Optional[str] = ..., input_micro_usd: _Optional[int] = ..., output_micro_usd: _Optional[int] = ..., cached_input_micro_usd: _Optional[int] = ..., cache_write_input_micro_usd: _Optional[int] = ..., reasoning_micro_usd: _Optional[int] = ..., source: _Optional[str] = ...) -> None: ...

class GetPriceResponse(_message.Message):
    __slots__ = ("price", "normalized", "reason", "table")
    PRICE_FIELD_NUMBER: _ClassVar[int]
    NORMALIZED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    price: ModelPrice
    normalized: str
    reason: str
    table: _containers.RepeatedCompositeFieldContainer[ModelPrice]
    def __init__(self, price: _Optional[_Union[ModelPrice, _Mapping]] = ..., normalized: _Optional[str] = ..., reason: _Optional[str] = ..., table: _Optional[_Iterable[_Union[ModelPrice, _Mapping]]] = ...) -> None: ...

class PutPolicyRequest(_message.Message):
    __slots__ = ("policy", "apply_to_existing", "validate_only")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    APPLY_TO_EXISTING_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    policy: Policy
    apply_to_existing: bool
    validate_only: bool
    def __init__(self, policy: _Optional[_Union[Policy, _Mapping]] = ..., apply_to_existing: _Optional[bool] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class PutPolicyResponse(_message.Message):
    __slots__ = ("policy", "created", "changed")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    policy: Policy
    created: bool
    changed: bool
    def __init__(self, policy: _Optional[_Union[Policy, _Mapping]] = ..., created: _Optional[bool] = ..., changed: _Optional[bool] = ...) -> None: ...

class DeletePolicyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeletePolicyResponse(_message.Message):
    __slots__ = ("closed_ledgers",)
    CLOSED_LEDGERS_FIELD_NUMBER: _ClassVar[int]
    closed_ledgers: int
    def __init__(self, closed_ledgers: _Optional[int] = ...) -> None: ...

class ListPoliciesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPoliciesResponse(_message.Message):
    __slots__ = ("policies", "config_file_policies")
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FILE_POLICIES_FIELD_NUMBER: _ClassVar[int]
    policies: _containers.RepeatedCompositeFieldContainer[Policy]
    config_file_policies: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, policies: _Optional[_Iterable[_Union[Policy, _Mapping]]] = ..., config_file_policies: _Optional[_Iterable[str]] = ...) -> None: ...

class ResetLedgerRequest(_message.Message):
    __slots__ = ("request_id", "key")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    key: str
    def __init__(self, request_id: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class ResetLedgerResponse(_message.Message):
    __slots__ = ("final", "replayed")
    FINAL_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    final: LedgerStatus
    replayed: bool
    def __init__(self, final: _Optional[_Union[LedgerStatus, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class SetLedgerLimitsRequest(_message.Message):
    __slots__ = ("key", "caps")
    KEY_FIELD_NUMBER: _ClassVar[int]
    CAPS_FIELD_NUMBER: _ClassVar[int]
    key: str
    caps: _containers.RepeatedCompositeFieldContainer[Cap]
    def __init__(self, key: _Optional[str] = ..., caps: _Optional[_Iterable[_Union[Cap, _Mapping]]] = ...) -> None: ...

class SetLedgerLimitsResponse(_message.Message):
    __slots__ = ("ledger",)
    LEDGER_FIELD_NUMBER: _ClassVar[int]
    ledger: LedgerStatus
    def __init__(self, ledger: _Optional[_Union[LedgerStatus, _Mapping]] = ...) -> None: ...

class GetServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetServerInfoResponse(_message.Message):
    __slots__ = ("version", "started_at", "listeners", "durability", "state_dir", "core_compiled", "ledgers", "reservations", "runs", "subscribers", "policies", "last_event_seq", "journal_lsn", "snapshot_lsn", "pid", "idempotency_window", "remembered_requests", "remembered_requests_max", "remembered_request_bytes", "remembered_request_bytes_max", "idempotency_max_age", "label_bytes", "label_bytes_max", "max_batch_operations", "gc_collections", "longest_gc_pause", "global_info")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    LISTENERS_FIELD_NUMBER: _ClassVar[int]
    DURABILITY_FIELD_NUMBER: _ClassVar[int]
    STATE_DIR_FIELD_NUMBER: _ClassVar[int]
    CORE_COMPILED_FIELD_NUMBER: _ClassVar[int]
    LEDGERS_FIELD_NUMBER: _ClassVar[int]
    RESERVATIONS_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBERS_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    LAST_EVENT_SEQ_FIELD_NUMBER: _ClassVar[int]
    JOURNAL_LSN_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_LSN_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_WINDOW_FIELD_NUMBER: _ClassVar[int]
    REMEMBERED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    REMEMBERED_REQUESTS_MAX_FIELD_NUMBER: _ClassVar[int]
    REMEMBERED_REQUEST_BYTES_FIELD_NUMBER: _ClassVar[int]
    REMEMBERED_REQUEST_BYTES_MAX_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_MAX_AGE_FIELD_NUMBER: _ClassVar[int]
    LABEL_BYTES_FIELD_NUMBER: _ClassVar[int]
    LABEL_BYTES_MAX_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    GC_COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    LONGEST_GC_PAUSE_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_INFO_FIELD_NUMBER: _ClassVar[int]
    version: str
    started_at: _timestamp_pb2.Timestamp
    listeners: _containers.RepeatedScalarFieldContainer[str]
    durability: str
    state_dir: str
    core_compiled: bool
    ledgers: int
    reservations: int
    runs: int
    subscribers: int
    policies: int
    last_event_seq: int
    journal_lsn: int
    snapshot_lsn: int
    pid: int
    idempotency_window: _duration_pb2.Duration
    remembered_requests: int
    remembered_requests_max: int
    remembered_request_bytes: int
    remembered_request_bytes_max: int
    idempotency_max_age: _duration_pb2.Duration
    label_bytes: int
    label_bytes_max: int
    max_batch_operations: int
    gc_collections: int
    longest_gc_pause: _duration_pb2.Duration
    global_info: GlobalInfo
    def __init__(self, version: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., listeners: _Optional[_Iterable[str]] = ..., durability: _Optional[str] = ..., state_dir: _Optional[str] = ..., core_compiled: _Optional[bool] = ..., ledgers: _Optional[int] = ..., reservations: _Optional[int] = ..., runs: _Optional[int] = ..., subscribers: _Optional[int] = ..., policies: _Optional[int] = ..., last_event_seq: _Optional[int] = ..., journal_lsn: _Optional[int] = ..., snapshot_lsn: _Optional[int] = ..., pid: _Optional[int] = ..., idempotency_window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., remembered_requests: _Optional[int] = ..., remembered_requests_max: _Optional[int] = ..., remembered_request_bytes: _Optional[int] = ..., remembered_request_bytes_max: _Optional[int] = ..., idempotency_max_age: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., label_bytes: _Optional[int] = ..., label_bytes_max: _Optional[int] = ..., max_batch_operations: _Optional[int] = ..., gc_collections: _Optional[int] = ..., longest_gc_pause: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., global_info: _Optional[_Union[GlobalInfo, _Mapping]] = ...) -> None: ...

class GlobalInfo(_message.Message):
    __slots__ = ("redis", "sidecar_id", "reachable", "redis_calls", "shares", "closing_shares", "closing_shares_dropped")
    REDIS_FIELD_NUMBER: _ClassVar[int]
    SIDECAR_ID_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    REDIS_CALLS_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    CLOSING_SHARES_FIELD_NUMBER: _ClassVar[int]
    CLOSING_SHARES_DROPPED_FIELD_NUMBER: _ClassVar[int]
    redis: str
    sidecar_id: str
    reachable: bool
    redis_calls: int
    shares: int
    closing_shares: int
    closing_shares_dropped: int
    def __init__(self, redis: _Optional[str] = ..., sidecar_id: _Optional[str] = ..., reachable: _Optional[bool] = ..., redis_calls: _Optional[int] = ..., shares: _Optional[int] = ..., closing_shares: _Optional[int] = ..., closing_shares_dropped: _Optional[int] = ...) -> None: ...

class SnapshotRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SnapshotResponse(_message.Message):
    __slots__ = ("path", "sequence", "size_bytes", "taken_at")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    TAKEN_AT_FIELD_NUMBER: _ClassVar[int]
    path: str
    sequence: int
    size_bytes: int
    taken_at: _timestamp_pb2.Timestamp
    def __init__(self, path: _Optional[str] = ..., sequence: _Optional[int] = ..., size_bytes: _Optional[int] = ..., taken_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("seq", "at", "labels", "usage_recorded", "threshold_crossed", "denied", "ledger_exhausted", "reservation_expired", "run_opened", "run_ended", "window_rolled_over", "ledger_closed", "policy_changed", "gap")
    class UsageRecorded(_message.Message):
        __slots__ = ("request_id", "run_id", "usage", "cost_micro_usd", "cost_known", "ledger_keys")
        REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
        RUN_ID_FIELD_NUMBER: _ClassVar[int]
        USAGE_FIELD_NUMBER: _ClassVar[int]
        COST_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
        COST_KNOWN_FIELD_NUMBER: _ClassVar[int]
        LEDGER_KEYS_FIELD_NUMBER: _ClassVar[int]
        request_id: str
        run_id: str
        usage: Usage
        cost_micro_usd: int
        cost_known: bool
        ledger_keys: _containers.RepeatedScalarFieldContainer[str]
        def __init__(self, request_id: _Optional[str] = ..., run_id: _Optional[str] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., cost_micro_usd: _Optional[int] = ..., cost_known: _Optional[bool] = ..., ledger_keys: _Optional[_Iterable[str]] = ...) -> None: ...
    class ThresholdCrossed(_message.Message):
        __slots__ = ("crossing",)
        CROSSING_FIELD_NUMBER: _ClassVar[int]
        crossing: ThresholdCrossing
        def __init__(self, crossing: _Optional[_Union[ThresholdCrossing, _Mapping]] = ...) -> None: ...
    class Denied(_message.Message):
        __slots__ = ("blocker", "request_id", "run_id")
        BLOCKER_FIELD_NUMBER: _ClassVar[int]
        REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
        RUN_ID_FIELD_NUMBER: _ClassVar[int]
        blocker: Blocker
        request_id: str
        run_id: str
        def __init__(self, blocker: _Optional[_Union[Blocker, _Mapping]] = ..., request_id: _Optional[str] = ..., run_id: _Optional[str] = ...) -> None: ...
    class LedgerExhausted(_message.Message):
        __slots__ = ("policy", "ledger", "dimension", "used", "limit")
        POLICY_FIELD_NUMBER: _ClassVar[int]
        LEDGER_FIELD_NUMBER: _ClassVar[int]
        DIMENSION_FIELD_NUMBER: _ClassVar[int]
        USED_FIELD_NUMBER: _ClassVar[int]
        LIMIT_FIELD_NUMBER: _ClassVar[int]
        policy: str
        ledger: str
        dimension: Dimension
        used: int
        limit: int
        def __init__(self, policy: _Optional[str] = ..., ledger: _Optional[str] = ..., dimension: _Optional[_Union[Dimension, str]] = ..., used: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...
    class ReservationExpired(_message.Message):
        __slots__ = ("reservation_id", "estimate")
        RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
        ESTIMATE_FIELD_NUMBER: _ClassVar[int]
        reservation_id: str
        estimate: Usage
        def __init__(self, reservation_id: _Optional[str] = ..., estimate: _Optional[_Union[Usage, _Mapping]] = ...) -> None: ...
    class RunOpened(_message.Message):
        __slots__ = ("run_id",)
        RUN_ID_FIELD_NUMBER: _ClassVar[int]
        run_id: str
        def __init__(self, run_id: _Optional[str] = ...) -> None: ...
    class RunEnded(_message.Message):
        __slots__ = ("run_id", "reason", "totals", "duration")
        RUN_ID_FIELD_NUMBER: _ClassVar[int]
        REASON_FIELD_NUMBER: _ClassVar[int]
        TOTALS_FIELD_NUMBER: _ClassVar[int]
        DURATION_FIELD_NUMBER: _ClassVar[int]
        run_id: str
        reason: RunEndReason
        totals: Totals
        duration: _duration_pb2.Duration
        def __init__(self, run_id: _Optional[str] = ..., reason: _Optional[_Union[RunEndReason, str]] = ..., totals: _Optional[_Union[Totals, _Mapping]] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...
    class WindowRolledOver(_message.Message):
        __slots__ = ("policy", "ledger", "window_start", "window_end", "totals")
        POLICY_FIELD_NUMBER: _ClassVar[int]
        LEDGER_FIELD_NUMBER: _ClassVar[int]
        WINDOW_START_FIELD_NUMBER: _ClassVar[int]
        WINDOW_END_FIELD_NUMBER: _ClassVar[int]
        TOTALS_FIELD_NUMBER: _ClassVar[int]
        policy: str
        ledger: str
        window_start: _timestamp_pb2.Timestamp
        window_end: _timestamp_pb2.Timestamp
        totals: Totals
        def __init__(self, policy: _Optional[str] = ..., ledger: _Optional[str] = ..., window_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., totals: _Optional[_Union[Totals, _Mapping]] = ...) -> None: ...
    class LedgerClosed(_message.Message):
        __slots__ = ("policy", "ledger", "reason", "totals")
        POLICY_FIELD_NUMBER: _ClassVar[int]
        LEDGER_FIELD_NUMBER: _ClassVar[int]
        REASON_FIELD_NUMBER: _ClassVar[int]
        TOTALS_FIELD_NUMBER: _ClassVar[int]
        policy: str
        ledger: str
        reason: LedgerClosedReason
        totals: Totals
        def __init__(self, policy: _Optional[str] = ..., ledger: _Optional[str] = ..., reason: _Optional[_Union[LedgerClosedReason, str]] = ..., totals: _Optional[_Union[Totals, _Mapping]] = ...) -> None: ...
    class PolicyChanged(_message.Message):
        __slots__ = ("name", "deleted")
        NAME_FIELD_NUMBER: _ClassVar[int]
        DELETED_FIELD_NUMBER: _ClassVar[int]
        name: str
        deleted: bool
        def __init__(self, name: _Optional[str] = ..., deleted: _Optional[bool] = ...) -> None: ...
    class Gap(_message.Message):
        __slots__ = ("oldest_available_seq",)
        OLDEST_AVAILABLE_SEQ_FIELD_NUMBER: _ClassVar[int]
        oldest_available_seq: int
        def __init__(self, oldest_available_seq: _Optional[int] = ...) -> None: ...
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SEQ_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    USAGE_RECORDED_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_CROSSED_FIELD_NUMBER: _ClassVar[int]
    DENIED_FIELD_NUMBER: _ClassVar[int]
    LEDGER_EXHAUSTED_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_EXPIRED_FIELD_NUMBER: _ClassVar[int]
    RUN_OPENED_FIELD_NUMBER: _ClassVar[int]
    RUN_ENDED_FIELD_NUMBER: _ClassVar[int]
    WINDOW_ROLLED_OVER_FIELD_NUMBER: _ClassVar[int]
    LEDGER_CLOSED_FIELD_NUMBER: _ClassVar[int]
    POLICY_CHANGED_FIELD_NUMBER: _ClassVar[int]
    GAP_FIELD_NUMBER: _ClassVar[int]
    seq: int
    at: _timestamp_pb2.Timestamp
    labels: _containers.ScalarMap[str, str]
    usage_recorded: Event.UsageRecorded
    threshold_crossed: Event.ThresholdCrossed
    denied: Event.Denied
    ledger_exhausted: Event.LedgerExhausted
    reservation_expired: Event.ReservationExpired
    run_opened: Event.RunOpened
    run_ended: Event.RunEnded
    window_rolled_over: Event.WindowRolledOver
    ledger_closed: Event.LedgerClosed
    policy_changed: Event.PolicyChanged
    gap: Event.Gap
    def __init__(self, seq: _Optional[int] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., usage_recorded: _Optional[_Union[Event.UsageRecorded, _Mapping]] = ..., threshold_crossed: _Optional[_Union[Event.ThresholdCrossed, _Mapping]] = ..., denied: _Optional[_Union[Event.Denied, _Mapping]] = ..., ledger_exhausted: _Optional[_Union[Event.LedgerExhausted, _Mapping]] = ..., reservation_expired: _Optional[_Union[Event.ReservationExpired, _Mapping]] = ..., run_opened: _Optional[_Union[Event.RunOpened, _Mapping]] = ..., run_ended: _Optional[_Union[Event.RunEnded, _Mapping]] = ..., window_rolled_over: _Optional[_Union[Event.WindowRolledOver, _Mapping]] = ..., ledger_closed: _Optional[_Union[Event.LedgerClosed, _Mapping]] = ..., policy_changed: _Optional[_Union[Event.PolicyChanged, _Mapping]] = ..., gap: _Optional[_Union[Event.Gap, _Mapping]] = ...) -> None: ...
