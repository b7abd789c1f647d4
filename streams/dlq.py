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

A dead letter never exceeds :data:`MAX_DLQ_BYTES` (the DLQ topic is created to take it): beyond
it the payload (``event`` or ``originalBase64``) is replaced by ``payloadTruncated: true``,
``payloadBytes`` (its size), ``payloadSha256`` and its first bytes (``payloadHeadBase64``), so
an 800 KB record that is not JSON (1.07 MB once base64-encoded) is still dead-lettered and can be
matched with the archive. Headers carry ``ct-reason``, ``ct-source`` (``topic/partition/offset``)
and ``ct-index``. A record keeps the source key, so a hub's dead letters stay together.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson

from contest_telemetry.schema import InvalidEvent

__all__ = [
    "INDEX_HEADER",
    "MAX_DLQ_BYTES",
    "REASON_HEADER",
    "SOURCE_HEADER",
    "dlq_headers",
    "dlq_value",
    "encode_dlq",
]

MAX_DLQ_BYTES = 1024 * 1024
"""Largest dead letter (contest_telemetry/topics.py creates the DLQ with room for it)."""
_HEAD_BYTES = 4096
REASON_HEADER = "ct-reason"
SOURCE_HEADER = "ct-source"  # topic/partition/offset of the record that failed
INDEX_HEADER = "ct-index"


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
        "failedAt": (now or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
    if invalid.raw is not None:
        out["event"] = invalid.raw
    elif original is not None:
        out["originalBase64"] = base64.b64encode(original).decode("ascii")
    return out


def dlq_headers(value: dict[str, Any]) -> list[tuple[str, bytes]]:
    src = value["source"]
    headers = [
        (REASON_HEADER, value["reason"].encode()),
        (SOURCE_HEADER, f"{src['topic']}/{src['partition']}/{src['offset']}".encode()),
    ]
    if value.get("index") is not None:
        headers.append((INDEX_HEADER, str(value["index"]).encode()))
    return headers


def encode_dlq(value: dict[str, Any], max_bytes: int = MAX_DLQ_BYTES) -> bytes:
    data = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    if len(data) <= max_bytes:
        return data
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
    cut["errors"] = list(cut.get("errors") or [])[:50]
    return orjson.dumps(cut, option=orjson.OPT_NON_STR_KEYS)
