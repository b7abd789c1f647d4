"""contest_telemetry/cli."""
