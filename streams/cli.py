"""``contest-telemetry worker`` (also ``python -m streams worker``): run the stream processor.

Settings come from the environment (``KAFKA_*``, ``CT_TOPIC_*``, ``CT_WORKER_*``); the flags
override the most used ones.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from contest_telemetry.cli.errors import command_name, run_reported
from contest_telemetry.cli.parser import Parser
from contest_telemetry.logs import check_log_settings, configure_logging
from contest_telemetry.settings import KafkaSettings, TopicSettings, settings_error_line
from contest_telemetry.topics import ensure_topics, pipeline_topics
from streams.counters import CounterSink
from streams.exceptions import ApplyError, StreamsConfigError

__all__ = ["IngestChild", "add_parser", "main", "run", "run_worker"]

log = logging.getLogger(__name__)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "worker", help="run the stream processor (faust) over contest.events"
    )
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (default: KAFKA_BOOTSTRAP_SERVERS)")
    p.add_argument("--app-id", help="consumer group / app id (CT_WORKER_APP_ID)")
    p.add_argument("--data-dir", help="faust data directory (CT_WORKER_DATA_DIR)")
    p.add_argument("--partitions", type=int, help="partitions of contest.events (CT_TOPIC_PARTITIONS)")
    p.add_argument("--window-s", type=float, help="window size in seconds (CT_WORKER_WINDOW_S)")
    p.add_argument("--grace-s", type=float, help="allowed lateness in seconds (CT_WORKER_GRACE_S)")
    p.add_argument("-l", "--loglevel", help="faust log level: debug, info, warn, error")
    p.set_defaults(func=run)
    return p


def settings_from_args(args: argparse.Namespace) -> tuple[Any, KafkaSettings, TopicSettings]:
    from streams.settings import WorkerSettings

    overrides = {
        k: v
        for k, v in {
            "app_id": args.app_id,
            "data_dir": args.data_dir,
            "window_s": args.window_s,
            "grace_s": args.grace_s,
            "loglevel": args.loglevel,
        }.items()
        if v is not None
    }
    try:
        worker = WorkerSettings(**overrides)
        kafka = KafkaSettings(**({"bootstrap_servers": args.bootstrap} if args.bootstrap else {}))
        topics = TopicSettings(**({"partitions": args.partitions} if args.partitions else {}))
    except ValidationError as exc:
        # settings_error_line: one line, and never the input of a cross-field check (secrets)
        raise StreamsConfigError(settings_error_line(exc)) from None
    return worker, kafka, topics


class IngestChild:
    """The ingest stage as a child of the worker (``CT_WORKER_INGEST=child``): one command serves
    a small deployment. The child gets the worker's environment (so the same KAFKA_* and
    CT_TOPIC_* settings), dies with the worker (PR_SET_PDEATHSIG, also on SIGKILL) and is started
    again after a second when it exits while the worker runs; a larger deployment runs
    ``contest-telemetry ingest`` on its own and the workers with ``CT_WORKER_INGEST=none``."""

    def __init__(self, kafka: KafkaSettings, topics: TopicSettings, data_dir: Path, app_id: str) -> None:
        # The worker's flags override its environment: hand them on. The instance id (the
        # transactional id's suffix) is stable per worker data dir, so a restarted child fences
        # its killed predecessor's open transaction at once instead of after its timeout.
        instance = hashlib.sha1(str(data_dir.resolve()).encode()).hexdigest()[:12]
        self.env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "CT_TOPIC_PARTITIONS": str(topics.partitions),
            "CT_INGEST_INSTANCE_ID": os.environ.get("CT_INGEST_INSTANCE_ID") or f"worker-{instance}",
            # The ingest stages of one worker app form one group (never one shared by every app).
            "CT_INGEST_GROUP_ID": os.environ.get("CT_INGEST_GROUP_ID") or f"{app_id}-ingest",
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="ingest-child", daemon=True)

    def start(self) -> IngestChild:
        self._spawn()
        self._thread.start()
        return self

    def _spawn(self) -> None:
        from contest_telemetry.broker.process import die_with_parent

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams", "ingest"],
            env=self.env,
            preexec_fn=die_with_parent(),  # prctl only, resolved before the fork
        )

    def _supervise(self) -> None:
        while not self._stop.is_set():
            proc = self.proc
            if proc is not None and proc.poll() is not None and not self._stop.is_set():
                self.restarts += 1
                log.error("ingest stage exited with %s; starting it again", proc.returncode)
                time.sleep(1.0)
                if not self._stop.is_set():
                    self._spawn()
            self._stop.wait(0.5)

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def run_worker(
    settings: Any,
    kafka: KafkaSettings,
    topics: TopicSettings,
    counters: CounterSink | None = None,
    on_app: Callable[[Any], None] | None = None,
    health: Any = None,
) -> int:
    """Create the topics, build the app and run a faust worker until it is stopped (SIGTERM/INT).

    ``on_app(app)`` is called before the worker starts; ``app.source`` is the
    :class:`~streams.snapshot.SnapshotSource` for an exporter, ``app.health`` (``health``
    when given, a :class:`streams.health.WorkerHealth`) what its /healthz and /readyz answer.
    """
    import faust
    from mode.utils.logging import level_number

    from streams.app import create_app

    asyncio.run(ensure_topics(kafka, pipeline_topics(topics)))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(settings, kafka, topics, counters, health)
    if on_app is not None:
        on_app(app)
    # Logging is set up once for every command (contest_telemetry/logs.py, CT_LOG_FORMAT): faust
    # must not replace the root handlers with its own (override_logging=False); the root level
    # is the worker's loglevel, as faust set it.
    if not logging.getLogger().handlers:  # python -m streams worker
        configure_logging(logging.WARNING)
    logging.getLogger().setLevel(level_number(settings.loglevel))
    worker = faust.Worker(app, loglevel=settings.loglevel, quiet=True, override_logging=False)
    # faust's terminal spinner sets the root logger to DEBUG (faust/worker.py
    # ``_setup_spinner_handler``), so every ``log.debug`` in aiokafka (one per message sent)
    # built a LogRecord: ~20% of the worker's time. Without it the root level is ``loglevel``.
    worker.spinner = None
    child = None
    if settings.source == "ingested" and settings.ingest == "child":
        child = IngestChild(kafka, topics, settings.data_dir, settings.app_id).start()
    code = 0
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:  # always: mode's ``exiting`` turns any crash into exit 1
        code = int(exc.code or 0)
    finally:
        if child is not None:
            child.stop()
    # A fatal stop reaches here one of two ways, by timing: the worker's own stop (app.fatal), or
    # faust crashing on the commit's flush that refused (an output was not stored), which mode
    # turns into exit 1 without a word. Both say which output.
    fatal = getattr(app, "fatal", None)
    applier = getattr(app, "applier", None)
    if fatal is None and code and applier is not None:
        try:
            applier.check()
        except ApplyError as exc:
            fatal = exc
    if fatal is not None:
        print(f"worker: stopped: {fatal}", file=sys.stderr, flush=True)
        code = code or 1
    _exit_within(settings.exit_grace_s, code)
    return code


def _exit_within(grace_s: float, code: int) -> None:
    """Make sure the process ends ``grace_s`` from now with ``code``. faust can leave a
    non-daemon thread running once it stopped (its consumer's service thread, after a fatal stop
    that failed to stop the app), and the interpreter then waits for it at exit for good: a
    worker that printed its error but never exits is restarted by no supervisor. Everything
    durable is written by then (nothing is committed past a fatal stop)."""

    def force() -> None:
        alive = [t.name for t in threading.enumerate() if not t.daemon and t is not threading.main_thread()]
        log.warning(
            "worker: threads %s still running %.0f s after the stop; exiting with %d", alive, grace_s, code
        )
        logging.shutdown()
        sys.stderr.flush()
        os._exit(code)

    timer = threading.Timer(grace_s, force)
    timer.daemon = True  # never holds the exit itself
    timer.start()


def run(args: argparse.Namespace) -> int:
    """Run a worker that serves its Prometheus exporter (``CT_EXPORTER_*``) while it runs; the two
    are composed in :mod:`contest_telemetry.cli.worker`, so the stream never imports a sink."""
    from contest_telemetry.cli.worker import run_with_exporter

    return run_with_exporter(args)


def main(argv: list[str] | None = None) -> int:
    """``python -m streams worker|ingest``: the stream stages without the ``contest-telemetry``
    dispatcher around them, through its error path and exit codes."""
    parser = Parser(prog="python -m streams")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    add_parser(sub)
    from streams import ingest_cli

    ingest_cli.add_parser(sub)
    words = list(sys.argv[1:] if argv is None else argv)

    def call() -> int:
        args = parser.parse_args(words)
        check_log_settings()
        if not logging.getLogger().handlers:  # the stage logs its progress at INFO
            configure_logging(logging.INFO if args.command == "ingest" else logging.WARNING)
        return int(args.func(args))

    return run_reported(command_name(words, ("worker", "ingest"), "streams"), call)
