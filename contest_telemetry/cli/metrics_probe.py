"""Read a few numbers from a worker's ``/metrics`` page (for the demo's live view)."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["PipelineReading", "read_metrics"]


@dataclass
class PipelineReading:
    processed: float = 0.0
    lag: float = 0.0
    invalid: float = 0.0
    late: float = 0.0
    arming_p95_s: float | None = None
    resolution_p95_s: float | None = None
    arming_breached_hubs: int = 0
    resolution_breached_hubs: int = 0
    up: bool = False


def read_metrics(url: str, timeout: float = 2.0) -> PipelineReading:
    reading = PipelineReading()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text = response.read().decode()
    except OSError:
        return reading
    reading.up = True
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name == "contest_processed_events_total":
                reading.processed += value
            elif name == "contest_consumer_lag_records":
                reading.lag += value
            elif name == "contest_invalid_events_total":
                reading.invalid += value
            elif name == "contest_late_events_total":
                reading.late += value
            elif (
                name.endswith("_latency_quantile_seconds")
                and labels.get("hub") == "_all"
                and (labels.get("view") == "rolling" and labels.get("quantile") == "0.95")
            ):
                if name.startswith("contest_arming"):
                    reading.arming_p95_s = value
                else:
                    reading.resolution_p95_s = value
            elif name == "contest_budget_breached" and value >= 1 and labels.get("hub") not in ("_all", None):
                if labels.get("stage") == "arming":
                    reading.arming_breached_hubs += 1
                else:
                    reading.resolution_breached_hubs += 1
    return reading
