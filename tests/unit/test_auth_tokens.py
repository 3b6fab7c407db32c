"""Token files: what they hold, what they refuse (file, key, reason), their bounds."""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path

import pytest

from budgetd.auth import Rate, Role, tokens
from budgetd.auth.__main__ import main
from budgetd.auth.tokens import TokenFileError
from budgetd.core import Limits
from tests.auth_support import token_file

DEFAULT = Rate(100.0, 200)


def _load(*paths: Path) -> tokens.TokenTable:
    return tokens.load(paths, DEFAULT, Limits())


def _error(path: Path) -> TokenFileError:
    with pytest.raises(TokenFileError) as raised:
        _load(path)
    assert raised.value.path == path
    return raised.value


def test_a_token_is_found_by_its_hash_with_its_role_scope_and_rate(tmp_path: Path) -> None:
    path = token_file(
        tmp_path / "t.toml",
        {"name": "acme-agents", "token": "s3cret-a", "role": "agent", "scope": {"tenant": "acme"}},
        {"name": "ops", "token": "s3cret-o", "role": "admin"},
        {"name": "dash", "token": "s3cret-d", "role": "reader", "rate_per_second": 5},
    )
    table = _load(path)
    assert len(table) == 3
    agent = table.lookup("s3cret-a")
    assert agent is not None
    assert (agent.name, agent.role, agent.scope) == (
        "token 'acme-agents'",
        Role.AGENT,
        {"tenant": "acme"},
    )
    assert agent.rate == DEFAULT
    assert agent.key == "token:acme-agents"
    assert str(path) in agent.rule
    admin = table.lookup("s3cret-o")
    assert admin is not None and admin.role is Role.ADMIN and admin.rate is None
    reader = table.lookup("s3cret-d")
    assert reader is not None and reader.rate == Rate(5.0, 10)
    assert table.lookup("s3cret") is None
    assert table.lookup("x" * (tokens.MAX_TOKEN_CHARS + 1)) is None


def test_the_file_holds_no_token(tmp_path: Path) -> None:
    path = token_file(tmp_path / "t.toml", {"name": "a", "token": "plain-secret", "role": "agent"})
    text = path.read_text()
    assert "plain-secret" not in text
    assert hashlib.sha256(b"plain-secret").hexdigest() in text


def test_rate_overrides(tmp_path: Path) -> None:
    path = token_file(
        tmp_path / "t.toml",
        {"name": "unlimited", "token": "u", "role": "agent", "rate_per_second": 0},
        {"name": "burst-only", "token": "b", "role": "agent", "rate_burst": 7},
        {"name": "both", "token": "x", "role": "agent", "rate_per_second": 2.5, "rate_burst": 3},
    )
    table = _load(path)
    assert table.by_digest[tokens.digest("u")].rate is None
    assert table.by_digest[tokens.digest("b")].rate == Rate(100.0, 7)
    assert table.by_digest[tokens.digest("x")].rate == Rate(2.5, 3)


def test_names_and_hashes_are_unique_across_files(tmp_path: Path) -> None:
    first = token_file(tmp_path / "a.toml", {"name": "a", "token": "one", "role": "agent"})
    same_name = token_file(tmp_path / "b.toml", {"name": "a", "token": "two", "role": "agent"})
    with pytest.raises(TokenFileError) as raised:
        _load(first, same_name)
    assert (raised.value.path, raised.value.key) == (same_name, "tokens[0].name")
    assert str(first) in raised.value.reason
    same_hash = token_file(tmp_path / "c.toml", {"name": "c", "token": "one", "role": "agent"})
    with pytest.raises(TokenFileError) as raised:
        _load(first, same_hash)
    assert raised.value.key == "tokens[0].sha256"


