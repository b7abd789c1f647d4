"""docker-compose.yml cannot run here (no Docker engine): check what can be checked without it."""

from __future__ import annotations

import re
from pathlib import Path

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
    assert set(SERVICES) == {"kafka", "worker", "archiver", "prometheus", "grafana"}
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
    [job] = config["scrape_configs"]
    assert job["job_name"] == "contest-telemetry"
    port = SERVICES["worker"]["environment"]["CT_EXPORTER_PORT"]
    assert job["static_configs"][0]["targets"] == [f"worker:{port}"]
    assert SERVICES["worker"]["environment"]["CT_EXPORTER_HOST"] == "0.0.0.0"
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
