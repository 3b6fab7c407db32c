"""The monitoring examples (examples/monitoring/) work as shipped, against the metrics contract.

Goal: an operator who copies the Grafana dashboard, the alerting rules, the Prometheus
scrape config or the OpenTelemetry Collector config gets files that load, and whose
queries name only series the daemon exports. promtool (Debian's `prometheus` package,
installed by .ci/run) checks the rules and the config, runs the rules' unit tests
(alerts_test.yml: each alert fires on the synthetic series it should and stays silent on
the others) and parses every dashboard query. METRICS below is the contract's list of
Prometheus series names and labels: renaming a metric in the daemon without updating the
examples (and this list) fails here. The end-to-end check that the queries return series
from a running daemon uses `examples.monitoring.queries.dashboard_queries` as well.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from examples.monitoring.queries import DASHBOARD, concrete_expr, dashboard_queries, iter_panels

ROOT = Path(__file__).parents[2]
MONITORING = ROOT / "examples" / "monitoring"
ALERTS = MONITORING / "alerts.yml"
ALERTS_TEST = MONITORING / "alerts_test.yml"
PROMETHEUS_CONFIG = MONITORING / "prometheus.yml"
COLLECTOR_CONFIG = MONITORING / "otel-collector.yaml"

# --- The contract: Prometheus series names (OTel names through the Prometheus exporter) ---

MODEL = frozenset({"gen_ai_request_model", "gen_ai_provider_name"})
OPERATOR = frozenset({"tenant", "agent"})  # operator labels, on by default
USAGE = MODEL | OPERATOR
LEDGER = frozenset({"budgetd_policy", "budgetd_dimension"})  # plus the policy's per labels

COUNTERS: dict[str, frozenset[str]] = {
    "budgetd_tokens_total": USAGE | {"gen_ai_token_type"},
    "budgetd_token_parts_total": USAGE | {"budgetd_token_part"},
    "budgetd_cost_USD_total": USAGE,
    "budgetd_usage_records_total": USAGE,
    "budgetd_usage_unpriced_total": USAGE,
    "budgetd_decisions_total": OPERATOR | LEDGER | {"budgetd_operation", "budgetd_decision"},
    "budgetd_thresholds_crossed_total": OPERATOR | LEDGER | {"budgetd_severity"},
    "budgetd_reservations_total": frozenset({"budgetd_outcome"}),
    "budgetd_overruns_total": frozenset({"budgetd_dimension"}),
    "budgetd_runs_opened_total": frozenset(),
    "budgetd_runs_ended_total": frozenset({"budgetd_reason"}),
    "budgetd_ledgers_created_total": frozenset({"budgetd_policy"}),
    "budgetd_ledgers_closed_total": frozenset({"budgetd_policy", "budgetd_reason"}),
    "budgetd_telemetry_series_dropped_total": frozenset(),
}
GAUGES: dict[str, frozenset[str]] = {
    "budgetd_ledgers": frozenset(),
    "budgetd_reservations_open": frozenset(),
    "budgetd_runs_open": frozenset(),
    "budgetd_subscribers": frozenset(),
    "budgetd_event_log_depth": frozenset(),
    "budgetd_journal_backlog": frozenset(),
    # Per ledger, for policies that opt in; the per labels vary by policy (tenant, agent...).
    "budgetd_ledger_used": LEDGER | OPERATOR,
    "budgetd_ledger_limit": LEDGER | OPERATOR,
    "budgetd_ledger_remaining": LEDGER | OPERATOR,
    "budgetd_ledger_utilization": LEDGER | OPERATOR,
}
HISTOGRAMS: dict[str, frozenset[str]] = {
    "gen_ai_client_token_usage": USAGE | {"gen_ai_token_type", "gen_ai_operation_name"},
    "rpc_server_call_duration_seconds": frozenset(
        {"rpc_system_name", "rpc_method", "rpc_response_status_code"}
    ),
    "budgetd_snapshot_duration_seconds": frozenset(),
    "budgetd_journal_fsync_duration_seconds": frozenset(),
    "budgetd_journal_fsync_records": frozenset(),
}
OTHERS: dict[str, frozenset[str]] = {
    "target_info": frozenset({"service_name", "service_version", "service_instance_id"}),
    "up": frozenset(),  # Prometheus' own, per scrape target
}
# Labels every series can carry: the scrape's, the exporter's.
EVERY_SERIES = frozenset({"job", "instance", "otel_scope_name"})


def _series_labels() -> dict[str, frozenset[str]]:
    series = {**COUNTERS, **GAUGES, **OTHERS}
    for name, labels in HISTOGRAMS.items():
        series[f"{name}_bucket"] = labels | {"le"}
        series[f"{name}_sum"] = labels
        series[f"{name}_count"] = labels
    return {name: labels | EVERY_SERIES for name, labels in series.items()}


METRICS = _series_labels()
ALL_LABELS = frozenset().union(*METRICS.values())

# Label values the contract enumerates.
GRPC_CODES = frozenset(
    {
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    }
)
LABEL_VALUES: dict[str, frozenset[str]] = {
    "gen_ai_token_type": frozenset({"input", "output"}),
    "budgetd_token_part": frozenset({"cached_input", "cache_write_input", "reasoning"}),
    "budgetd_operation": frozenset({"check", "reserve", "open_run"}),
    "budgetd_decision": frozenset({"allow", "warn", "deny"}),
    "budgetd_severity": frozenset({"warning", "critical", "final"}),
    "budgetd_outcome": frozenset({"granted", "committed", "released", "expired"}),
    "budgetd_dimension": frozenset(
        {
            "total_tokens",
            "input_tokens",
            "output_tokens",
            "cost_micro_usd",
            "requests",
            "concurrency",
            "run_duration_ms",
            "wall_clock_ms",
        }
    ),
    "rpc_system_name": frozenset({"grpc"}),
    "rpc_response_status_code": GRPC_CODES,
    "service_name": frozenset({"budgetd"}),
}

# What the dashboard must show (the brief's panels), by the series behind them.
DASHBOARD_MUST_USE = frozenset(
    {
        "budgetd_ledger_used",
        "budgetd_ledger_limit",
        "budgetd_ledger_utilization",
        "budgetd_tokens_total",
        "budgetd_cost_USD_total",
        "budgetd_decisions_total",
        "budgetd_thresholds_crossed_total",
        "rpc_server_call_duration_seconds_bucket",
        "rpc_server_call_duration_seconds_count",
        "budgetd_journal_fsync_duration_seconds_bucket",
        "budgetd_journal_fsync_records_sum",
        "budgetd_journal_fsync_records_count",
        "budgetd_journal_backlog",
        "budgetd_snapshot_duration_seconds_bucket",
        "up",
        "budgetd_ledgers",
        "budgetd_runs_open",
        "budgetd_reservations_open",
        "budgetd_subscribers",
    }
)
ALERTS_MUST_USE = frozenset(
    {
        "budgetd_ledger_utilization",
        "budgetd_decisions_total",
        "budgetd_journal_fsync_duration_seconds_bucket",
        "up",
        "budgetd_telemetry_series_dropped_total",
    }
)

# --- promtool --------------------------------------------------------------------------


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not on PATH: it ships with Debian's `prometheus` package, which "
            ".ci/run installs (apt-get install prometheus)"
        )
    return subprocess.run(
        [path, *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def assert_promtool_ok(*args: str | Path) -> str:
    result = promtool(*args)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(map(str, args))}:\n{output}"
    return output


# --- PromQL, read just enough to name the series and labels an expression uses ---------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_SELECTOR = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)?\s*\{([^}]*)\}")
_MATCHER = re.compile(r'\s*([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*")\s*')
_IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
    | {"and", "or", "unless", "offset", "inf", "nan"}
)


def metric_names(expr: str) -> set[str]:
    """The metric names `expr` selects (functions, keywords and label names left out)."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", "{}", text)
    text = _RANGE.sub("[]", text)
    text = _GROUPING.sub(" ", text)
    return {name for name in _IDENTIFIER.findall(text) if name.lower() not in _KEYWORDS}


