"""The [global] settings and the sidecar id: what a sidecar shares through Redis.

Goal: every [global] key is read as written (TOML decimals included) and every mistake
fails the start naming the file, the key and the rule, the URL's password never quoted;
a global policy without a Redis fails at its own `scope`; the sidecar id is made once
and kept in the state directory (a restart resumes its own leases), given by [global]
sidecar_id, or new per start in memory mode, and a damaged id file is named.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from budgetd import config
from budgetd.config import ConfigError
from budgetd.scaleout.link import SIDECAR_ID_FILE, SidecarIdError, sidecar_id
from budgetd.scaleout.settings import GlobalSettings

POLICY = '[[policies]]\nname = "org"\nscope = "global"\ncaps = { total_tokens = 1000 }\n'


def _load(tmp_path: Path, text: str) -> config.Settings:
    path = tmp_path / "budgetd.toml"
    path.write_text(text, encoding="utf-8")
    return config.load_file(path)


def _error(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    return caught.value


def test_every_key_is_read_as_written(tmp_path: Path) -> None:
    settings = _load(
        tmp_path,
        '[global]\nredis_url = "rediss://u:secret@redis.internal:6380/2"\n'
        'key_prefix = "acme:"\nmax_slice = 0.05\nmin_slice = 0.01\n'
        "lease_ttl_seconds = 10\nsync_interval_seconds = 0.2\ntimeout_seconds = 0.5\n"
        'lease_wait_seconds = 0\nsidecar_id = "host-a"\n' + POLICY,
    ).scaleout
    assert settings == GlobalSettings(
        redis_url="rediss://u:secret@redis.internal:6380/2",
        key_prefix="acme:",
        max_slice=0.05,
        min_slice=0.01,
        lease_ttl_s=10.0,
        sync_interval_s=0.2,
        timeout_s=0.5,
        lease_wait_s=0.0,
        sidecar_id="host-a",
    )
    assert settings.shown_url() == "rediss://u:***@redis.internal:6380/2"


def test_without_global_there_is_no_redis() -> None:
    assert not GlobalSettings().enabled


@pytest.mark.parametrize(
    ("table", "key", "rule"),
    [
        ('redis_url = "http://x"', "global.redis_url", "scheme"),
        ('redis_url = "redis://u:hunter2@h:99999"', "global.redis_url", "port"),
        ('redis_url = "redis://h"\nmax_slice = 0', "global.max_slice", "fraction"),
        (
            'redis_url = "redis://h"\nmax_slice = 0.01\nmin_slice = 0.5',
            "global.min_slice",
            "at most",
        ),
        ('redis_url = "redis://h"\nlease_ttl_seconds = 0.5', "global.lease_ttl_seconds", "seconds"),
        (
            'redis_url = "redis://h"\nsync_interval_seconds = 20',
            "global.sync_interval_seconds",
            "third",
        ),
        ('redis_url = "redis://h"\nkey_prefix = "a{b}"', "global.key_prefix", "braces"),
        ('redis_url = "redis://h"\nsidecar_id = "has space"', "global.sidecar_id", "match"),
        ('redis_url = "redis://h"\nredis = 1', "global.redis", "unknown key"),
    ],
)
def test_each_mistake_is_named_and_no_password_is_quoted(
    tmp_path: Path, table: str, key: str, rule: str
) -> None:
    error = _error(tmp_path, f"[global]\n{table}\n")
    assert error.key == key and rule in error.reason
    assert "hunter2" not in str(error)


def test_a_global_policy_without_redis_fails_at_its_scope(tmp_path: Path) -> None:
    error = _error(tmp_path, POLICY)
    assert error.key == "policies[0].scope" and "redis_url" in error.reason
    assert _load(tmp_path, '[global]\nredis_url = "redis://h"\n' + POLICY).policies[0].is_global


def test_the_sidecar_id_is_made_once_and_kept(tmp_path: Path) -> None:
    settings = GlobalSettings(redis_url="redis://h")
    first = sidecar_id(settings, tmp_path)
    assert (tmp_path / SIDECAR_ID_FILE).read_text().strip() == first
    assert sidecar_id(settings, tmp_path) == first  # a restart is the same sidecar
    assert sidecar_id(GlobalSettings(redis_url="redis://h", sidecar_id="given"), tmp_path) == (
        "given"
    )
    assert sidecar_id(settings, None) != sidecar_id(settings, None)  # memory mode: new


def test_a_damaged_sidecar_id_file_is_named(tmp_path: Path) -> None:
    (tmp_path / SIDECAR_ID_FILE).write_text("not an id\n")
    with pytest.raises(SidecarIdError) as caught:
        sidecar_id(GlobalSettings(redis_url="redis://h"), tmp_path)
    assert SIDECAR_ID_FILE in str(caught.value) and "fix or remove" in str(caught.value)
