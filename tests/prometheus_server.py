"""A real Prometheus server a test starts: it scrapes the given targets and answers PromQL.

`PrometheusServer(home, ["127.0.0.1:9464"])` writes `<home>/prometheus.yml` (one job,
`budgetd`), starts Debian's `/usr/bin/prometheus` on a free loopback port with its TSDB
in `<home>/data` and its log in `<home>/prometheus.log`, and returns once `/-/ready`
answers. A test then waits on what Prometheus sees (`wait_for_value`, `targets_up`),
never for a time. The HTTP API is read with urllib alone.

Prometheus 2.42's scrape manager takes the targets discovery found on a fixed 5 s tick
(no flag shortens it), so the first scrape of a freshly started server comes about 5 s
after ready, whatever `scrape_interval` says; later scrapes follow the interval. A test
that needs several scrapes pays those 5 s once; restarting Prometheus pays them again.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from tests.waiting import wait_until

WAIT_S = 60.0  # generous: a loaded CI machine is slow, a healthy Prometheus is not
READY_POLL_S = 2.0  # one /-/ready call; the wait around it is WAIT_S
STARTS = 5  # a free port picked then closed may be taken before Prometheus binds it
Sample = tuple[dict[str, str], float]


class PrometheusError(Exception):
    """Prometheus answered an API call with an error (its own text), or ended early."""


class _PortTaken(Exception):
    pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        raise RuntimeError(
            "no `prometheus` on PATH: these tests run a real Prometheus server; "
            "`.ci/run` installs Debian's `prometheus` package (apt-get install prometheus)"
        )
    return found


def config_text(
    targets: Sequence[str],
    scrape_interval: str,
    evaluation_interval: str,
    rule_files: Sequence[Path | str] = (),
) -> str:
    """The prometheus.yml: one job `budgetd` scraping `targets` (host:port) at /metrics.
    Strings are written as JSON, which YAML reads as they are."""
    lines = [
        "global:",
        f"  scrape_interval: {json.dumps(scrape_interval)}",
        f"  evaluation_interval: {json.dumps(evaluation_interval)}",
    ]
    if rule_files:
        lines.append("rule_files:")
        lines += [f"  - {json.dumps(str(path))}" for path in rule_files]
    lines += [
        "scrape_configs:",
        "  - job_name: budgetd",
        "    static_configs:",
        f"      - targets: {json.dumps(list(targets))}",
    ]
    return "\n".join(lines) + "\n"


class PrometheusServer:
    def __init__(
        self,
        home: Path,
        targets: Sequence[str],
        scrape_interval: str = "1s",
        evaluation_interval: str | None = None,
        rule_files: Sequence[Path | str] = (),
    ) -> None:
        """`evaluation_interval` defaults to `scrape_interval`; `rule_files` are passed
        as given (Prometheus reads relative ones from `home`, the config's directory)."""
        self.home = home
        self.config = home / "prometheus.yml"
        self.log_path = home / "prometheus.log"
        home.mkdir(parents=True, exist_ok=True)
        evaluation = evaluation_interval or scrape_interval
        self.config.write_text(config_text(targets, scrape_interval, evaluation, rule_files))
        binary = _binary()
        for attempt in range(STARTS):
            self.port = _free_port()
            self._log_from = self.log_path.stat().st_size if self.log_path.exists() else 0
            self.process = self._spawn(binary)
            try:
                wait_until(self._ready, f"Prometheus ready on {self.url}", limit_s=WAIT_S)
                return
            except AssertionError as error:
                self.stop()
                raise AssertionError(f"{error}: {self.log()}") from None
            except _PortTaken:
                self.process.wait(timeout=WAIT_S)
                if attempt + 1 == STARTS:
                    raise PrometheusError(f"no free port in {STARTS} tries: {self.log()}") from None
            except BaseException:
                self.stop()
                raise

    def _spawn(self, binary: str) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                [
                    binary,
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.home / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a ^C of the test run reaches it through stop()
            )

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            if b"address already in use" in self.log_path.read_bytes()[self._log_from :]:
                raise _PortTaken
            raise PrometheusError(f"prometheus ended ({self.process.returncode}): {self.log()}")
        try:  # a short bound: whoever holds a raced port may never answer
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=READY_POLL_S) as answer:
                return int(answer.status) == 200
        except urllib.error.HTTPError as error:  # 503 while the TSDB opens
            error.close()
            return False
        except OSError:  # not listening yet, or a listener that is not Prometheus
            return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        """Prometheus's own log: every start in this home, appended."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def api(self, path: str, **params: str) -> Any:
        """The `data` of a `/api/v1/<path>` answer; PrometheusError with Prometheus's
        own errorType and error text when it refuses."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=WAIT_S) as a:
                answer = json.load(a)
        except urllib.error.HTTPError as error:
            try:
                answer = json.loads(error.read())
            except ValueError:
                raise PrometheusError(f"{path} {params}: HTTP {error.code}") from error
            finally:
                error.close()
        if answer.get("status") != "success":
            raise PrometheusError(
                f"{path} {params}: {answer.get('errorType')}: {answer.get('error')}"
            )
        return answer["data"]

    def query(self, promql: str) -> list[Sample]:
        """An instant query, now: each series' labels and value (a scalar reads as one
        sample with no labels). A range vector or string result raises PrometheusError."""
        data = self.api("query", query=promql)
        kind = data["resultType"]
        if kind == "vector":
            return [(dict(item["metric"]), float(item["value"][1])) for item in data["result"]]
        if kind == "scalar":
            return [({}, float(data["result"][1]))]
        raise PrometheusError(f"{promql}: a {kind} result, not an instant vector or scalar")

    def wait_for_value(
        self,
        promql: str,
        predicate: Callable[[float], bool],
        what: str,
        *,
        limit_s: float = WAIT_S,
    ) -> Sample:
        """The first sample of `promql` whose value satisfies `predicate`, polled until one
        does (use `sum(...)` for one number); the last result is in the failure."""
        found: list[Sample] = []
        last: list[list[Sample]] = [[]]

        def satisfied() -> bool:
            last[0] = self.query(promql)
            found[:] = [sample for sample in last[0] if predicate(sample[1])][:1]
            return bool(found)

        try:
            wait_until(satisfied, f"{what} ({promql})", limit_s=limit_s)
        except AssertionError as error:
            raise AssertionError(f"{error}; last result: {last[0]}") from None
        return found[0]

    def targets(self) -> list[dict[str, Any]]:
        """The active targets as `/api/v1/targets` lists them (health, lastError, labels)."""
        return list(self.api("targets", state="active")["activeTargets"])

    def targets_up(self) -> bool:
        """Every active target has been scraped and its last scrape succeeded."""
        targets = self.targets()
        return bool(targets) and all(target["health"] == "up" for target in targets)

    def rules(self) -> list[dict[str, Any]]:
        """The alerting rules loaded, of every group: name, query, labels, state
        ("inactive", "pending", "firing"), alerts."""
        groups = self.api("rules", type="alert")["groups"]
        return [rule for group in groups for rule in group["rules"]]

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it has not ended within WAIT_S; its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=WAIT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait(timeout=WAIT_S)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()
