"""Daemon settings: defaults, the example file, file < env < flags, and an error that names
the file (or env / flag), the key and the reason for every mistake a user can make."""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path

import pytest

from budgetd import config, daemon
from budgetd.config import ConfigError, Settings
from budgetd.core import Dimension, Limits, Usage, default_policies
from budgetd.paths import DEFAULT_TCP, default_socket_path

EXAMPLE = Path(__file__).parents[2] / "examples" / "budgetd.toml"
SERVER_KEYS = [
    "socket",
    "tcp",
    "allow_non_loopback",
    "max_message_bytes",
    "max_batch_operations",
    "grace_seconds",
    "tick_seconds",
    "log_format",
    "log_level",
    "loop",
    "state_dir",
    "durability",
    "snapshot_seconds",
    "commit_delay_seconds",
    "prices_file",
]
EVENTS_KEYS = [
    "retention",
    "max_subscribers",
    "subscriber_queue",
    "send_timeout_seconds",
    "max_streams",
]
POLICY_KEYS = [
    "name",
    "description",
    "match",
    "per",
    "caps",
    "window",
    "enforcement",
    "thresholds",
    "evictable",
    "close_with_run",
]
LIMIT_KEYS = [f.name for f in fields(Limits)]
PRICES = '[models."acme-1"]\ninput = "1.00"\noutput = "2.00"\n'


def _resolve(*argv: str, env: Mapping[str, str] | None = None) -> Settings:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    return config.resolve(parser.parse_args(argv), env or {})


