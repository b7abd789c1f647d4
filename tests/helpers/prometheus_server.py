"""A real ``prometheus`` server for tests: free port on 127.0.0.1, temp config and TSDB, 1 s intervals.

Usage::

    with PrometheusServer(["127.0.0.1:9464"], rule_files=[path]) as prom:
        prom.wait_for(lambda: prom.query('up{job="contest-telemetry"} == 1'), timeout=30)
        firing = [a for a in prom.alerts() if a["state"] == "firing"]

``query`` returns the ``data.result`` list of an instant query (``/api/v1/query``), ``alerts`` the
``data.alerts`` list of ``/api/v1/alerts``. The binary is taken from ``$PROMETHEUS_BIN``, else from
``PATH`` (Debian: ``/usr/bin/prometheus``); :func:`find_prometheus` returns ``None`` when there is none.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

DEFAULT_JOB = "contest-telemetry"


class PrometheusError(RuntimeError):
    """The server did not start, exited, or answered an API call with an error."""


def find_prometheus() -> str | None:
    """Path of the prometheus binary (``$PROMETHEUS_BIN`` or ``PATH``), or None."""
    explicit = os.environ.get("PROMETHEUS_BIN")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("prometheus")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class PrometheusServer:
    """Start/stop a prometheus server scraping ``targets`` (``host:port``) every second.

    Rule files are referenced by absolute path; they are evaluated every second, so ``for:`` clauses
    are in real time. The process is started by :meth:`start` (or ``__enter__``) and stopped by
    :meth:`stop` (SIGTERM, then SIGKILL after ``stop_timeout``); the temp directory is removed.
    """

    def __init__(
        self,
        targets: Sequence[str],
        rule_files: Iterable[str | os.PathLike[str]] = (),
        *,
        job: str = DEFAULT_JOB,
        metrics_path: str = "/metrics",
        scrape_interval: str = "1s",
        evaluation_interval: str = "1s",
        binary: str | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.targets = list(targets)
        self.rule_files = [str(Path(p).resolve()) for p in rule_files]
        self.job = job
        self.metrics_path = metrics_path
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval
        self.binary = binary or find_prometheus()
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.extra_args = list(extra_args)
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._log_path: Path | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        if self.port is None:
            raise PrometheusError("prometheus is not started")
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        """The configuration written for the server (a dict, dumped as YAML)."""
        scrape_interval = self.scrape_interval
        return {
            "global": {
                "scrape_interval": scrape_interval,
                "scrape_timeout": scrape_interval,
                "evaluation_interval": self.evaluation_interval,
            },
            "rule_files": list(self.rule_files),
            "scrape_configs": [
                {
                    "job_name": self.job,
                    "metrics_path": self.metrics_path,
                    "static_configs": [{"targets": list(self.targets)}],
                }
            ],
        }

    def start(self, attempts: int = 3) -> PrometheusServer:
        if self.process is not None:
            raise PrometheusError("prometheus is already started")
        if not self.binary:
            raise PrometheusError("no prometheus binary (install it or set PROMETHEUS_BIN)")
        self._tmp = tempfile.TemporaryDirectory(prefix="prometheus-test-")
        tmp = Path(self._tmp.name)
        config_path = tmp / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        last_error: Exception | None = None
        # The free port can be taken between free_port() and the bind: retry with another one.
        for attempt in range(attempts):
            self.port = free_port()
            self._log_path = tmp / f"prometheus-{attempt}.log"
            args = [
                self.binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={tmp / f'data-{attempt}'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                *self.extra_args,
            ]
            with open(self._log_path, "wb") as log:
                self.process = subprocess.Popen(
                    args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmp
                )
            try:
                self._wait_ready()
                return self
            except PrometheusError as exc:
                last_error = exc
                self._terminate()
                if "address already in use" not in self.log().lower():
                    break
        self._cleanup_tmp()
        raise PrometheusError(f"prometheus did not become ready: {last_error}")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PrometheusError(f"exited with code {self.process.returncode}:\n{self.log()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.1)
        raise PrometheusError(f"not ready after {self.start_timeout}s:\n{self.log()[-4000:]}")

    def _terminate(self) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=self.stop_timeout)

    def _cleanup_tmp(self) -> None:
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.cleanup()
            self._tmp = None

    def stop(self) -> None:
        """Terminate the server (kill after ``stop_timeout``) and remove its temp directory."""
        self._terminate()
        self._cleanup_tmp()

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def log(self) -> str:
        """The server's combined stdout/stderr so far (for assertion messages)."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        return self._log_path.read_text(errors="replace")

    # ------------------------------------------------------------------ HTTP API
    def _api(self, path: str, params: dict[str, str] | None = None) -> Any:
        url = f"{self.url}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:  # 400/422 carry a JSON error body
            try:
                body = json.load(exc)
            except ValueError:
                raise PrometheusError(f"{path}: HTTP {exc.code}") from exc
        if body.get("status") != "success":
            raise PrometheusError(f"{path}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, promql: str, time_: float | None = None) -> list[Any]:
        """Instant query: ``data.result``.

        A vector gives ``[{"metric": {...}, "value": [t, "v"]}, ...]``; a scalar or string ``[[t, "v"]]``.
        """
        params = {"query": promql}
        if time_ is not None:
            params["time"] = str(time_)
        data = self._api("/api/v1/query", params)
        result = data["result"]
        if data.get("resultType") in ("scalar", "string"):
            return [result]
        return list(result)

    def alerts(self) -> list[dict[str, Any]]:
        """Active (pending and firing) alerts: ``/api/v1/alerts`` ``data.alerts``."""
        return list(self._api("/api/v1/alerts")["alerts"])

    def firing(self, alertname: str | None = None) -> list[dict[str, Any]]:
        """Firing alerts, optionally only those named ``alertname``."""
        return [
            a
            for a in self.alerts()
            if a.get("state") == "firing" and (alertname is None or a["labels"].get("alertname") == alertname)
        ]

    def targets_health(self) -> list[dict[str, Any]]:
        """Active scrape targets (``/api/v1/targets``), with ``health`` and ``lastError``."""
        return list(self._api("/api/v1/targets", {"state": "active"})["activeTargets"])

    def wait_for(
        self,
        probe: Callable[[], T],
        timeout: float = 30.0,
        interval: float = 0.2,
        message: str = "condition",
    ) -> T:
        """Call ``probe`` until it returns a truthy value (returned) or ``timeout`` passes (AssertionError)."""
        deadline = time.monotonic() + timeout
        last: T | None = None
        while True:
            last = probe()
            if last:
                return last
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {message}; last value: {last!r}\n"
                    f"prometheus log tail:\n{self.log()[-2000:]}"
                )
            time.sleep(interval)