@pytest.mark.parametrize(
    ("entry", "key", "reason"),
    [
        (
            {"name": "a", "token": "t", "role": "agent", "colour": "red"},
            "tokens[0].colour",
            "unknown key",
        ),
        ({"name": "A B", "token": "t", "role": "agent"}, "tokens[0].name", "[a-z0-9_.-]"),
        ({"name": "a", "sha256": "abc", "role": "agent"}, "tokens[0].sha256", "64 lowercase hex"),
        ({"name": "a", "token": "t", "role": "root"}, "tokens[0].role", "agent, reader, admin"),
        ({"name": "a", "token": "t"}, "tokens[0].role", "required"),
        (
            {"name": "a", "token": "t", "role": "admin", "scope": {"tenant": "x"}},
            "tokens[0].scope",
            "admin cannot be scoped",
        ),
        (
            {"name": "a", "token": "t", "role": "agent", "scope": {"Bad Key": "x"}},
            "tokens[0].scope['Bad Key']",
            "label keys",
        ),
        (
            {"name": "a", "token": "t", "role": "agent", "scope": {"tenant": "*"}},
            "tokens[0].scope",
            "exact",
        ),
        (
            {"name": "a", "token": "t", "role": "agent", "rate_per_second": -1},
            "tokens[0].rate_per_second",
            "0..",
        ),
        (
            {"name": "a", "token": "t", "role": "agent", "rate_burst": 0},
            "tokens[0].rate_burst",
            "1..",
        ),
    ],
)
def test_a_bad_entry_names_file_key_and_reason(
    tmp_path: Path, entry: dict[str, object], key: str, reason: str
) -> None:
    error = _error(token_file(tmp_path / "t.toml", entry))
    assert error.key == key
    assert reason in error.reason
    assert str(error).startswith(f"{tmp_path / 't.toml'}:{key}: ")


def test_a_file_others_can_write_is_refused(tmp_path: Path) -> None:
    path = token_file(tmp_path / "t.toml", {"name": "a", "token": "t", "role": "agent"})
    path.chmod(0o664)
    assert "writable by group or others" in _error(path).reason
    path.chmod(0o644)  # readable is fine: it holds hashes
    assert len(_load(path)) == 1


def test_unreadable_oversized_and_malformed_files(tmp_path: Path) -> None:
    assert "cannot read" in _error(tmp_path / "missing.toml").reason
    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * tokens.MAX_TOKEN_FILE_BYTES)
    big.chmod(0o600)
    assert "larger than" in _error(big).reason
    bad = tmp_path / "bad.toml"
    bad.write_text("[[tokens]\n")
    bad.chmod(0o600)
    assert "not valid TOML" in _error(bad).reason
    other = tmp_path / "other.toml"
    other.write_text("[server]\n")
    other.chmod(0o600)
    error = _error(other)
    assert (error.key, error.reason) == ("server", "unknown key (known: tokens)")
    assert "not a regular file" in _error(tmp_path).reason


def test_the_number_of_files_and_tokens_is_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries: list[dict[str, object]] = [
        {"name": f"n{i}", "token": f"t{i}", "role": "agent"} for i in range(3)
    ]
    path = token_file(tmp_path / "t.toml", *entries)
    monkeypatch.setattr(tokens, "MAX_TOKENS", 2)
    assert "more than 2 tokens" in _error(path).reason
    with pytest.raises(TokenFileError, match="at most 16 token files"):
        _load(*[path] * 17)


def test_a_new_token_and_its_entry_load(tmp_path: Path) -> None:
    token = tokens.new_token()
    assert len(token) > 40 and token != tokens.new_token()
    text = tokens.entry_text("planner", token, "agent", [("tenant", "acme")])
    assert token not in text
    tomllib.loads(text)
    path = tmp_path / "t.toml"
    path.write_text(text)
    path.chmod(0o600)
    caller = _load(path).lookup(token)
    assert caller is not None and caller.scope == {"tenant": "acme"}


def test_the_new_token_command_prints_an_entry_that_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["new", "planner", "reader", 'team=a "b"']) == 0
    out, err = capsys.readouterr()
    token = err.split("token (shown once): ", 1)[1].strip()
    assert token not in out
    path = tmp_path / "t.toml"
    path.write_text(out)
    path.chmod(0o600)
    caller = _load(path).lookup(token)
    assert caller is not None
    assert (caller.role, caller.scope) == (Role.READER, {"team": 'a "b"'})
    assert main(["new", "ops", "admin", "team=a"]) == 2  # an admin is never scoped
    assert main(["new", "Bad Name", "agent"]) == 2
    assert main(["make", "x", "agent"]) == 2


def test_help_prints_the_usage_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["new", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m budgetd.auth new NAME") and "tenant=acme" in out