def _write(directory: Path, text: str, name: str = "budgetd.toml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def _load_error(directory: Path, text: str) -> ConfigError:
    path = _write(directory, text)
    with pytest.raises(ConfigError) as caught:
        config.load_file(path)
    return caught.value


def _resolve_error(*argv: str, env: Mapping[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        _resolve(*argv, env=env)
    return caught.value


# ---------------------------------------------------------------------------------------
# Defaults and the example file
# ---------------------------------------------------------------------------------------


def test_no_file_runs_on_embedded_defaults() -> None:
    settings = _resolve()
    assert settings.config_path is None
    assert settings.policies == default_policies()
    assert settings.limits == Limits()
    assert settings.socket == default_socket_path()
    assert settings.tcp == DEFAULT_TCP == "127.0.0.1:50051"
    assert not settings.allow_non_loopback
    assert (settings.max_message_bytes, settings.grace_s, settings.tick_s) == (65_536, 5.0, 1.0)
    assert (settings.log_format, settings.log_level, settings.loop) == (
        "keyvalue",
        "info",
        "uvloop",
    )
    assert settings.prices_file is None
    assert settings.prices.cost_of(Usage(1_000_000, 0, model="gpt-4o")) == 2_500_000
    assert (settings.event_retention, settings.max_subscribers) == (100_000, 64)
    assert (settings.subscriber_queue, settings.max_streams) == (10_000, 64)


def test_state_dir_follows_xdg_state_home(tmp_path: Path) -> None:
    settings = _resolve(env={"XDG_STATE_HOME": str(tmp_path)})
    assert settings.state_dir == tmp_path / "budgetd" / "default"
    # The XDG spec says a relative value is invalid and must be ignored.
    fallback = Path.home() / ".local" / "state" / "budgetd" / "default"
    assert _resolve(env={"XDG_STATE_HOME": "relative"}).state_dir == fallback


def test_each_listener_gets_its_own_default_state_dir(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path)}
    first = _resolve(env={**env, "BUDGETD_SOCKET": str(tmp_path / "a.sock")}).state_dir
    second = _resolve(env={**env, "BUDGETD_SOCKET": str(tmp_path / "b.sock")}).state_dir
    tcp_only = _resolve(env={**env, "BUDGETD_SOCKET": "", "BUDGETD_TCP": "127.0.0.1:7"})
    names = {first.name, second.name, tcp_only.state_dir.name}
    assert len(names) == 3 and all(name.startswith("listener-") for name in names)
    assert first.parent == tmp_path / "budgetd"
    explicit = _resolve(env={**env, "BUDGETD_STATE_DIR": str(tmp_path / "mine")}).state_dir
    assert explicit == tmp_path / "mine"


def test_durability_settings_and_their_errors(tmp_path: Path) -> None:
    defaults = _resolve()
    assert (defaults.durability, defaults.snapshot_interval_s, defaults.commit_delay_s) == (
        "journal",
        5.0,
        0.0,
    )
    assert _resolve(env={"BUDGETD_DURABILITY": "memory"}).durability == "memory"
    error = _load_error(tmp_path, '[server]\ndurability = "sometimes"\n')
    assert error.key == "server.durability"
    assert _load_error(tmp_path, "[server]\ncommit_delay_seconds = 0.5\n").key == (
        "server.commit_delay_seconds"
    )


def test_example_file_loads_and_spells_out_the_defaults() -> None:
    settings = config.load_file(EXAMPLE)
    defaults = _resolve()
    assert settings.policies == defaults.policies
    assert settings.limits == defaults.limits
    # The example writes the embedded policies out; the defaults come from no file.
    assert settings.written_policies == {p.name for p in defaults.policies}
    assert defaults.written_policies == frozenset()
    for name in (f.name for f in fields(Settings)):
        if name not in {"config_path", "socket", "state_dir", "prices", "written_policies"}:
            assert getattr(settings, name) == getattr(defaults, name), name


def test_example_file_shows_every_key() -> None:
    """Each key is set, or commented out where its default depends on the machine."""
    text = EXAMPLE.read_text(encoding="utf-8")
    keys = ["embedded_policies", *SERVER_KEYS, *EVENTS_KEYS, *LIMIT_KEYS, *POLICY_KEYS]
    for key in keys:
        assert re.search(rf"^(# )?{key} = ", text, re.MULTILINE), key


def test_example_file_commented_out_lines_are_valid(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    text = re.sub(r"^# ((socket|state_dir) = .*)$", r"\1", text, flags=re.MULTILINE)
    head, policy = text.split("\n# [[policies]]\n")
    text = head + "\n[[policies]]\n" + re.sub(r"^# ", "", policy, flags=re.MULTILINE)
    settings = config.load_file(_write(tmp_path, text))
    assert settings.socket == Path("/run/user/1000/budgetd.sock")
    assert settings.state_dir == Path.home() / ".local" / "state" / "budgetd"
    extra = settings.policies[-1]
    assert extra.name == "acme-hourly-cost"
    assert extra.cap(Dimension.COST_MICRO_USD) == 25_000_000


# ---------------------------------------------------------------------------------------
# Precedence
# ---------------------------------------------------------------------------------------

PRECEDENCE = [
    # field, file line, env, flag, (file, env, flag) values as Settings holds them
    (
        "socket",
        'socket = "/f.sock"',
        ("BUDGETD_SOCKET", "/e.sock"),
        ("--socket", "/g.sock"),
        (Path("/f.sock"), Path("/e.sock"), Path("/g.sock")),
    ),
    (
        "tcp",
        'tcp = "127.0.0.1:1"',
        ("BUDGETD_TCP", "127.0.0.1:2"),
        ("--tcp", "localhost:3"),
        ("127.0.0.1:1", "127.0.0.1:2", "localhost:3"),
    ),
    ("grace_s", "grace_seconds = 1.5", ("BUDGETD_GRACE", "2"), ("--grace", "0"), (1.5, 2.0, 0.0)),
    (
        "log_format",
        'log_format = "json"',
        ("BUDGETD_LOG_FORMAT", "keyvalue"),
        ("--log-format", "json"),
        ("json", "keyvalue", "json"),
    ),
    (
        "max_message_bytes",
        "max_message_bytes = 2048",
        ("BUDGETD_MAX_MESSAGE_BYTES", "4096"),
        ("--max-message-bytes", "1024"),
        (2048, 4096, 1024),
    ),
    (
        "max_batch_operations",
        "max_batch_operations = 64",
        ("BUDGETD_MAX_BATCH_OPERATIONS", "1"),
        ("--max-batch-operations", "4096"),
        (64, 1, 4096),
    ),
    (
        "loop",
        'loop = "asyncio"',
        ("BUDGETD_LOOP", "uvloop"),
        ("--loop", "asyncio"),
        ("asyncio", "uvloop", "asyncio"),
    ),
]


@pytest.mark.parametrize(("field", "line", "env", "flag", "expected"), PRECEDENCE)
def test_file_then_env_then_flags(
    tmp_path: Path,
    field: str,
    line: str,
    env: tuple[str, str],
    flag: tuple[str, str],
    expected: tuple[object, object, object],
) -> None:
    path = _write(tmp_path, f"[server]\n{line}\n")
    by_file, by_env, by_flag = expected
    assert getattr(_resolve("--config", str(path)), field) == by_file
    assert getattr(_resolve(env={"BUDGETD_CONFIG": str(path)}), field) == by_file
    assert getattr(_resolve("--config", str(path), env=dict([env])), field) == by_env
    assert getattr(_resolve("--config", str(path), *flag, env=dict([env])), field) == by_flag


def test_config_flag_wins_over_env(tmp_path: Path) -> None:
    chosen = _write(tmp_path / "a", "[server]\ngrace_seconds = 7\n")
    other = _write(tmp_path / "b", "[server]\ngrace_seconds = 9\n")
    settings = _resolve("--config", str(chosen), env={"BUDGETD_CONFIG": str(other)})
    assert (settings.config_path, settings.grace_s) == (chosen, 7.0)


def test_empty_socket_or_tcp_turns_it_off(tmp_path: Path) -> None:
    path = _write(tmp_path, '[server]\nsocket = ""\ntcp = ""\n')
    settings = config.load_file(path)
    assert (settings.socket, settings.tcp) == (None, None)
    off = _resolve(env={"BUDGETD_SOCKET": "", "BUDGETD_TCP": ""})
    assert (off.socket, off.tcp) == (None, None)
    flags = _resolve("--no-socket", "--no-tcp")
    assert (flags.socket, flags.tcp) == (None, None)
    # A flag turns back on what the file turned off.
    on = _resolve("--config", str(path), "--tcp", "127.0.0.1:0")
    assert (on.socket, on.tcp) == (None, "127.0.0.1:0")


def test_empty_variable_is_not_set(tmp_path: Path) -> None:
    """Except where empty means off, BUDGETD_X= leaves the file's value."""
    path = _write(tmp_path, '[server]\ngrace_seconds = 3\nlog_level = "debug"\n')
    settings = _resolve(
        env={"BUDGETD_CONFIG": str(path), "BUDGETD_GRACE": "", "BUDGETD_LOG_LEVEL": ""}
    )
    assert (settings.grace_s, settings.log_level) == (3.0, "debug")


def test_load_file_ignores_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUDGETD_GRACE", "9")
    monkeypatch.setenv("BUDGETD_BOGUS", "1")
    assert config.load_file(_write(tmp_path, "[server]\ntick_seconds = 2\n")).grace_s == 5.0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("TRUE", True), ("1", True), ("false", False), ("0", False)],
)
def test_env_booleans(raw: str, expected: bool) -> None:
    env = {"BUDGETD_ALLOW_NON_LOOPBACK": raw}
    assert _resolve(env=env).allow_non_loopback is expected


def test_flags_default_to_not_given() -> None:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    assert all(value is None for value in vars(parser.parse_args([])).values())


def test_socket_and_no_socket_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _resolve("--socket", "/x.sock", "--no-socket")
    assert "not allowed with argument" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# Listening beyond loopback
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["127.0.0.1:0", "127.9.8.7:50051", "[::1]:0", "localhost:1"])
def test_loopback_addresses_need_nothing(address: str) -> None:
    assert _resolve("--tcp", address).tcp == address


