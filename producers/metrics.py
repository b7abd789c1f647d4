"""The publisher's own counters, registered on a registry the caller passes in."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["PublisherMetrics"]


class PublisherMetrics:
    """Plain ints on the hot path; Prometheus objects are synced off it (``sync``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.enqueued = 0
        self.sent = 0
        self.dropped = 0
        self.failed = 0
        self.records = 0
        self.rejected = 0
        self._synced = {"enqueued": 0, "sent": 0, "dropped": 0, "failed": 0, "records": 0, "rejected": 0}
        self._registry = registry
        if registry is not None:
            self._counters = {
                "enqueued": Counter(
                    "contest_publisher_events_enqueued", "Events accepted into the buffer", registry=registry
                ),
                "sent": Counter(
                    "contest_publisher_events_sent", "Events acknowledged by the broker", registry=registry
                ),
                "dropped": Counter(
                    "contest_publisher_events_dropped",
                    "Events dropped because the buffer was full",
                    registry=registry,
                ),
                "failed": Counter(
                    "contest_publisher_events_failed",
                    "Events whose send failed after retries",
                    registry=registry,
                ),
                "records": Counter(
                    "contest_publisher_records_sent",
                    "Kafka records (envelopes or single events) acknowledged",
                    registry=registry,
                ),
                "rejected": Counter(
                    "contest_publisher_events_rejected",
                    "Events refused when recorded (invalid, not encodable, too large, or out of the "
                    "event-time bounds); the caller got InvalidEventError",
                    registry=registry,
                ),
            }
            self.buffered = Gauge(
                "contest_publisher_buffer_events", "Events waiting in the buffer", registry=registry
            )
            self.inflight = Gauge(
                "contest_publisher_inflight_events",
                "Events sent and not yet acknowledged (they count against CT_PUBLISHER_BUFFER_SIZE too)",
                registry=registry,
            )

    def sync(self, buffered: int, inflight: int = 0) -> None:
        if self._registry is None:
            return
        for name, counter in self._counters.items():
            value = getattr(self, name)
            delta = value - self._synced[name]
            if delta:
                counter.inc(delta)
                self._synced[name] = value
        self.buffered.set(buffered)
        self.inflight.set(inflight)

    def as_dict(self) -> dict[str, int]:
        return {
            "enqueued": self.enqueued,
            "sent": self.sent,
            "dropped": self.dropped,
            "failed": self.failed,
            "records": self.records,
            "rejected": self.rejected,
        }
