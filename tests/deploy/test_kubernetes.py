"""deploy/kubernetes: every manifest validates offline against the Kubernetes schemas that
kubernetes-validate ships (no download), and the pieces fit together: probes on /healthz and
/readyz, ports and hosts from the ConfigMap, secrets only in the Secret, replicas within the
partitions, the PodDisruptionBudget and Services selecting the pods, the scrape jobs the alerts use."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from streams.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
RULES = ROOT / "deploy" / "prometheus" / "rules"
# The oldest Kubernetes minor still commonly run; the manifests use nothing newer.
KUBERNETES_VERSION = "1.30.0"


def manifests() -> dict[str, list[dict[str, Any]]]:
    found = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            found[path.name] = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert found, "no manifests in deploy/kubernetes"
    return found


def objects() -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for docs in manifests().values() for d in docs}


def container(kind_name: tuple[str, str]) -> dict[str, Any]:
    (only,) = objects()[kind_name]["spec"]["template"]["spec"]["containers"]
    return only


CONFIG = ("ConfigMap", "contest-telemetry-config")
WORKER = ("Deployment", "contest-telemetry-worker")
ARCHIVER = ("Deployment", "contest-telemetry-archiver")


@pytest.mark.parametrize("name", sorted(manifests()))
def test_manifest_validates_against_the_shipped_schemas(name: str) -> None:
    for doc in manifests()[name]:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest_in_one_namespace() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(manifests())
    namespace = kustomization["namespace"]
    for (kind, name), obj in objects().items():
        if kind != "Namespace":
            assert obj["metadata"]["namespace"] == namespace, (kind, name)


@pytest.mark.parametrize("deployment,prefix", [(WORKER, "CT_EXPORTER_"), (ARCHIVER, "CT_ARCHIVER_EXPORTER_")])
def test_probes_use_healthz_and_readyz_on_the_exporter_port(deployment: tuple[str, str], prefix: str) -> None:
    config = objects()[CONFIG]["data"]
    c = container(deployment)
    (port,) = [p for p in c["ports"] if p["name"] == "metrics"]
    assert str(port["containerPort"]) == config[f"{prefix}PORT"]
    assert config[f"{prefix}HOST"] == "0.0.0.0"  # reachable by the kubelet and Prometheus
    for probe, path in (
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ):
        assert c[probe]["httpGet"] == {"path": path, "port": "metrics"}, (deployment, probe)
    # Liveness must not kill a worker for a stall before the health setting itself calls it one.
    live = c["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] <= 60


def test_config_from_the_configmap_and_secrets_from_the_secret() -> None:
    config = objects()[CONFIG]["data"]
    secret = objects()[("Secret", "contest-telemetry-kafka")]
    assert "KAFKA_SASL_PASSWORD" in secret["stringData"]
    assert not [key for key in config if re.search(r"PASSWORD|SECRET|KEY$", key)], config
    for deployment in (WORKER, ARCHIVER):
        refs = container(deployment)["envFrom"]
        assert {"configMapRef": {"name": CONFIG[1]}} in refs
        assert {"secretRef": {"name": "contest-telemetry-kafka"}} in refs
    assert config["CT_LOG_FORMAT"] == "json"


def test_worker_replicas_fit_the_partitions_and_a_disruption_keeps_one() -> None:
    worker = objects()[WORKER]
    partitions = int(objects()[CONFIG]["data"]["CT_TOPIC_PARTITIONS"])
    assert 2 <= worker["spec"]["replicas"] <= partitions
    pdb = objects()[("PodDisruptionBudget", "contest-telemetry-worker")]
    assert pdb["spec"]["selector"]["matchLabels"] == worker["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["maxUnavailable"] < worker["spec"]["replicas"]
    assert worker["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    archiver = objects()[ARCHIVER]
    assert archiver["spec"]["replicas"] == 1 and archiver["spec"]["strategy"]["type"] == "Recreate"


def test_services_select_the_pods_on_the_metrics_port() -> None:
    for deployment, service in (
        (WORKER, "contest-telemetry-worker"),
        (ARCHIVER, "contest-telemetry-archiver"),
    ):
        svc = objects()[("Service", service)]
        pod_labels = objects()[deployment]["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= pod_labels.items()
        assert [p["targetPort"] for p in svc["spec"]["ports"]] == ["metrics"]


def _mebibytes(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
    return int(number) * (1024 if unit == "Gi" else 1)


def test_resources_and_grace_periods() -> None:
    # Measured peaks (README "Benchmarks"): worker state 232-248 MB, its ingest child up to 201 MB.
    worker = container(WORKER)["resources"]
    assert _mebibytes(worker["requests"]["memory"]) >= 248 + 201
    assert _mebibytes(worker["requests"]["memory"]) <= _mebibytes(worker["limits"]["memory"])
    archiver = container(ARCHIVER)["resources"]
    assert _mebibytes(archiver["requests"]["memory"]) <= _mebibytes(archiver["limits"]["memory"])
    grace = objects()[WORKER]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= WorkerSettings().window_send_timeout_s + 30  # window results, then the ingest child


def test_scrape_jobs_are_the_ones_the_alerts_select() -> None:
    """Static checks only: Debian's promtool is built without Kubernetes service discovery."""
    scrape = yaml.safe_load(
        objects()[("ConfigMap", "contest-telemetry-prometheus-scrape")]["data"]["scrape-configs.yml"]
    )
    jobs = {job["job_name"]: job for job in scrape}
    alerts = (RULES / "contest-alerts.rules.yml").read_text()
    assert set(jobs) == set(re.findall(r'job="([\w-]+)"', alerts))
    for job, service in (
        ("contest-telemetry", "contest-telemetry-worker"),
        ("contest-telemetry-archiver", "contest-telemetry-archiver"),
    ):
        svc = objects()[("Service", service)]
        (sd,) = jobs[job]["kubernetes_sd_configs"]
        assert sd["role"] == "endpoints" and sd["namespaces"]["names"] == [svc["metadata"]["namespace"]]
        keep = [r for r in jobs[job]["relabel_configs"] if r.get("action") == "keep"]
        (rule,) = keep
        component, port = rule["regex"].split(";")
        assert svc["metadata"]["labels"]["app.kubernetes.io/component"] == component
        assert [p["name"] for p in svc["spec"]["ports"]] == [port]