def selectors(expr: str) -> Iterator[tuple[str, list[tuple[str, str, str]]]]:
    """(metric name, [(label, operator, value)]) for each `name{...}` selector in `expr`."""
    for match in _SELECTOR.finditer(expr):
        matchers = [
            (label, op, json.loads(value)) for label, op, value in _MATCHER.findall(match[2])
        ]
        whole = re.fullmatch(rf"(?:{_MATCHER.pattern},?)*", match[2])
        assert whole, f"a matcher this test cannot read in {match[0]!r}"
        yield match[1] or "", matchers


def grouping_labels(expr: str) -> set[str]:
    text = _STRING.sub('""', expr)
    return {
        label.strip()
        for _, labels in _GROUPING.findall(text)
        for label in labels.split(",")
        if label.strip()
    }


def contract_violations(where: str, expr: str) -> list[str]:
    """What in `expr` is not in the contract: names, labels, enumerated label values."""
    problems = [
        f"{where}: {name} is not a series of the contract"
        for name in sorted(metric_names(expr))
        if name not in METRICS
    ]
    for name, matchers in selectors(expr):
        allowed = METRICS.get(name, ALL_LABELS)
        for label, op, value in matchers:
            if label not in allowed:
                problems.append(f"{where}: {name or '{...}'} has no label {label}")
            values = LABEL_VALUES.get(label)
            if values is not None and op in {"=", "!="} and value not in values:
                problems.append(f"{where}: {label}={value!r} is not one of {sorted(values)}")
    problems += [
        f"{where}: no series of the contract has the label {label} (by/on/...)"
        for label in sorted(grouping_labels(expr) - ALL_LABELS)
    ]
    return problems