def test_non_loopback_refused_from_each_source(tmp_path: Path) -> None:
    path = _write(tmp_path, '[server]\ntcp = "0.0.0.0:50051"\n')
    by_file = _resolve_error("--config", str(path))
    assert by_file.path == str(path)
    assert by_file.key == "server.tcp"
    assert str(by_file).startswith(f"{path}:server.tcp: 0.0.0.0:50051 is not a loopback address")
    by_env = _resolve_error(env={"BUDGETD_TCP": "10.1.2.3:80"})
    assert str(by_env).startswith("env BUDGETD_TCP: 10.1.2.3:80 is not a loopback address")
    by_flag = _resolve_error("--tcp", "[::]:80")
    assert str(by_flag).startswith("flag --tcp: [::]:80 is not a loopback address")
    assert "allow_non_loopback" in by_flag.reason


def test_non_loopback_accepted_when_allowed_by_any_source(tmp_path: Path) -> None:
    allow = _write(tmp_path, "[server]\nallow_non_loopback = true\n")
    assert _resolve("--config", str(allow), "--tcp", "0.0.0.0:1").tcp == "0.0.0.0:1"
    env = {"BUDGETD_ALLOW_NON_LOOPBACK": "1", "BUDGETD_TCP": "example.com:1"}
    assert _resolve(env=env).tcp == "example.com:1"
    assert _resolve("--tcp", "[::]:1", "--allow-non-loopback").allow_non_loopback


