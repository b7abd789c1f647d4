"""Dead letters cut to ``CT_TOPIC_DLQ_MAX_BYTES`` (issue 11, gap 3): the cut at a configured size,
the ``ct-truncated`` header it is flagged with, and its counter on a scraped /metrics page."""

from __future__ import annotations

import base64
import hashlib
import urllib.request
from dataclasses import dataclass

import orjson
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from contest_telemetry.schema import InvalidEvent
from sinks.prometheus import ExporterSettings, PipelineCollector, PipelineCounters, start_exporter
from streams.counters import DLQ_TRUNCATED, CounterSink
from streams.dlq import (
    TRUNCATED_HEADER,
    count_truncated,
    cut_dlq,
    dlq_headers,
    dlq_value,
)
from streams.exceptions import ProcessingError
from streams.ingest import pack
from streams.processor import Engine
from streams.settings import WorkerSettings

KiB = 1024


def dead_letter(original: bytes, key: bytes | None = b"hub-1", error: str = "bad") -> dict:
    return dlq_value(
        InvalidEvent(ProcessingError(error)),
        topic="contest.events",
        partition=3,
        offset=42,
        key=key,
        original=original,
        envelope=False,
    )


@pytest.mark.parametrize("max_bytes", [64 * KiB, 256 * KiB, 1024 * KiB])
def test_a_dead_letter_over_the_configured_size_is_cut_to_it_and_flagged(max_bytes: int):
    original = bytes(range(256)) * (max_bytes // 256 + 1)  # base64 makes it a third larger again
    value = dead_letter(original)
    data, cut = cut_dlq(value, max_bytes)
    assert cut and len(data) <= max_bytes
    doc = orjson.loads(data)
    assert doc["payloadTruncated"] is True and "originalBase64" not in doc
    assert doc["payloadBytes"] == len(original)
    assert doc["payloadSha256"] == hashlib.sha256(original).hexdigest()
    assert base64.b64decode(doc["payloadHeadBase64"]) == original[:4096]
    assert doc["source"] == {"topic": "contest.events", "partition": 3, "offset": 42, "key": "hub-1"}
    headers = dlq_headers(value, cut=cut)
    assert (TRUNCATED_HEADER, b"1") in headers


def test_a_dead_letter_under_the_size_is_whole_and_not_flagged():
    value = dead_letter(b"x" * 1000)
    data, cut = cut_dlq(value, 64 * KiB)
    assert not cut and orjson.loads(data) == orjson.loads(orjson.dumps(value))
    assert all(name != TRUNCATED_HEADER for name, _ in dlq_headers(value, cut=cut))


def test_hostile_keys_and_error_texts_still_fit_the_smallest_cut():
    """Near the 64 KiB floor the source key and the error text (escaped up to 6x in JSON) must not
    push a cut dead letter over the limit."""
    value = dead_letter(b"\x00" * 200_000, key=b"\x01" * 60_000, error="\x02" * 60_000)
    value["errors"] = [{"field": "\x03" * 5_000, "reason": "\x04" * 5_000}] * 200
    data, cut = cut_dlq(value, 64 * KiB)
    assert cut and len(data) <= 64 * KiB
    doc = orjson.loads(data)
    assert doc["payloadBytes"] == 200_000 and doc["source"]["partition"] == 3


def test_count_truncated_counts_flagged_dead_letters_only():
    small, big = dead_letter(b"x" * 10), dead_letter(b"y" * 200_000)
    letters = []
    for value in (small, big, big):
        data, cut = cut_dlq(value, 64 * KiB)
        letters.append((b"hub-1", data, dlq_headers(value, cut=cut)))
    assert count_truncated(letters) == 2
    assert count_truncated([]) == 0


def test_cut_dead_letters_are_counted_on_the_scraped_page():
    """Counted by the worker (``dlq_truncated``) and carried from the ingest stage with its
    dead-letter counts (key :data:`DLQ_TRUNCATED`, not a dead-letter reason)."""
    registry = CollectorRegistry()
    counters = PipelineCounters()
    registry.register(PipelineCollector(counters))
    counters.dlq_truncated()
    counters.invalid(DLQ_TRUNCATED, 4)
    counters.invalid("decode", 5)
    server = start_exporter(registry, ExporterSettings(port=0))
    try:
        with urllib.request.urlopen(server.url, timeout=10) as resp:
            page = resp.read().decode()
    finally:
        server.stop()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
    }
    assert samples[("contest_dlq_payloads_truncated_total", ())] == 5
    assert samples[("contest_invalid_events_total", (("reason", "decode"),))] == 5
    assert ("contest_invalid_events_total", (("reason", DLQ_TRUNCATED),)) not in samples


class _Counting(CounterSink):
    def __init__(self) -> None:
        self.truncated = 0

    def dlq_truncated(self, n: int = 1) -> None:
        self.truncated += n


def test_the_worker_and_the_ingest_stage_cut_at_the_configured_size() -> None:
    """Both writers of dead letters cut at ``dlq_max_bytes`` (``CT_TOPIC_DLQ_MAX_BYTES``), flag
    the letter, and count it: the worker directly, the ingest stage through the counts its next
    ingested record carries."""
    big = b"\xff" * (100 * KiB)  # not JSON: a decode dead letter of ~133 KiB once base64-encoded
    counters = _Counting()
    engine = Engine(WorkerSettings(), {}, counters, dlq_max_bytes=64 * KiB)
    out = engine.process(0, 0, b"hub-1", big, 1.0)
    [(_key, value, headers)] = out.dlq
    assert len(value) <= 64 * KiB and (TRUNCATED_HEADER, b"1") in headers and counters.truncated == 1
    assert orjson.loads(value)["reason"] == "decode"
    small = Engine(WorkerSettings(), {}, _Counting())  # the default size keeps it whole
    [(_key, whole, headers)] = small.process(0, 0, b"hub-1", big, 1.0).dlq
    assert len(whole) > 100 * KiB and (TRUNCATED_HEADER, b"1") not in headers

    @dataclass
    class Rec:
        partition: int
        offset: int
        key: bytes | None
        value: bytes | None
        timestamp: int = 0

    _ingested, dead, stats = pack(
        {0: [Rec(0, 5, b"hub-1", big)]}, topic="contest.events", dlq_max_bytes=64 * KiB
    )
    [(_key, value, headers)] = dead
    assert len(value) <= 64 * KiB and count_truncated(dead) == 1 and stats.dead_letters == {"decode": 1}
