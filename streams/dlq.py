"""The dead-letter record: what failed, why, and where it came from.

Value (JSON)::

    {"reason": "decode" | "validation" | "envelope",
     "error": "<message>", "errors": [{"field", "reason"}],
     "source": {"topic", "partition", "offset", "key"},
     "index": <position of the bad event inside an envelope, or null>,
     "event": <the bad event's JSON, when it was JSON>,
     "originalBase64": "<the record's bytes, when they were not JSON>",
     "failedAt": "<ISO time>"}

``reason`` is ``envelope`` when the envelope itself is malformed (``events`` not a list), else the
schema stage's category.

A dead letter never exceeds ``CT_TOPIC_DLQ_MAX_BYTES`` (default :data:`MAX_DLQ_BYTES`; the
settings keep it below the DLQ topic's ``max.message.bytes``): beyond it the payload (``event`` or
``originalBase64``) is replaced by ``payloadTruncated: true``, ``payloadBytes`` (its size),
``payloadSha256`` and its first 4 KiB (``payloadHeadBase64``), so an 800 KB record that is not
JSON (1.07 MB once base64-encoded) is still dead-lettered and can be matched with the archive.
Headers carry ``ct-reason``, ``ct-source`` (``topic/partition/offset``), ``ct-index`` and, on a
cut dead letter, ``ct-truncated: 1`` (what :func:`count_truncated` counts; the writers count cuts
in ``contest_dlq_payloads_truncated_total``). A record keeps the source key, so a hub's dead
letters stay together.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import orjson

from contest_telemetry.schema import InvalidEvent
from contest_telemetry.schema.contract import ms_to_iso
from contest_telemetry.settings import DEFAULT_DLQ_MAX_BYTES

__all__ = [
    "INDEX_HEADER",
    "MAX_DLQ_BYTES",
    "REASON_HEADER",
    "SOURCE_HEADER",
    "TRUNCATED_HEADER",
    "count_truncated",
    "cut_dlq",
    "dlq_headers",
    "dlq_value",
]

MAX_DLQ_BYTES = DEFAULT_DLQ_MAX_BYTES
"""Default largest dead letter (``CT_TOPIC_DLQ_MAX_BYTES``; contest_telemetry/topics.py creates
the DLQ with room for it)."""
# What a cut dead letter keeps of its payload, error text and source key: small enough to fit the
# smallest allowed CT_TOPIC_DLQ_MAX_BYTES (64 KiB) with room to spare.
_HEAD_BYTES = 4096
_MAX_ERRORS = 50
REASON_HEADER = "ct-reason"
SOURCE_HEADER = "ct-source"  # topic/partition/offset of the record that failed
INDEX_HEADER = "ct-index"
TRUNCATED_HEADER = "ct-truncated"  # present (b"1") when the payload was cut


def dlq_value(
    invalid: InvalidEvent,
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    original: bytes | None,
    envelope: bool,
    now: datetime | None = None,
) -> dict[str, Any]:
    err = invalid.error
    reason = err.reason
    if envelope and invalid.index is None and reason == "validation":
        reason = "envelope"
    out: dict[str, Any] = {
        "reason": reason,
        "error": str(err),
        "errors": [{"field": e.field, "reason": e.reason} for e in err.errors],
        "source": {
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "key": None if key is None else key.decode("utf-8", "replace"),
        },
        "index": invalid.index,
        "failedAt": ms_to_iso(None if now is None else now.timestamp() * 1000.0),
    }
    if invalid.raw is not None:
        out["event"] = invalid.raw
    elif original is not None:
        out["originalBase64"] = base64.b64encode(original).decode("ascii")
    return out


def dlq_headers(value: dict[str, Any], *, cut: bool = False) -> list[tuple[str, bytes]]:
    """The headers of dead letter ``value``; ``cut``: its payload was cut (:func:`cut_dlq`)."""
    src = value["source"]
    headers = [
        (REASON_HEADER, value["reason"].encode()),
        (SOURCE_HEADER, f"{src['topic']}/{src['partition']}/{src['offset']}".encode()),
    ]
    if value.get("index") is not None:
        headers.append((INDEX_HEADER, str(value["index"]).encode()))
    if cut:
        headers.append((TRUNCATED_HEADER, b"1"))
    return headers


def count_truncated(dead_letters: Iterable[tuple[Any, Any, Sequence[tuple[str, bytes]]]]) -> int:
    """How many of ``dead_letters`` ((key, value, headers) as the writers send them) were cut."""
    return sum(1 for _, _, headers in dead_letters if any(h[0] == TRUNCATED_HEADER for h in headers))


def cut_dlq(value: dict[str, Any], max_bytes: int = MAX_DLQ_BYTES) -> tuple[bytes, bool]:
    """``value`` as JSON of at most ``max_bytes`` (``CT_TOPIC_DLQ_MAX_BYTES``, at least 64 KiB),
    and whether its payload had to be cut: pass that to :func:`dlq_headers` and count it."""
    data = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    if len(data) <= max_bytes:
        return data, False
    cut = dict(value)
    if "originalBase64" in cut:
        payload = base64.b64decode(cut.pop("originalBase64"))
    else:
        payload = orjson.dumps(cut.pop("event", None), option=orjson.OPT_NON_STR_KEYS)
    cut["payloadTruncated"] = True
    cut["payloadBytes"] = len(payload)
    cut["payloadSha256"] = hashlib.sha256(payload).hexdigest()
    cut["payloadHeadBase64"] = base64.b64encode(payload[:_HEAD_BYTES]).decode("ascii")
    cut["error"] = str(cut.get("error", ""))[:_HEAD_BYTES]
    cut["errors"] = [
        {k: str(v)[:256] for k, v in e.items()} for e in list(cut.get("errors") or [])[:_MAX_ERRORS]
    ]
    source = cut.get("source")
    if isinstance(source, dict) and isinstance(source.get("key"), str):
        # A record key can be as large as the record: the Kafka record keeps it whole.
        cut["source"] = {**source, "key": source["key"][:_HEAD_BYTES]}
    data = orjson.dumps(cut, option=orjson.OPT_NON_STR_KEYS)
    if len(data) > max_bytes:  # only with hostile error texts (escaped 6x) near the 64 KiB floor
        cut["errors"] = cut["errors"][:1]
        cut["error"] = cut["error"][:256]
        data = orjson.dumps(cut, option=orjson.OPT_NON_STR_KEYS)
    return data, True
