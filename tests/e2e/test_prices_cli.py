"""`budgetctl prices` against a real daemon started with a LiteLLM-JSON price file: what a
model resolves to and why, the whole table, and usage priced through a hosted spelling.

The daemon and budgetctl are separate processes, as an operator runs them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from budgetd.v1 import budget_pb2 as pb
from tests.e2e.support import REPO, WAIT_S, Daemon

# Two entries in LiteLLM's shape: a model of the file's own, and a cheaper gpt-4o.
LITELLM = {
    "sample_spec": {"input_cost_per_token": 0.0, "mode": "one of: chat, embedding"},
    "acme/acme-large": {
        "input_cost_per_token": 2e-06,
        "output_cost_per_token": 8e-06,
        "cache_read_input_token_cost": 5e-07,
        "cache_creation_input_token_cost": 2.5e-06,
        "output_cost_per_reasoning_token": 1.6e-05,
        "litellm_provider": "acme",
        "mode": "chat",
    },
    "dall-e-3": {"litellm_provider": "openai", "mode": "image_generation"},
}


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    prices = tmp_path / "model_prices_and_context_window.json"
    prices.write_text(json.dumps(LITELLM), encoding="utf-8")
    started = Daemon(tmp_path, ["--prices", str(prices)])
    try:
        yield started.start()
    finally:
        started.kill()


def budgetctl(daemon: Daemon, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "budgetd_client.ctl", "--target", daemon.unix_target, *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )


def answer(daemon: Daemon, *argv: str) -> dict[str, Any]:
    done = budgetctl(daemon, *argv, "--json")
    assert (done.returncode, done.stderr) == (0, ""), done
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def test_a_model_resolves_to_its_entry_and_says_why(daemon: Daemon, tmp_path: Path) -> None:
    dated = answer(daemon, "prices", "OpenAI/GPT-4o-2024-08-06")
    assert dated["normalized"] == "gpt-4o-2024-08-06"
    assert dated["reason"] == 'version suffix "-2024-08-06"'
    assert dated["price"] == {
        "model": "gpt-4o",
        "input_micro_usd": 2_500_000,
        "output_micro_usd": 10_000_000,
        "cached_input_micro_usd": 1_250_000,
        "cache_write_input_micro_usd": 2_500_000,
        "reasoning_micro_usd": 10_000_000,
        "source": "default: openai.com/api/pricing, 2025-11",
    }
    bedrock = answer(daemon, "prices", "us.anthropic.claude-3-7-sonnet-20250219-v1:0")
    assert (bedrock["price"]["model"], bedrock["price"]["cache_write_input_micro_usd"]) == (
        "claude-3-7-sonnet",
        3_750_000,
    )
    own = answer(daemon, "prices", "acme-large")
    prices = tmp_path / "model_prices_and_context_window.json"
    assert own["reason"] == "exact"
    assert own["price"]["source"] == f"{prices} (acme/acme-large)"
    assert own["price"]["reasoning_micro_usd"] == 16_000_000


def test_an_unknown_model_is_an_answer_with_its_reason(daemon: Daemon) -> None:
    unknown = answer(daemon, "prices", "gpt-4o-audio-preview")
    assert "price" not in unknown
    assert unknown["reason"].startswith('unknown: "gpt-4o-audio-preview" is not in the table')
    human = budgetctl(daemon, "prices", "gpt-4o-audio-preview")
    assert human.returncode == 0
    assert "nearest entries: gpt-4o" in human.stdout


def test_the_whole_table_lists_defaults_and_the_file(daemon: Daemon) -> None:
    table = answer(daemon, "prices")["table"]
    names = [entry["model"] for entry in table]
    assert names == sorted(names)
    assert {"gpt-4o", "o1-pro", "claude-sonnet-4-5", "acme-large"} <= set(names)
    assert "dall-e-3" not in names and "sample_spec" not in names
    human = budgetctl(daemon, "prices")
    assert human.returncode == 0
    assert human.stdout.startswith("USD per 1M tokens, by source\n")
    assert "default: anthropic.com/pricing, 2025-11" in human.stdout.splitlines()


def test_usage_of_a_hosted_spelling_is_priced_with_every_token_kind(daemon: Daemon) -> None:
    """acme-large: 1,000 uncached input x 2 + 500 cached x 0.5 + 500 written x 2.5 +
    600 output x 8 + 400 reasoning x 16 micro-USD per 1,000 tokens."""
    usage = pb.Usage(
        input_tokens=2_000,
        cached_input_tokens=500,
        cache_write_input_tokens=500,
        output_tokens=1_000,
        reasoning_tokens=400,
        model="ACME/Acme-Large-2025-01-01",
    )
    done = daemon.budget().Consume(
        pb.ConsumeRequest(request_id="c1", labels={"agent": "a"}, usage=usage), timeout=WAIT_S
    )
    assert done.cost_known
    assert done.cost_micro_usd == 2_000 + 250 + 1_250 + 4_800 + 6_400
