"""``python -m contest_telemetry.healthcheck [URL]``: exit 0 when the process's ``/healthz`` answers
200, 1 otherwise (the Dockerfile's HEALTHCHECK and docker compose's ``healthcheck``; the image has
no curl).

Without a URL it asks this container's own exporter on 127.0.0.1: the archiver's
(``CT_ARCHIVER_EXPORTER_PORT``, 9465) when the container runs ``archive run``, else the worker's
(``CT_EXPORTER_PORT``, 9464). Prints the answer's JSON body (or the error) on one line.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["default_url", "main"]

TIMEOUT_S = 4.0


def default_url(cmdline: list[str] | None = None) -> str:
    if cmdline is None:
        try:
            cmdline = Path("/proc/1/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:  # not Linux, or no /proc: the worker's
            cmdline = []
    archiver = "archive" in cmdline and "run" in cmdline
    if archiver:
        port = os.environ.get("CT_ARCHIVER_EXPORTER_PORT") or "9465"
    else:
        port = os.environ.get("CT_EXPORTER_PORT") or "9464"
    return f"http://127.0.0.1:{port}/healthz"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    url = args[0] if args else default_url()
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
            print(resp.read().decode(errors="replace").strip())
            return 0
    except urllib.error.HTTPError as exc:
        print(exc.read().decode(errors="replace").strip() or f"{url}: HTTP {exc.code}")
        return 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"{url}: {getattr(exc, 'reason', exc)}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
