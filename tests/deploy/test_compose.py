"""docker-compose.yml cannot run here (no Docker engine): check what can be checked without it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def _readme_ports() -> dict[str, int]:
    """The `| service | port |` table under the README's docker compose section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("<!-- compose-ports -->")[1].split("<!-- /compose-ports -->")[0]
    rows = re.findall(r"^\|\s*`?([a-z-]+)`?\s*\|\s*(\d+)\s*\|", section, flags=re.M)
    assert rows, "README lists no compose ports"
    return {name: int(port) for name, port in rows}


def _bindings(service: str) -> list[tuple[str | None, int, int]]:
    """``(host ip or None, published port, container port)`` of each of a service's ``ports``,
    short syntax (``[HOST_IP:]HOST_PORT:CONTAINER_PORT[/PROTO]``) or long syntax (a mapping)."""
    out: list[tuple[str | None, int, int]] = []
    for entry in SERVICES[service].get("ports", []):
        if isinstance(entry, dict):
            out.append((entry.get("host_ip"), int(entry["published"]), int(entry["target"])))
            continue
        parts = str(entry).split("/")[0].rsplit(":", 2)
        assert len(parts) >= 2, f"{service}: {entry!r} publishes a random host port"
        host_ip = parts[0].strip("[]") if len(parts) == 3 else None
        out.append((host_ip, int(parts[-2]), int(parts[-1])))
    return out


def _published(service: str) -> set[int]:
    return {published for _, published, _ in _bindings(service)}


def test_services_and_ports_match_the_readme() -> None:
    ports = _readme_ports()
    assert {"kafka", "worker", "archiver", "prometheus", "grafana"} <= set(SERVICES)
    for service, port in ports.items():
        assert port in _published(service), f"README says {service} listens on {port}"


def test_published_ports_are_bound_to_loopback_only() -> None:
    """Kafka (no auth), the exporter and Grafana (anonymous viewer) must not be published on every
    interface: Docker's iptables rules bypass host firewalls such as ufw."""
    published = {name: _bindings(name) for name in SERVICES if SERVICES[name].get("ports")}
    assert set(published) == {"kafka", "worker", "prometheus", "grafana"}
    for name, bindings in published.items():
        for host_ip, port, target in bindings:
            assert host_ip == "127.0.0.1", f"{name}: port {port} published on {host_ip or 'every interface'}"
            assert port == target, name
    for name, service in SERVICES.items():
        assert service.get("network_mode") != "host", f"{name}: host networking skips the port bindings"
    header = (ROOT / "docker-compose.yml").read_text().split("\nname:")[0]
    assert "127.0.0.1" in header and "To open a port" in header, "the header says how to open the ports"


def test_images_are_pinned() -> None:
    for name, service in SERVICES.items():
        image = service.get("image", "")
        if "build" in service:
            continue
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image) and not image.endswith(":latest"), (
            f"{name}: {image!r}"
        )


