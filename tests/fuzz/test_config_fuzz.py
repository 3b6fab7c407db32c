"""Fuzz the config parser: any file, env or flag answers Settings or a typed ConfigError.

Goal: `budgetd check-config` and the start read whatever an operator (or a hostile
file) gives them, and every mistake is one `ConfigError` naming where it came from
(the file, `env` or `flag`), the key and the reason — never a traceback from another
exception. A document that is valid TOML is blamed on a key, not on the whole file.

Method: random text (mostly not TOML), and valid TOML documents over the real key
space — every section, setting, `[limits]` field, `[auth]` key and policy key — with
hostile values (tests.fuzz.toml_text), through `config.load_file` and
`config.reload_policies`; env variables and flags with hostile strings through
`config.resolve`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import fields
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from budgetd import config
from budgetd.config import ConfigError
from budgetd.core import Limits
from tests.fuzz.counts import COUNTS
from tests.fuzz.profile import fuzz
from tests.fuzz.toml_text import STRINGS, document, parses, scalars, shown, values

EXAMPLES = 100
SECTIONS: dict[str, tuple[str, ...]] = {}
for option in config._OPTIONS:
    section, key = option.key.split(".", 1)
    SECTIONS[section] = (*SECTIONS.get(section, ()), key)
SECTIONS["limits"] = tuple(f.name for f in fields(Limits))
SECTIONS["auth"] = (*config._AUTH_KEYS, "unknown_key")
SECTIONS["tls"] = config._TLS_KEYS
POLICY_KEYS = (
    "name", "description", "match", "per", "caps", "window", "enforcement", "thresholds",
    "evictable", "close_with_run", "unpriced", "missing", "idle_ttl", "idle_ttl_s", "x",
)  # fmt: skip
CAP_KEYS = (
    "total_tokens", "input_tokens", "output_tokens", "requests", "concurrency",
    "cost_micro_usd", "cost_usd", "run_duration_ms", "run_duration", "wall_clock_ms",
    "wall_clock", "bogus",
)  # fmt: skip
WINDOW_KEYS = ("kind", "unit", "time_zone", "duration", "duration_s")


def _table(keys: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(keys), scalars(), max_size=6)


def _policy() -> st.SearchStrategy[dict[str, Any]]:
    special: dict[str, st.SearchStrategy[Any]] = {
        "name": st.sampled_from(("p1", "p2", "daily", "Bad Name", "")) | scalars(),
        "caps": _table(CAP_KEYS) | scalars(),
        "window": _table(WINDOW_KEYS) | st.sampled_from(STRINGS),
        "match": values(("tenant", "user", "agent")),
        "missing": values(("tenant", "user", "agent")),
        "per": st.lists(st.sampled_from(("tenant", "user", "agent", "Bad")), max_size=3),
        "thresholds": st.lists(_table(("percent", "severity", "x")), max_size=8) | scalars(),
    }
    return st.fixed_dictionaries(
        {"name": special["name"]},
        optional={key: special.get(key, values()) for key in POLICY_KEYS if key != "name"},
    )


def _document() -> st.SearchStrategy[dict[str, Any]]:
    sections = {name: _table(keys) | values() for name, keys in SECTIONS.items()}
    sections["policies"] = st.lists(_policy(), max_size=3) | values()
    sections["embedded_policies"] = scalars()
    sections["unknown_section"] = values()
    return st.fixed_dictionaries({}, optional=sections)


def _check(path: Path, text: str | None, where: str) -> None:
    try:
        config.load_file(path)
        COUNTS.record("config file", f"{where}: Settings")
    except ConfigError as error:
        COUNTS.record("config file", f"{where}: ConfigError")
        assert error.path and error.reason, error
        if error.path == str(path) and text is not None and parses(text):
            assert error.key, f"a valid TOML document blamed as a whole: {error}"
    try:
        config.reload_policies(path, Limits())
    except ConfigError as error:
        assert error.path and error.reason, error


@fuzz(EXAMPLES)
@given(data=st.data())
def _fuzz_file(data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(("document", "text", "bytes")), label="kind")
    with tempfile.TemporaryDirectory() as temp:
        path = Path(temp) / "budgetd.toml"
        if kind == "bytes":
            path.write_bytes(data.draw(st.binary(max_size=200), label="bytes"))
            text: str | None = None
        else:
            made = _document().map(document) if kind == "document" else st.text(max_size=200)
            text = data.draw(made, label="text")
            path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            _check(path, text, kind)
        except AssertionError:
            raise
        except Exception as error:  # the finding: anything but ConfigError
            raise AssertionError(f"{type(error).__name__}: {error} for {shown(text)}") from error


def test_any_config_file_is_settings_or_a_config_error_naming_file_key_and_reason() -> None:
    _fuzz_file()


ENV_NAMES = sorted({o.env for o in config._OPTIONS if o.env} | {"BUDGETD_NOPE", "BUDGETD_"})
FLAGS = ("--tick", "--grace", "--max-message-bytes", "--tcp", "--socket", "--snapshot-seconds")


@fuzz(200)
@given(
    env=st.dictionaries(st.sampled_from(ENV_NAMES), st.sampled_from(STRINGS) | st.text()),
    flags=st.lists(st.tuples(st.sampled_from(FLAGS), st.sampled_from(STRINGS)), max_size=3),
)
def _fuzz_env_and_flags(env: dict[str, str], flags: list[tuple[str, str]]) -> None:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    args = parser.parse_args([f"{flag}={value}" for flag, value in flags])
    clean = {k: v.replace("\x00", "") for k, v in env.items()}  # the OS forbids NUL
    clean.update({k: v for k, v in os.environ.items() if not k.startswith("BUDGETD_")})
    clean.pop("BUDGETD_CONFIG", None)
    try:
        config.resolve(args, clean)
        COUNTS.record("config env and flags", "Settings")
    except ConfigError as error:
        COUNTS.record("config env and flags", f"ConfigError ({error.path.split()[0]})")
        assert error.path in ("env", "flag") and error.key and error.reason, error


def test_env_and_flags_are_settings_or_a_config_error_naming_the_variable() -> None:
    _fuzz_env_and_flags()