def test_the_promql_reader_finds_names_labels_and_values() -> None:
    expr = (
        'sum by (tenant, le) (rate(budgetd_tokens_total{tenant=~"a|b", gen_ai_token_type="both"}'
        "[5m] offset 1h))"
        ' / on (tenant) group_left max without (agent) (up) or absent(nope{bogus="1"})'
        " and 1e3 > bool 0x1f"
    )
    assert metric_names(expr) == {"budgetd_tokens_total", "up", "nope"}
    assert grouping_labels(expr) == {"tenant", "le", "agent"}
    assert list(selectors(expr)) == [
        ("budgetd_tokens_total", [("tenant", "=~", "a|b"), ("gen_ai_token_type", "=", "both")]),
        ("nope", [("bogus", "=", "1")]),
    ]
    assert contract_violations("e", expr) == [
        "e: nope is not a series of the contract",
        "e: gen_ai_token_type='both' is not one of ['input', 'output']",
        "e: nope has no label bogus",
    ]


# --- Alerting rules --------------------------------------------------------------------


def alert_rules() -> dict[str, dict[str, str]]:
    """alert name -> {"expr": ..., "severity": ..., "summary": ... } read from alerts.yml.

    A reader for the shape alerts.yml is written in (promtool checks it is valid YAML and
    valid rules): `- alert: NAME` items whose keys are one per line, `expr` plain or a
    `|` block, labels and annotations one level down.
    """
    rules: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    block_key: str | None = None
    block_indent = 0
    for line in ALERTS.read_text(encoding="utf-8").splitlines():
        indent = len(line) - len(line.lstrip())
        stripped = line.strip()
        if current is not None and block_key is not None:
            if not stripped:
                continue
            if indent > block_indent:
                current[block_key] += stripped + "\n"
                continue
            block_key = None
        if stripped.startswith("#") or not stripped:
            continue
        if match := re.fullmatch(r"- alert: (\w+)", stripped):
            current = rules.setdefault(match[1], {})
            continue
        if stripped.startswith("- "):  # another group's name, or another list
            current = None
        if current is None:
            continue
        key, _, value = stripped.partition(":")
        value = value.strip()
        if value == "|":
            block_key, block_indent, current[key] = key, indent, ""
        elif value:
            current[key] = json.loads(value) if value.startswith('"') else value
    return rules