@pytest.mark.parametrize("address", ["::1:50051", "localhost", "host:70000", "[nope]:1", ":1"])
def test_malformed_tcp_address(address: str) -> None:
    error = _resolve_error("--tcp", address)
    assert error.key == "--tcp"
    assert str(error).startswith("flag --tcp: ")


# ---------------------------------------------------------------------------------------
# Errors name file:key: reason
# ---------------------------------------------------------------------------------------


def test_unknown_key(tmp_path: Path) -> None:
    error = _load_error(tmp_path, '[server]\nsockt = "/x"\n')
    assert str(error).startswith(f"{tmp_path / 'budgetd.toml'}:server.sockt: unknown key (known: ")
    assert "socket" in error.reason
    assert _load_error(tmp_path, "[event]\nretention = 1\n").key == "event"
    assert _load_error(tmp_path, "[events]\nretension = 1\n").key == "events.retension"
    assert _load_error(tmp_path, "[limits]\nmax_ledger = 1\n").key == "limits.max_ledger"
    policy = _load_error(tmp_path, '[[policies]]\nname = "a"\nlimit = 1\n')
    assert policy.key == "policies[0].limit"


def test_wrong_type(tmp_path: Path) -> None:
    error = _load_error(tmp_path, '[server]\ngrace_seconds = "x"\n')
    assert (
        str(error) == f'{tmp_path / "budgetd.toml"}:server.grace_seconds: must be a number, got "x"'
    )
    assert _load_error(tmp_path, "[events]\nretention = 1.5\n").reason == (
        "must be an integer, got 1.5"
    )
    assert _load_error(tmp_path, "[server]\nallow_non_loopback = 1\n").reason == (
        "must be true or false, got 1"
    )
    assert _load_error(tmp_path, "server = 1\n").reason == "must be a table ([server]), got 1"
    assert _load_error(tmp_path, '[server]\nlog_level = "loud"\n').reason == (
        'must be one of debug, info, warning, error; got "loud"'
    )
    assert _load_error(tmp_path, "[server]\nstate_dir = 3\n").key == "server.state_dir"
    env = _resolve_error(env={"BUDGETD_GRACE": "soon"})
    assert str(env) == 'env BUDGETD_GRACE: must be a number, got "soon"'
    assert str(_resolve_error(env={"BUDGETD_ALLOW_NON_LOOPBACK": "yes"})) == (
        'env BUDGETD_ALLOW_NON_LOOPBACK: must be true or false, got "yes"'
    )


