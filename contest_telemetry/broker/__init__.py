"""contest_telemetry/broker."""
