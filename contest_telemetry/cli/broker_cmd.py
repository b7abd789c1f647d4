"""``contest-telemetry broker start|stop|status``: a local broker for tests, CI and the demo."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from contest_telemetry.broker import ENGINES, make_broker
from contest_telemetry.broker.apache import kafka_version
from contest_telemetry.cli.errors import EXIT_NOT_RUNNING, EXIT_OK
from contest_telemetry.exceptions import ConfigError

__all__ = ["add_parser", "run", "state_path"]


def state_path() -> Path:
    override = os.environ.get("CT_BROKER_STATE")
    if override:
        return Path(override)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "contest-telemetry" / "broker.json"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("broker", help="start, stop or inspect a local broker")
    sub = parser.add_subparsers(dest="broker_cmd", required=True)
    start = sub.add_parser("start", help="start a single-node broker on 127.0.0.1")
    start.add_argument(
        "--engine",
        choices=ENGINES,
        default="embedded",
        help="kafka: Apache Kafka (KRaft) from Maven jars; embedded: Tansu (default)",
    )
    start.add_argument("--port", type=int, default=0, help="listener port (default: a free port)")
    start.add_argument("--data-dir", type=Path, default=None, help="broker data dir (default: a temp dir)")
    start.add_argument("--foreground", action="store_true", help="stay attached; Ctrl-C stops the broker")
    start.add_argument("--json", action="store_true", help="print the broker's state as JSON")
    sub.add_parser("stop", help="stop the broker started with 'broker start'")
    status = sub.add_parser("status", help="is the started broker running, and where")
    status.add_argument("--json", action="store_true")


def _read_state() -> dict[str, Any] | None:
    try:
        return json.loads(state_path().read_text())  # type: ignore[no-any-return]
    except FileNotFoundError:
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _start(args: argparse.Namespace) -> int:
    state = _read_state()
    if state and _alive(state["pid"]) and not args.foreground:
        raise ConfigError(
            f"a broker is already running at {state['bootstrap']} (pid {state['pid']}); "
            "'contest-telemetry broker stop' first"
        )
    if args.port and not 0 < args.port < 65536:
        raise ConfigError(f"--port must be between 1 and 65535, got {args.port}")
    broker = make_broker(args.engine, port=args.port, data_dir=args.data_dir)
    print(
        f"starting {args.engine} broker"
        + (f" (Apache Kafka {kafka_version()})" if args.engine == "kafka" else "")
        + " ...",
        file=sys.stderr,
    )
    broker.start(detach=not args.foreground)  # a detached broker outlives this command
    info = {
        "engine": broker.engine,
        "bootstrap": broker.bootstrap,
        "pid": broker.proc.pid if broker.proc else None,
        "data_dir": str(broker.data_dir),
        "owns_data_dir": args.data_dir is None,
        "log": str(broker.log_path),
        "startup_seconds": round(broker.startup_seconds, 3),
    }
    print(
        json.dumps(info)
        if args.json
        else f"{broker.engine} broker ready at {broker.bootstrap} in {broker.startup_seconds:.2f}s "
        f"(export KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap})"
    )
    if not args.foreground:
        path = state_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(info))
        return 0
    stop = False

    def _on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        while not stop and broker.alive():
            time.sleep(0.2)
    finally:
        broker.stop()
    return 0 if stop else 1


def _stop() -> int:
    state = _read_state()
    if not state:
        print("no broker was started with 'contest-telemetry broker start'", file=sys.stderr)
        return 0
    pid = int(state["pid"])
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
    if state.get("owns_data_dir"):
        shutil.rmtree(state["data_dir"], ignore_errors=True)
    state_path().unlink(missing_ok=True)
    print(f"stopped {state['engine']} broker at {state['bootstrap']}", file=sys.stderr)
    return 0


def _status(args: argparse.Namespace) -> int:
    state = _read_state()
    running = bool(state and _alive(int(state["pid"])))
    if args.json:
        print(json.dumps({"running": running, **(state or {})}))
    elif running and state:
        print(f"{state['engine']} broker running at {state['bootstrap']} (pid {state['pid']})")
    else:
        print("no broker running")
    return EXIT_OK if running else EXIT_NOT_RUNNING


def run(args: argparse.Namespace) -> int:
    if args.broker_cmd == "start":
        return _start(args)
    if args.broker_cmd == "stop":
        return _stop()
    return _status(args)