def test_out_of_range(tmp_path: Path) -> None:
    error = _load_error(tmp_path, "[server]\nmax_message_bytes = 100\n")
    assert error.key == "server.max_message_bytes"
    assert error.reason == "must be in 1024..16777216, got 100"
    batch = _load_error(tmp_path, "[server]\nmax_batch_operations = 4097\n")
    assert (batch.key, batch.reason) == (
        "server.max_batch_operations",
        "must be in 1..4096, got 4097",
    )
    assert _load_error(tmp_path, "[server]\ntick_seconds = 0.001\n").reason == (
        "must be in 0.01..60 seconds, got 0.001"
    )
    assert _load_error(tmp_path, "[events]\nmax_streams = 0\n").reason == (
        "must be in 1..10000, got 0"
    )
    assert str(_resolve_error("--grace", "301")) == (
        "flag --grace: must be in 0..300 seconds, got 301"
    )
    assert str(_resolve_error("--grace", "nan")) == 'flag --grace: must be a number, got "nan"'


def test_bad_toml_names_the_line(tmp_path: Path) -> None:
    error = _load_error(tmp_path, '[server]\nloop = "uvloop"\ngrace_seconds = \n')
    assert error.key == "line 3"
    assert str(error).startswith(f"{tmp_path / 'budgetd.toml'}:line 3: not valid TOML: ")


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as caught:
        config.load_file(missing)
    assert str(caught.value) == f"{missing}: cannot read: No such file or directory"
    env_error = _resolve_error(env={"BUDGETD_CONFIG": str(missing)})
    assert env_error.path == str(missing)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match=r"binary\.toml: not UTF-8 text$"):
        config.load_file(binary)


def test_bad_policy_field_names_its_path(tmp_path: Path) -> None:
    text = '[[policies]]\nname = "a"\n[[policies]]\nname = "b"\ncaps = { total_tokens = -1 }\n'
    error = _load_error(tmp_path, text)
    assert str(error) == (
        f"{tmp_path / 'budgetd.toml'}:policies[1].caps.total_tokens: "
        "must be an integer in 0..1000000000000"
    )
    window = '[[policies]]\nname = "a"\nwindow = { kind = "fixed" }\n'
    assert _load_error(tmp_path, window).key == "policies[0].window.duration"
    assert _load_error(tmp_path, "policies = 3\n").key == "policies"
    assert _load_error(tmp_path, "[[policies]]\nper = []\n").key == "policies[0].name"


def test_duplicate_policy_name(tmp_path: Path) -> None:
    text = '[[policies]]\nname = "a"\n[[policies]]\nname = "b"\n[[policies]]\nname = "a"\n'
    error = _load_error(tmp_path, text)
    assert error.key == "policies[2].name"
    assert error.reason == "'a' is already the name of policies[0]"


def test_too_many_policies(tmp_path: Path) -> None:
    text = '[limits]\nmax_policies = 1\n[[policies]]\nname = "a"\n[[policies]]\nname = "b"\n'
    error = _load_error(tmp_path, text)
    assert (error.key, error.reason) == (
        "policies",
        "2 policies, more than limits.max_policies = 1",
    )


def test_limits(tmp_path: Path) -> None:
    limits = config.load_file(
        _write(tmp_path, "[limits]\nmax_ledgers = 5\nmax_reservation_ttl_s = 90\n")
    ).limits
    assert limits == Limits(max_ledgers=5, max_reservation_ttl_s=90.0)
    assert isinstance(limits.max_reservation_ttl_s, float)
    error = _load_error(tmp_path, "[limits]\nmax_ledgers = 0\n")
    assert str(error) == f"{tmp_path / 'budgetd.toml'}:limits.max_ledgers: must be > 0, got 0"
    assert _load_error(tmp_path, "[limits]\nmax_ledgers = 2.0\n").reason == (
        "must be an integer, got 2.0"
    )
    assert _load_error(tmp_path, "[limits]\nmax_run_ttl_s = -1.5\n").reason == (
        "must be > 0, got -1.5"
    )
    # Embedded policies that no longer fit the file's limits are named too.
    tight = _load_error(tmp_path, "[limits]\nmax_tokens = 1000\n")
    assert tight.key == "embedded_policies"
    assert "caps.total_tokens" in tight.reason


