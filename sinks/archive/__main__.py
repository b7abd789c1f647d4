"""``python -m sinks.archive run|verify ...``: the archiver without the contest-telemetry CLI."""

from __future__ import annotations

from sinks.archive.cli import main

raise SystemExit(main())
