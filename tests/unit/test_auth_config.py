"""[auth], [tls] and [connections] in the config file: defaults, values, and mistakes
reported with file, key and reason before anything starts."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

import pytest

from budgetd import config
from budgetd.auth import Rate, Role
from budgetd.auth.tls import MAX_PEM_BYTES, TlsError, TlsFiles, read_material
from budgetd.config import ConfigError, Settings
from tests.auth_support import Authority, token_file


def _resolve(*argv: str, env: Mapping[str, str] | None = None) -> Settings:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    return config.resolve(parser.parse_args(argv), env or {})


def _file(directory: Path, text: str) -> Path:
    path = directory / "budgetd.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _load(directory: Path, text: str) -> Settings:
    return config.load_file(_file(directory, text))


def _error(directory: Path, text: str, *argv: str) -> ConfigError:
    path = _file(directory, text)
    with pytest.raises(ConfigError) as caught:
        _resolve("--config", str(path), *argv)
    return caught.value


def _tls_files(directory: Path, mutual: bool = False) -> str:
    ca = Authority()
    cert, key = ca.server().write(directory, "server")
    text = f'[tls]\ncert_file = "{cert.name}"\nkey_file = "{key.name}"\n'
    if mutual:
        (directory / "ca.pem").write_bytes(ca.pem)
        text += 'client_ca_file = "ca.pem"\n'
    return text


def test_a_fresh_install_lets_only_the_owner_in() -> None:
    auth = _resolve().auth
    assert auth.anonymous_tcp is None  # TCP calls need credentials
    assert not auth.unix.others_allowed  # the socket stays 0600
    assert auth.token_files == () and len(auth.tokens) == 0
    assert auth.tls is None and auth.certificates is None
    assert auth.rate == Rate(2000.0, 4000)


def test_connections_defaults_and_values(tmp_path: Path) -> None:
    defaults = _resolve()
    assert (defaults.max_streams_total, defaults.max_streams_per_connection) == (1000, 100)
    assert (defaults.handshake_timeout_s, defaults.idle_timeout_s) == (10.0, 600.0)
    settings = _load(
        tmp_path,
        "[connections]\nmax_streams_total = 5\nmax_streams_per_connection = 2\n"
        "handshake_timeout_seconds = 0.5\nidle_timeout_seconds = 30\n",
    )
    assert (settings.max_streams_total, settings.max_streams_per_connection) == (5, 2)
    assert (settings.handshake_timeout_s, settings.idle_timeout_s) == (0.5, 30.0)


def test_auth_values(tmp_path: Path) -> None:
    token_file(tmp_path / "tokens.toml", {"name": "a", "token": "t", "role": "agent"})
    settings = _load(
        tmp_path,
        '[auth]\ntoken_files = ["tokens.toml"]\nanonymous_tcp = "agent"\n'
        "rate_per_second = 50\nrate_burst = 60\n"
        "[auth.unix]\nagent_uids = [5001]\nreader_gids = [7001]\n",
    )
    auth = settings.auth
    assert auth.token_files == (tmp_path / "tokens.toml",)  # relative to the file
    assert len(auth.tokens) == 1
    assert auth.anonymous_tcp is Role.AGENT
    assert auth.rate == Rate(50.0, 60)
    assert auth.unix.uids == {5001: Role.AGENT} and auth.unix.gids == {7001: Role.READER}
    assert auth.unix.rate == Rate(50.0, 60)
    assert auth.unix.others_allowed
    assert _load(tmp_path, "[auth]\nrate_per_second = 0\n").auth.rate is None


def test_certificates_and_tls(tmp_path: Path) -> None:
    text = _tls_files(tmp_path, mutual=True) + (
        '[[auth.certificates]]\nidentity = "spiffe://acme/planner"\nrole = "agent"\n'
        'scope = { tenant = "acme" }\n'
        '[[auth.certificates]]\nidentity = "ops.example"\nrole = "admin"\n'
    )
    auth = _load(tmp_path, text).auth
    assert auth.tls == TlsFiles(
        tmp_path / "server.pem", tmp_path / "server.key", tmp_path / "ca.pem"
    )
    assert auth.tls_material is not None and auth.tls_material.client_ca is not None
    assert auth.certificates is not None
    planner = auth.certificates.caller([b"spiffe://acme/planner"])
    assert planner is not None and planner.scope == {"tenant": "acme"}
    assert planner.rule == "auth.certificates[0]"
    ops = auth.certificates.caller([b"other", b"ops.example"])
    assert ops is not None and ops.role is Role.ADMIN and ops.rate is None
    assert auth.certificates.caller([b"stranger"]) is None


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("[auth]\ntokens = 1\n", "auth.tokens", "unknown key"),
        ('[auth]\nanonymous_tcp = "root"\n', "auth.anonymous_tcp", "must be one of none, agent"),
        ('[auth]\ntoken_files = "t.toml"\n', "auth.token_files", "array"),
        ("[auth]\nrate_per_second = -2\n", "auth.rate_per_second", "0.."),
        ("[auth]\nrate_burst = 1.5\n", "auth.rate_burst", "integer"),
        ("[auth.unix]\nagent_uids = [-1]\n", "auth.unix.agent_uids[0]", "uid in 0.."),
        ("[auth.unix]\nagent_uids = 5\n", "auth.unix.agent_uids", "array of uids"),
        ('[auth.unix]\nreader_gids = ["staff"]\n', "auth.unix.reader_gids[0]", "gid in 0.."),
        ("[auth.unix]\nroot_uids = [1]\n", "auth.unix.root_uids", "unknown key"),
        (
            '[[auth.certificates]]\nidentity = "x"\nrole = "agent"\n',
            "auth.certificates",
            "needs tls.client_ca_file",
        ),
        ('[[auth.certificates]]\nrole = "agent"\n', "auth.certificates[0].identity", "required"),
        (
            '[[auth.certificates]]\nidentity = "x"\nrole = "admin"\nscope = { t = "a" }\n',
            "auth.certificates[0].scope",
            "admin cannot be scoped",
        ),
        ('[tls]\ncert_file = "c.pem"\n', "tls.key_file", "required with tls.cert_file"),
        ('[tls]\nclient_ca_file = "ca.pem"\n', "tls.cert_file", "required"),
        ('[tls]\ncert_file = "c.pem"\nkey_file = "k.pem"\n', "tls.cert_file", "cannot read"),
        ("[connections]\nmax_streams_total = 0\n", "connections.max_streams_total", "1..100000"),
        (
            "[connections]\nhandshake_timeout_seconds = 0\n",
            "connections.handshake_timeout_seconds",
            "0.1..300",
        ),
        ("[connections]\nmax_calls = 1\n", "connections.max_calls", "unknown key"),
    ],
)
def test_mistakes_name_file_key_and_reason(
    tmp_path: Path, text: str, key: str, reason: str
) -> None:
    error = _error(tmp_path, text)
    assert (error.path, error.key) == (str(tmp_path / "budgetd.toml"), key)
    assert reason in error.reason
    assert str(error).startswith(f"{tmp_path / 'budgetd.toml'}:{key}: ")


def test_token_file_mistakes_name_the_token_file(tmp_path: Path) -> None:
    token_file(tmp_path / "tokens.toml", {"name": "a", "token": "t", "role": "boss"})
    error = _error(tmp_path, '[auth]\ntoken_files = ["tokens.toml"]\n')
    assert (error.path, error.key) == (str(tmp_path / "tokens.toml"), "tokens[0].role")


def test_anonymous_admin_with_credentials_is_refused(tmp_path: Path) -> None:
    token_file(tmp_path / "tokens.toml", {"name": "a", "token": "t", "role": "agent"})
    error = _error(tmp_path, '[auth]\ntoken_files = ["tokens.toml"]\nanonymous_tcp = "admin"\n')
    assert error.key == "auth.anonymous_tcp"
    assert "pointless" in error.reason


def test_beyond_loopback_tls_is_enough_and_plaintext_needs_the_flag(tmp_path: Path) -> None:
    tls = _tls_files(tmp_path)
    path = _file(tmp_path, tls)
    assert _resolve("--config", str(path), "--tcp", "0.0.0.0:1").tcp == "0.0.0.0:1"
    plain = _error(tmp_path, "[server]\n", "--tcp", "0.0.0.0:1")
    assert plain.key == "--tcp"
    assert "configure [tls]" in plain.reason and "allow_non_loopback" in plain.reason
    allowed = _file(tmp_path, "[server]\nallow_non_loopback = true\n")
    assert _resolve("--config", str(allowed), "--tcp", "0.0.0.0:1").auth.tls is None


def test_beyond_loopback_no_anonymous_role(tmp_path: Path) -> None:
    text = _tls_files(tmp_path) + '[auth]\nanonymous_tcp = "agent"\n'
    error = _error(tmp_path, text, "--tcp", "10.1.2.3:50051")
    assert error.key == "--tcp"
    assert 'auth.anonymous_tcp = "agent"' in error.reason
    assert _resolve("--config", str(tmp_path / "budgetd.toml")).auth.anonymous_tcp is Role.AGENT


# ---------------------------------------------------------------------------------------
# TLS files, as read at start and on SIGHUP
# ---------------------------------------------------------------------------------------


def _material_error(files: TlsFiles) -> TlsError:
    with pytest.raises(TlsError) as raised:
        read_material(files)
    return raised.value


def test_a_key_that_is_not_the_certificates_is_refused(tmp_path: Path) -> None:
    ca = Authority()
    cert, _ = ca.server().write(tmp_path, "one")
    _, other_key = ca.server().write(tmp_path, "two")
    error = _material_error(TlsFiles(cert, other_key))
    assert error.key == "tls.key_file"
    assert "not the key of tls.cert_file" in error.reason


def test_files_that_are_not_pem_or_too_big_are_refused(tmp_path: Path) -> None:
    cert, key = Authority().server().write(tmp_path, "server")
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    assert _material_error(TlsFiles(junk, key)).reason.endswith("is not PEM")
    assert _material_error(TlsFiles(cert, junk)).key == "tls.key_file"
    bad_ca = tmp_path / "ca.pem"
    bad_ca.write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    assert _material_error(TlsFiles(cert, key, bad_ca)).key == "tls.client_ca_file"
    big = tmp_path / "big.pem"
    big.write_bytes(b"-----BEGIN " + b"x" * MAX_PEM_BYTES)
    assert "larger than" in _material_error(TlsFiles(big, key)).reason
    unreadable = tmp_path / "missing.pem"
    assert "cannot read" in _material_error(TlsFiles(unreadable, key)).reason