def test_unknown_budgetd_variable() -> None:
    error = _resolve_error(env={"BUDGETD_GRCE": "1", "HOME": "/h"})
    assert error.key == "BUDGETD_GRCE"
    assert str(error).startswith("env BUDGETD_GRCE: unknown variable (known: ")
    assert "BUDGETD_GRACE" in error.reason
    # Other programs' variables pass: the client's target and the test suite's core switch.
    assert _resolve(env={"BUDGETD_TARGET": "unix:///x", "BUDGETD_CORE": "compiled"}).tcp


def test_bad_price_file(tmp_path: Path) -> None:
    prices = _write(tmp_path, '[models."m"]\ninput = "x"\noutput = "1"\n', "prices.toml")
    error = _load_error(tmp_path, f'[server]\nprices_file = "{prices}"\n')
    assert str(error) == f"{prices}:models.m.input: not a number: 'x'"
    missing = _load_error(tmp_path, '[server]\nprices_file = "nope.toml"\n')
    assert str(missing) == (
        f"{tmp_path / 'budgetd.toml'}:server.prices_file: no price file at {tmp_path / 'nope.toml'}"
    )
    flag = _resolve_error("--prices", str(tmp_path / "nope.toml"))
    assert str(flag) == f"flag --prices: no price file at {tmp_path / 'nope.toml'}"


# ---------------------------------------------------------------------------------------
# Policies and paths in the file
# ---------------------------------------------------------------------------------------

OWN = '[[policies]]\nname = "own"\ncaps = { cost_usd = 12.50 }\n'


def _names(settings: Settings) -> list[str]:
    return [p.name for p in settings.policies]


def test_embedded_policies_combinations(tmp_path: Path) -> None:
    embedded = _names(_resolve())
    assert _names(config.load_file(_write(tmp_path, "[server]\n"))) == embedded
    assert _names(config.load_file(_write(tmp_path, OWN))) == ["own"]
    both = _write(tmp_path, "embedded_policies = true\n" + OWN)
    assert _names(config.load_file(both)) == [*embedded, "own"]
    none = _write(tmp_path, "embedded_policies = false\n")
    assert config.load_file(none).policies == ()
    clash = "embedded_policies = true\n" + OWN.replace('"own"', '"daily"')
    error = _load_error(tmp_path, clash)
    assert (error.key, error.reason) == (
        "policies[0].name",
        "'daily' is already the name of an embedded policy",
    )
    assert _load_error(tmp_path, 'embedded_policies = "yes"\n').key == "embedded_policies"


def test_money_in_the_file_is_exact(tmp_path: Path) -> None:
    """A bare TOML decimal such as 12.50 never goes through a float."""
    text = OWN.replace("12.50", "0.000001") + OWN.replace('"own"', '"two"')
    first, second = config.load_file(_write(tmp_path, text)).policies
    assert first.cap(Dimension.COST_MICRO_USD) == 1
    assert second.cap(Dimension.COST_MICRO_USD) == 12_500_000


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    _write(conf, PRICES, "prices.toml")
    text = '[server]\nprices_file = "prices.toml"\nstate_dir = "state"\nsocket = "run/b.sock"\n'
    settings = config.load_file(_write(conf, text))
    assert settings.prices_file == conf / "prices.toml"
    assert settings.state_dir == conf / "state"
    assert settings.socket == conf / "run" / "b.sock"
    assert settings.prices.cost_of(Usage(1_000_000, 1_000_000, model="acme-1")) == 3_000_000
    # The embedded table is still there underneath.
    assert settings.prices.cost_of(Usage(1_000_000, 0, model="gpt-4o")) == 2_500_000
    # An empty price path means the embedded table, and overrides the file.
    flag = _resolve("--config", str(conf / "budgetd.toml"), "--prices", "")
    assert (flag.prices_file, flag.prices.lookup("acme-1")) == (None, None)


