"""Static checks of the Prometheus config, rules, promtool unit tests, Grafana dashboard and runbook.

promtool (Debian package ``prometheus``) is required: without it the promtool tests are skipped
locally and FAIL when the ``CI`` environment variable is set.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "deploy" / "prometheus"
CONFIG = PROM_DIR / "prometheus.yml"
RECORDING_RULES = PROM_DIR / "rules" / "contest-recording.rules.yml"
ALERT_RULES = PROM_DIR / "rules" / "contest-alerts.rules.yml"
RULE_FILES = (RECORDING_RULES, ALERT_RULES)
UNIT_TESTS = sorted((PROM_DIR / "tests").glob("*.test.yml"))
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "contest-telemetry.json"
GRAFANA_DATASOURCE = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
METRICS_DOC = ROOT / "docs" / "metrics.md"
RUNBOOK = ROOT / "docs" / "runbook.md"
RUNBOOK_URL = "https://github.com/contest-telemetry/contest-telemetry/blob/main/docs/runbook.md#"
JOB = "contest-telemetry"

# Series Prometheus itself creates, which the dashboard/alerts may use besides the exporter's.
PROMETHEUS_BUILTIN_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE"}


# ---------------------------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def promtool() -> str:
    binary = os.environ.get("PROMTOOL_BIN") or shutil.which("promtool")
    if not binary:
        message = "promtool is not installed (Debian/Ubuntu: apt-get install prometheus)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; it is required when CI is set")
        pytest.skip(message)
    return binary


def run_promtool(promtool: str, *args: str | Path, cwd: Path = PROM_DIR) -> str:
    proc = subprocess.run(
        [promtool, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"promtool {' '.join(map(str, args))} failed:\n{output}"
    return output


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def rules(path: Path) -> Iterator[dict[str, Any]]:
    for group in load_yaml(path)["groups"]:
        yield from group["rules"]


def alert_rules() -> list[dict[str, Any]]:
    return [r for r in rules(ALERT_RULES) if "alert" in r]


def recording_rule_names() -> set[str]:
    return {r["record"] for r in rules(RECORDING_RULES)}


def documented_metrics() -> dict[str, str]:
    """``{metric name: type}`` from the table of docs/metrics.md."""
    found: dict[str, str] = {}
    for line in METRICS_DOC.read_text().splitlines():
        match = re.match(r"^\|\s*`([a-zA-Z_:][a-zA-Z0-9_:]*)`\s*\|\s*(\w+)\s*\|", line)
        if match:
            found[match.group(1)] = match.group(2)
    assert found, "no metric table found in docs/metrics.md"
    return found


def documented_buckets() -> dict[str, set[float]]:
    """``{"arming": {...}, "resolution": {...}}`` bucket bounds from docs/metrics.md."""
    buckets: dict[str, set[float]] = {}
    for line in METRICS_DOC.read_text().splitlines():
        match = re.match(r"^-\s*(\w+):\s*(.+)$", line)
        if match and "`" in match.group(2):
            values = match.group(2).strip("` ").split(",")
            buckets[match.group(1)] = {float(v.strip()) for v in values}
    return buckets


def exposed_series_names() -> set[str]:
    """Every series name a scrape of the exporter can yield (histograms expand to their series)."""
    names = set()
    for name, kind in documented_metrics().items():
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    return names


def known_series_names() -> set[str]:
    return exposed_series_names() | recording_rule_names() | PROMETHEUS_BUILTIN_SERIES


_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
    "atan2",
}


def substitute_grafana_variables(expr: str) -> str:
    expr = re.sub(r"\$__(rate_interval|interval|range)\b", "5m", expr)
    expr = re.sub(r"\$\{[^}]*\}", ".*", expr)
    return re.sub(r"\$\w+", ".*", expr)


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (a lexical approximation, good for our queries)."""
    text = substitute_grafana_variables(expr)
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', text)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range / subquery selectors
    text = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )  # grouping label lists
    text = re.sub(r"\boffset\s+-?\w+", " ", text)
    text = re.sub(r"(?<![\w:.])\d+(\.\d+)?([eE][+-]?\d+)?", " ", text)  # numbers
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        token = match.group(0)
        following = text[match.end() :].lstrip()
        if token.lower() in _KEYWORDS or following.startswith("("):
            continue
        names.add(token)
    return names


def github_anchors(markdown: str) -> set[str]:
    anchors = set()
    for line in markdown.splitlines():
        match = re.match(r"^#{1,6}\s+(.+?)\s*#*\s*$", line)
        if match:
            slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug)
    anchors |= set(re.findall(r'<a\s+(?:id|name)="([^"]+)"', markdown))
    return anchors


def dashboard_panels() -> list[dict[str, Any]]:
    panels = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows
    return panels


