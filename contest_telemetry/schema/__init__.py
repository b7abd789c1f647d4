"""contest_telemetry/schema."""
