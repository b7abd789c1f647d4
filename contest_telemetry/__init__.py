"""contest_telemetry."""
