"""``python -m contest_telemetry`` is ``contest-telemetry``."""

from __future__ import annotations

import sys

from contest_telemetry.cli.main import main

sys.exit(main())