def test_alert_rules_pass_promtool_check() -> None:
    output = assert_promtool_ok("check", "rules", ALERTS)
    assert f"SUCCESS: {len(alert_rules())} rules found" in output


def test_alert_rules_unit_tests_pass() -> None:
    """alerts_test.yml: each alert fires when it should and not otherwise."""
    output = assert_promtool_ok("test", "rules", ALERTS_TEST)
    assert "SUCCESS" in output


def test_every_alert_is_tested_firing_and_silent() -> None:
    tests = ALERTS_TEST.read_text(encoding="utf-8")
    evals = re.findall(r"alertname: (\w+)\n\s*exp_alerts:(.*)", tests)
    firing = {name for name, rest in evals if rest.strip() != "[]"}
    silent = {name for name, rest in evals if rest.strip() == "[]"}
    names = set(alert_rules())
    assert names - firing == set(), "alerts no test expects to fire"
    assert names - silent == set(), "alerts no test expects to stay silent"
    assert (firing | silent) - names == set(), "tests of alerts alerts.yml does not have"


def test_alerts_cover_the_brief_and_carry_severity_and_hints() -> None:
    rules = alert_rules()
    assert {
        "BudgetdLedgerNearLimit",
        "BudgetdLedgerExhausted",
        "BudgetdDenialsHigh",
        "BudgetdDenialRatioHigh",
        "BudgetdJournalFsyncSlow",
        "BudgetdDown",
        "BudgetdMetricsAbsent",
    } <= set(rules)
    for name, rule in rules.items():
        assert rule.get("severity") in {"warning", "critical"}, name
        for annotation in ("summary", "description", "runbook"):
            assert rule.get(annotation), f"{name} has no {annotation} annotation"
    assert rules["BudgetdLedgerNearLimit"]["severity"] == "warning"
    assert rules["BudgetdLedgerExhausted"]["severity"] == "critical"
    assert "{{ $labels.budgetd_policy }}" in rules["BudgetdLedgerNearLimit"]["summary"]
    assert rules["BudgetdDown"]["expr"] == 'up{job="budgetd"} == 0'
    assert rules["BudgetdMetricsAbsent"]["expr"] == 'absent(up{job="budgetd"})'


def test_alerts_and_their_tests_use_only_the_contract() -> None:
    rules = alert_rules()
    problems = [
        problem
        for name, rule in rules.items()
        for problem in contract_violations(f"alert {name}", rule["expr"])
    ]
    series = re.findall(r"series: '([^']*)'", ALERTS_TEST.read_text(encoding="utf-8"))
    assert series
    problems += [
        problem for one in series for problem in contract_violations("alerts_test.yml", one)
    ]
    assert problems == []
    used = set().union(*(metric_names(rule["expr"]) for rule in rules.values()))
    assert used >= ALERTS_MUST_USE


# --- Prometheus scrape config ----------------------------------------------------------


def test_prometheus_config_passes_promtool_check_with_its_rule_file() -> None:
    output = assert_promtool_ok("check", "config", PROMETHEUS_CONFIG)
    assert "SUCCESS: 1 rule files found" in output  # alerts.yml, next to the config


def test_prometheus_config_scrapes_the_daemon_as_job_budgetd() -> None:
    text = PROMETHEUS_CONFIG.read_text(encoding="utf-8")
    active = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert re.search(r"^\s+scrape_interval: 15s$", active, re.MULTILINE)
    assert re.search(r"^rule_files:\n\s+- alerts\.yml$", active, re.MULTILINE)
    assert re.search(
        r'- job_name: budgetd\n(\s+\S.*\n)*?\s+- targets: \["127\.0\.0\.1:9464"\]', active
    )


# --- Grafana dashboard -----------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def query_panels() -> list[dict[str, Any]]:
    return [panel for panel in iter_panels(dashboard()["panels"]) if panel["type"] != "row"]


