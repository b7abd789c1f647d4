"""The stream processor: lifecycle join, event-time windows with DDSketch digests, DLQ."""
