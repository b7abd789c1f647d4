"""``python -m sinks.monitor``: the monitor without the contest-telemetry CLI around it."""

from __future__ import annotations

from sinks.monitor.cli import main

raise SystemExit(main())