def test_dashboard_templating_datasource_policy_and_tenant() -> None:
    board = dashboard()
    assert 36 <= board["schemaVersion"] <= 41
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    datasource = variables["DS_PROMETHEUS"]
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    for name, metric in (
        ("budgetd_policy", "budgetd_ledgers_created_total"),
        ("tenant", "budgetd_tokens_total"),
    ):
        variable = variables[name]
        assert variable["type"] == "query"
        assert variable["datasource"]["uid"] == "${DS_PROMETHEUS}"
        assert variable["includeAll"] and variable["allValue"] == ".*"
        assert variable["definition"] == f"label_values({metric}, {name})"
        assert name in METRICS[metric]
    for panel in query_panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]


def test_every_dashboard_panel_has_a_query() -> None:
    panels = query_panels()
    titles = [panel["title"] for panel in panels]
    assert len(titles) == len(set(titles)), "panel titles repeat"
    for panel in panels:
        exprs = [target.get("expr", "").strip() for target in panel.get("targets", [])]
        assert exprs and all(exprs), f"panel {panel['title']!r} has a target without a query"
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_dashboard_windows_and_variables_are_grafana_s() -> None:
    """Rate windows are `$__rate_interval`; variables appear only as regex matchers."""
    names = {variable["name"] for variable in dashboard()["templating"]["list"]}
    for panel in query_panels():
        for target in panel["targets"]:
            expr = target["expr"]
            windows = set(_RANGE.findall(expr))
            assert windows <= {"[$__rate_interval]"}, (panel["title"], windows)
            assert ("rate(" in expr or "increase(" in expr) == bool(windows), panel["title"]
            variables = re.findall(r"\$\{?(\w+)", expr)
            for variable in variables:
                if variable == "__rate_interval":
                    continue
                assert variable in names, (panel["title"], variable)
                assert f'=~"${variable}"' in expr, (panel["title"], variable)


def test_dashboard_queries_helper_makes_plain_promql() -> None:
    queries = dashboard_queries()
    targets = [target for panel in query_panels() for target in panel["targets"]]
    assert len(queries) == len(targets)
    assert [title for title, _ in queries] == [
        panel["title"] for panel in query_panels() for _ in panel["targets"]
    ]
    for title, expr in queries:
        assert "$" not in expr and "[[" not in expr, title
    grafana = 'rate(x{a=~"$tenant", b=~"${budgetd_policy:regex}"}[$__rate_interval])'
    assert concrete_expr(grafana) == 'rate(x{a=~".*", b=~".*"}[1m])'
    assert concrete_expr('rate(x[${__interval}]) + y{t=~"[[tenant]]"}') == (
        'rate(x[1m]) + y{t=~".*"}'
    )
    with pytest.raises(ValueError, match="__range"):
        concrete_expr("increase(x[$__range])")


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """Each query, made concrete, is a recording rule `promtool check rules` accepts."""
    queries = dashboard_queries()
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for index, (_, expr) in enumerate(queries):
        lines += [f"      - record: dashboard_query_{index}", f"        expr: {json.dumps(expr)}"]
    rules = tmp_path / "dashboard_rules.yml"
    rules.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = promtool("check", "rules", rules)
    index_of = "\n".join(f"dashboard_query_{i}: {title}" for i, (title, _) in enumerate(queries))
    assert result.returncode == 0, f"{result.stdout}{result.stderr}\n{index_of}"
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


def test_dashboard_uses_only_the_contract_and_covers_the_brief() -> None:
    board = dashboard()
    problems = [
        problem
        for panel in query_panels()
        for target in panel["targets"]
        for problem in contract_violations(f"panel {panel['title']!r}", target["expr"])
    ]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["definition"])
            assert match, variable["definition"]
            if match[1] not in METRICS:
                problems.append(f"variable {variable['name']}: {match[1]} is not in the contract")
    assert problems == []
    used = set().union(*(metric_names(expr) for _, expr in dashboard_queries()))
    assert used >= DASHBOARD_MUST_USE


# --- OpenTelemetry Collector config ----------------------------------------------------