def test_reload_policies(tmp_path: Path) -> None:
    path = _write(tmp_path, OWN)
    assert [p.name for p in config.reload_policies(path, Limits()).policies] == ["own"]
    path.write_text(OWN + '[[policies]]\nname = "two"\nper = ["agent"]\n', encoding="utf-8")
    assert [p.name for p in config.reload_policies(path, Limits()).policies] == ["own", "two"]
    path.write_text(OWN + "[[policies]]\nname = 3\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        config.reload_policies(path, Limits())
    assert caught.value.key == "policies[1].name"
    # A mistake elsewhere in the file rejects the reload too: it would fail the next start.
    path.write_text(OWN + "[server]\ngrace = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"server\.grace: unknown key"):
        config.reload_policies(path, Limits())


def test_reload_checks_policies_against_the_running_limits(tmp_path: Path) -> None:
    path = _write(tmp_path, OWN + '[[policies]]\nname = "two"\n')
    assert len(config.reload_policies(path, Limits()).policies) == 2
    with pytest.raises(ConfigError) as caught:
        config.reload_policies(path, Limits(max_policies=1))
    assert caught.value.key == "policies"


# ---------------------------------------------------------------------------------------
# What check-config prints
# ---------------------------------------------------------------------------------------


def test_describe_policies_mentions_every_name_and_cap(tmp_path: Path) -> None:
    text = """
embedded_policies = true
[[policies]]
name = "team"
description = "Acme's hourly spend."
match = { tenant = "acme", user = "*" }
per = ["agent"]
caps = { cost_usd = "12.5", requests = 5000, run_duration = "90s", input_tokens = 1234567 }
window = { kind = "sliding", duration = "1h" }
enforcement = "shadow"
thresholds = [{ percent = 50, severity = "critical" }]
[[policies]]
name = "paris"
window = { kind = "calendar", unit = "month", time_zone = "Europe/Paris" }
[[policies]]
name = "trial"
caps = { output_tokens = 10 }
window = { kind = "fixed", duration = "30d" }
"""
    settings = config.load_file(_write(tmp_path, text))
    described = config.describe_policies(settings.policies)
    for name in _names(settings):
        assert re.search(rf"^{re.escape(name)}( —|$)", described, re.MULTILINE), name
    for cap in (
        "total_tokens 100,000",
        "total_tokens 10,000,000",
        "total_tokens 2,000,000",
        "concurrency 10, run_duration 2h",
        "input_tokens 1,234,567, cost_usd $12.50, requests 5,000, run_duration 90s",
        "output_tokens 10",
    ):
        assert f"caps:        {cap}\n" in described, cap
    team = described.split("team — Acme's hourly spend.\n")[1].split("\n\n")[0]
    assert "applies to:  tenant=acme, user=*, agent=*\n" in team
    assert "window:      sliding 1h\n" in team
    assert "enforcement: shadow\n" in team
    assert "thresholds:  50% critical\n" in team
    assert "window:      calendar month (Europe/Paris)" in described
    assert "window:      fixed 30d from first use" in described
    assert "caps:        none (a meter)" in described
    assert described.count("\n\n") == len(settings.policies) - 1
    assert config.describe_policies([]).startswith("no policies")


def test_the_daemon_and_the_config_agree_on_what_is_loopback() -> None:
    """A name the config lets through as loopback must bind without TLS too."""
    for host in ("localhost", "LOCALHOST", "127.0.0.1", "127.8.9.1", "[::1]"):
        assert config._is_loopback(f"{host}:1") and daemon._is_loopback(host), host
    for host in ("0.0.0.0", "10.0.0.1", "example.com", "[::]"):
        assert not config._is_loopback(f"{host}:1") and not daemon._is_loopback(host), host
