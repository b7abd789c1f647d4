from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from contest_telemetry.broker import TansuBroker
from contest_telemetry.broker.readiness import port_open


def _cli(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CT_BROKER_STATE": str(state)}
    return subprocess.run(
        [sys.executable, "-m", "contest_telemetry", "broker", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_embedded_broker_start_status_stop(tmp_path: Path) -> None:
    state = tmp_path / "broker.json"
    started = _cli("start", "--engine", "embedded", "--json", state=state)
    try:
        assert started.returncode == 0, started.stderr
        info = json.loads(started.stdout)
        host, port = info["bootstrap"].split(":")
        assert host == "127.0.0.1" and port_open(host, int(port))
        status = _cli("status", "--json", state=state)
        assert status.returncode == 0 and json.loads(status.stdout)["running"] is True
        again = _cli("start", "--engine", "embedded", state=state)
        assert again.returncode == 1 and "already running" in again.stderr
    finally:
        stopped = _cli("stop", state=state)
    assert stopped.returncode == 0
    assert not port_open(host, int(port))
    assert _cli("status", state=state).returncode == 3


def test_bad_engine_is_one_line(tmp_path: Path) -> None:
    result = _cli("start", "--engine", "zookeeper", state=tmp_path / "s.json")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "invalid choice: 'zookeeper'" in result.stderr


def test_broker_process_stop_frees_the_port() -> None:
    broker = TansuBroker().start()
    port = broker.port
    assert port_open("127.0.0.1", port) and broker.startup_seconds > 0
    broker.stop()
    assert not broker.alive() and not port_open("127.0.0.1", port)


@pytest.mark.skipif(
    not (shutil.which("java") and shutil.which("mvn")), reason="Apache Kafka needs java and mvn"
)
def test_apache_kafka_restart_keeps_its_data(tmp_path: Path) -> None:
    from contest_telemetry.broker import ApacheKafkaBroker

    broker = ApacheKafkaBroker(data_dir=tmp_path / "kafka").start()
    try:
        broker.stop()
        assert (tmp_path / "kafka" / "kraft-logs" / "meta.properties").exists()
        broker.start()  # formatted storage is reused, not re-formatted
        assert broker.alive()
    finally:
        broker.stop()


@pytest.mark.skipif(
    not (shutil.which("java") and shutil.which("mvn")), reason="Apache Kafka needs java and mvn"
)
def test_apache_kafka_formats_with_a_cluster_id_that_starts_with_a_dash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1 random cluster id in 64 starts with '-': the storage tool must not read it as an option."""
    from contest_telemetry.broker import ApacheKafkaBroker, apache

    monkeypatch.setattr(apache, "_cluster_id", lambda: "-" + "A" * 21)
    (tmp_path / "kafka").mkdir()
    ApacheKafkaBroker(data_dir=tmp_path / "kafka", port=1).prepare()  # formats, does not start
    meta = (tmp_path / "kafka" / "kraft-logs" / "meta.properties").read_text()
    assert "cluster.id=-AAAAAAAAAAAAAAAAAAAAA" in meta


def test_a_broker_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    """A test run killed by a timeout must not leave its broker running (Linux: PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("parent-death signal is Linux only")
    script = (
        "import sys, time\n"
        "from contest_telemetry.broker import TansuBroker\n"
        "b = TansuBroker().start()\n"
        "print(b.proc.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        broker_pid = int(parent.stdout.readline())
        os.kill(broker_pid, 0)  # running
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.kill(broker_pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(broker_pid, 9)
            pytest.fail("the broker outlived the process that started it")
    finally:
        if parent.poll() is None:
            parent.kill()