def parse_yaml_subset(text: str) -> dict[str, Any]:
    """The YAML otel-collector.yaml is written in: nested mappings, plain scalars, flow lists.

    Anything else (block lists, quotes, anchors, tabs) is an error, so the file cannot drift
    into YAML this reader would misread.
    """
    root: dict[str, Any] = {}
    stack: list[tuple[int, dict[str, Any]]] = [(0, root)]  # (its keys' indent, mapping)
    pending: tuple[int, dict[str, Any], str] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if not line:
            continue
        if "\t" in line or re.search(r"""["'&*!|>]|^\s*- """, line):
            raise ValueError(f"line {number}: outside the subset: {raw!r}")
        indent = len(line) - len(line.lstrip())
        match = re.fullmatch(r"([\w.-]+):(?: (.+))?", line.strip())
        if match is None:
            raise ValueError(f"line {number}: not `key: value`: {raw!r}")
        if pending is not None:
            parent_indent, parent, key = pending
            if indent <= parent_indent:
                raise ValueError(f"line {number}: {key} has no value")
            parent[key] = {}
            stack.append((indent, parent[key]))
            pending = None
        while len(stack) > 1 and stack[-1][0] > indent:
            stack.pop()
        if stack[-1][0] != indent:
            raise ValueError(f"line {number}: bad indentation")
        mapping = stack[-1][1]
        key, value = match[1], match[2]
        if key in mapping:
            raise ValueError(f"line {number}: {key} repeats")
        if value is None:
            pending = (indent, mapping, key)
        elif value == "{}":
            mapping[key] = {}
        elif value.startswith("["):
            if not value.endswith("]"):
                raise ValueError(f"line {number}: unclosed list")
            mapping[key] = [item.strip() for item in value[1:-1].split(",") if item.strip()]
        else:
            mapping[key] = value
    if pending is not None:
        raise ValueError(f"{pending[2]} has no value")
    return root


def _as_strings(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _as_strings(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_strings(item) for item in value]
    return None if value is None else str(value)


def test_yaml_subset_reader() -> None:
    parsed = parse_yaml_subset("a:\n  b: 1  # note\n  c: [x, y]\nd:\n  e:\n    f: {}\n")
    assert parsed == {"a": {"b": "1", "c": ["x", "y"]}, "d": {"e": {"f": {}}}}
    bad_ones = ("a:\n", "a: 1\n  b: 2\n", "a:\n    b: 1\n  c: 2\n", "a:\n  - x\n", "a: 'q'\n")
    for bad in (*bad_ones, "a: 1\na: 2\n", "\ta: 1\n", "a: [x\n"):
        with pytest.raises(ValueError):
            parse_yaml_subset(bad)


def test_collector_config_wires_otlp_in_to_prometheus_and_debug_out() -> None:
    text = COLLECTOR_CONFIG.read_text(encoding="utf-8")
    config = parse_yaml_subset(text)
    try:  # PyYAML is not a dependency; where it is installed, it must read the same thing.
        yaml = importlib.import_module("yaml")
    except ModuleNotFoundError:
        pass
    else:
        assert _as_strings(yaml.safe_load(text)) == config
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "127.0.0.1:4317"
    assert protocols["http"]["endpoint"] == "127.0.0.1:4318"
    assert "batch" in config["processors"]
    assert {"prometheus", "debug"} <= set(config["exporters"])
    assert config["exporters"]["prometheus"]["endpoint"].startswith("127.0.0.1:")
    metrics = config["service"]["pipelines"]["metrics"]
    assert metrics["receivers"] == ["otlp"]
    assert metrics["processors"] == ["batch"]
    assert set(metrics["exporters"]) == {"prometheus", "debug"}
    for kind in ("receivers", "processors", "exporters"):
        for pipeline in config["service"]["pipelines"].values():
            assert set(pipeline.get(kind, [])) <= set(config[kind]), (kind, pipeline)


def test_readme_describes_every_file() -> None:
    readme = (MONITORING / "README.md").read_text(encoding="utf-8")
    for name in (
        "grafana-dashboard.json",
        "alerts.yml",
        "alerts_test.yml",
        "prometheus.yml",
        "otel-collector.yaml",
        "queries.py",
        "OTEL_METRICS_EXPORTER=prometheus",
        "127.0.0.1:9464",
    ):
        assert name in readme, name