def test_kafka_is_kraft_with_a_healthcheck_and_pipeline_waits_for_it() -> None:
    kafka = SERVICES["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert kafka["healthcheck"]["test"]
    internal = re.search(r"DOCKER://([\w-]+:\d+)", kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"])
    assert internal
    for name in ("worker", "archiver"):
        assert SERVICES[name]["depends_on"]["kafka"]["condition"] == "service_healthy"
        assert SERVICES[name]["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == internal.group(1)


def test_prometheus_scrapes_the_worker_exporter_with_the_rules() -> None:
    mounts = {v.split(":")[1]: v.split(":")[0] for v in SERVICES["prometheus"]["volumes"]}
    config_dir = ROOT / mounts["/etc/prometheus"]
    config = yaml.safe_load((config_dir / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"contest-telemetry", "contest-telemetry-archiver"}
    for job, service, prefix in (
        ("contest-telemetry", "worker", "CT_EXPORTER_"),
        ("contest-telemetry-archiver", "archiver", "CT_ARCHIVER_EXPORTER_"),
    ):
        port = SERVICES[service]["environment"][f"{prefix}PORT"]
        assert jobs[job]["static_configs"][0]["targets"] == [f"{service}:{port}"]
        assert SERVICES[service]["environment"][f"{prefix}HOST"] == "0.0.0.0"
    for rule_file in config["rule_files"]:
        assert (config_dir / rule_file).is_file(), rule_file


def test_grafana_mounts_the_provisioning_and_dashboard() -> None:
    for volume in SERVICES["grafana"]["volumes"]:
        source = ROOT / volume.split(":")[0]
        assert source.is_dir(), volume
    assert (ROOT / "deploy/grafana/dashboards/contest-telemetry.json").is_file()


def test_dockerfile_copies_every_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in ("contest_telemetry", "producers", "streams", "sinks"):
        assert f"COPY {package} ./{package}" in dockerfile
        assert (ROOT / package / "__init__.py").is_file()


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", value)
    assert match and any(match.groups()), value
    return int(match.group(1) or 0) * 60 + int(match.group(2) or 0)


def test_pipeline_services_report_their_healthz_and_others_wait_for_it() -> None:
    for service, prefix in (("worker", "CT_EXPORTER_"), ("archiver", "CT_ARCHIVER_EXPORTER_")):
        check = SERVICES[service]["healthcheck"]
        port = SERVICES[service]["environment"][f"{prefix}PORT"]
        assert check["test"] == [
            "CMD", "python", "-m", "contest_telemetry.healthcheck", f"http://127.0.0.1:{port}/healthz"
        ]  # fmt: skip
        assert _seconds(check["interval"]) <= 30 and check["retries"] >= 2
    assert SERVICES["prometheus"]["depends_on"] == {
        "worker": {"condition": "service_healthy"},
        "archiver": {"condition": "service_healthy"},
    }
    assert SERVICES["prometheus"]["healthcheck"]["test"]
    assert SERVICES["grafana"]["depends_on"] == {"prometheus": {"condition": "service_healthy"}}


def test_stop_grace_periods_cover_the_flush_a_sigterm_triggers() -> None:
    from streams.settings import WorkerSettings

    worker = WorkerSettings()
    # faust's orderly stop waits for window results (window_send_timeout_s), then the ingest
    # child gets 30 s (streams/cli.py IngestChild.stop) to send and commit its last poll.
    assert _seconds(SERVICES["worker"]["stop_grace_period"]) >= worker.window_send_timeout_s + 30
    assert _seconds(SERVICES["archiver"]["stop_grace_period"]) >= 30  # open chunks written, fsynced


def test_dockerfile_has_a_healthcheck_on_healthz(monkeypatch: Any) -> None:
    from contest_telemetry.healthcheck import default_url

    monkeypatch.delenv("CT_EXPORTER_PORT", raising=False)
    monkeypatch.delenv("CT_ARCHIVER_EXPORTER_PORT", raising=False)

    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "\nHEALTHCHECK " in dockerfile
    assert 'CMD ["python", "-m", "contest_telemetry.healthcheck"]' in dockerfile
    assert default_url(["contest-telemetry", "worker"]) == "http://127.0.0.1:9464/healthz"
    assert (
        default_url(["contest-telemetry", "archive", "run", "--dir", "/a"]) == "http://127.0.0.1:9465/healthz"
    )


def test_the_healthcheck_command_follows_healthz(capsys: Any) -> None:
    """Against a real exporter on a free port: 0 while /healthz answers 200, 1 on 503 or no server."""
    from prometheus_client import CollectorRegistry

    from contest_telemetry.health import Verdict
    from contest_telemetry.healthcheck import main
    from sinks.prometheus import ExporterSettings, start_exporter

    class Flip:
        live = Verdict(True, "fine")

        def liveness(self) -> Verdict:
            return self.live

        def readiness(self) -> Verdict:
            return self.live

    health = Flip()
    server = start_exporter(CollectorRegistry(), ExporterSettings(port=0), health)
    try:
        url = f"{server.base_url}/healthz"
        assert main([url]) == 0
        health.live = Verdict(False, "agent crash loop")
        assert main([url]) == 1
        assert "agent crash loop" in capsys.readouterr().out
    finally:
        server.stop()
    assert main([url]) == 1  # nothing listens any more