def dashboard_queries() -> list[tuple[str, str]]:
    """``(where, promql)`` for every panel target and query variable of the dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard_panels():
        for target in panel.get("targets", []):
            if target.get("expr"):
                queries.append((f"panel {panel['title']!r} target {target.get('refId')}", target["expr"]))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable["query"]
        query = query.get("query", "") if isinstance(query, dict) else query
        match = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", query)
        queries.append((f"variable {variable['name']!r}", match.group(1) if match else query))
    return queries


# ---------------------------------------------------------------------------------------------- promtool
def test_promtool_check_rules(promtool: str):
    output = run_promtool(promtool, "check", "rules", *RULE_FILES)
    assert output.count("SUCCESS") == len(RULE_FILES), output


def test_promtool_unit_tests(promtool: str):
    assert UNIT_TESTS, "no deploy/prometheus/tests/*.test.yml"
    run_promtool(promtool, "test", "rules", *UNIT_TESTS, cwd=PROM_DIR / "tests")


def test_promtool_check_config(promtool: str):
    output = run_promtool(promtool, "check", "config", CONFIG.name, cwd=PROM_DIR)
    assert "2 rule files found" in output, output


def test_dashboard_queries_parse(promtool: str, tmp_path: Path):
    """Every dashboard query is valid PromQL: promtool parses them as recording rules."""
    group_rules = [
        {"record": f"dashboard:query_{i}", "expr": substitute_grafana_variables(expr)}
        for i, (_, expr) in enumerate(dashboard_queries())
    ]
    rule_file = tmp_path / "dashboard.rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": group_rules}]}))
    run_promtool(promtool, "check", "rules", rule_file, cwd=tmp_path)


# ---------------------------------------------------------------------------------------------- config
def test_config_scrapes_worker_and_loads_both_rule_files():
    config = load_yaml(CONFIG)
    assert [PROM_DIR / p for p in config["rule_files"]] == list(RULE_FILES)
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == JOB]
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == ["worker:9464"]


def test_rule_groups_are_named():
    assert [g["name"] for g in load_yaml(RECORDING_RULES)["groups"]] == ["contest-telemetry.recording"]
    assert [g["name"] for g in load_yaml(ALERT_RULES)["groups"]] == ["contest-telemetry.alerts"]


def test_budget_buckets_exist():
    """The SLO rules read le="8.0" / le="0.8": those must be bucket bounds of the documented histograms."""
    buckets = documented_buckets()
    text = RECORDING_RULES.read_text()
    for stage, le in (("arming", "8.0"), ("resolution", "0.8")):
        assert f'contest_{stage}_latency_seconds_bucket{{hub!="_all",le="{le}"}}' in text
        assert float(le) in buckets[stage], f"{stage} buckets in docs/metrics.md lack {le}"


# ---------------------------------------------------------------------------------------------- names
def test_metric_name_extraction():
    expr = (
        'sum by (hub, le) (rate(contest_events_total{hub=~"$hub",type="armed"}[$__rate_interval])) '
        "/ on () group_left clamp_min(contest:x:rate5m offset 1h, 1e-9) > bool 0.5 and up"
    )
    assert promql_metric_names(expr) == {"contest_events_total", "contest:x:rate5m", "up"}


@pytest.mark.parametrize("source", ["recording", "alerts"])
def test_rules_only_use_known_metrics(source: str):
    path = RECORDING_RULES if source == "recording" else ALERT_RULES
    known = known_series_names()
    for rule in rules(path):
        unknown = promql_metric_names(rule["expr"]) - known
        assert not unknown, f"{rule.get('record') or rule.get('alert')}: unknown metrics {sorted(unknown)}"


def test_dashboard_only_uses_known_metrics():
    queries = dashboard_queries()
    assert len(queries) >= 10
    known = known_series_names()
    problems = []
    for where, expr in queries:
        names = promql_metric_names(expr)
        if not names:
            problems.append(f"{where}: selects no metric: {expr}")
        unknown = names - known
        if unknown:
            problems.append(f"{where}: unknown metrics {sorted(unknown)} in {expr}")
    assert not problems, "\n".join(problems)


def test_dashboard_covers_the_required_views():
    queries = " ".join(expr for _, expr in dashboard_queries())
    for needed in (
        'contest_arming_latency_quantile_seconds{view="rolling"',
        'contest_resolution_latency_quantile_seconds{view="rolling"',
        "contest:arming_latency_seconds:p95_5m",
        "contest:resolution_latency_seconds:p95_5m",
        "contest_events_total",
        "contest:invalid_events:rate5m",
        "contest_consumer_lag_records",
        "contest_newest_event_age_seconds",
        "contest_participants_average",
        "contest_participants_max",
        "contest_multi_actor_contests_total",
        "contest:arming_slo_errors:ratio_rate1h",
        "contest:resolution_slo_errors:ratio_rate1h",
    ):
        assert needed in queries, f"dashboard has no query with {needed}"
    panels = dashboard_panels()
    assert any(p["type"] == "alertlist" for p in panels)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"


def test_dashboard_datasource_matches_provisioning():
    (datasource,) = load_yaml(GRAFANA_DATASOURCE)["datasources"]
    dashboard = json.loads(DASHBOARD.read_text())
    (variable,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert variable["current"]["value"] == datasource["uid"]
    assert datasource["url"] == "http://prometheus:9090"


# ---------------------------------------------------------------------------------------------- alerts
def test_every_alert_has_severity_summary_and_runbook():
    anchors = github_anchors(RUNBOOK.read_text())
    alerts = alert_rules()
    assert len(alerts) >= 10
    for rule in alerts:
        name = rule["alert"]
        assert rule.get("labels", {}).get("severity") in {"page", "ticket"}, name
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            assert annotations.get(key), f"{name} has no {key} annotation"
        url = annotations["runbook_url"]
        assert url.startswith(RUNBOOK_URL), f"{name}: runbook_url {url} is not in docs/runbook.md"
        anchor = url.removeprefix(RUNBOOK_URL)
        assert anchor in anchors, f"{name}: anchor #{anchor} not found in docs/runbook.md"


def test_every_alert_is_unit_tested_firing_and_quiet():
    """Each alert has a promtool case where it fires and one where it is expected quiet."""
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in UNIT_TESTS:
        for case in load_yaml(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert names - firing == set(), f"alerts never tested firing: {sorted(names - firing)}"
    assert names - quiet == set(), f"alerts never tested quiet: {sorted(names - quiet)}"
    assert (firing | quiet) - names == set(), f"tests name unknown alerts: {sorted((firing | quiet) - names)}"
