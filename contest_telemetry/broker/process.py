"""A broker running as a child process, started and always stoppable."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from contest_telemetry.broker.exceptions import BrokerStartError
from contest_telemetry.broker.readiness import wait_ready

__all__ = ["BrokerProcess", "free_port", "stop_process_group"]


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks Linux for SIGTERM when the starting process dies (None elsewhere).

    ``prctl`` is looked up here, before the fork: the child only calls it. The signal follows the
    starting *thread*, so brokers are started from the main thread (tests, demo, benchmarks)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def set_death_signal() -> None:
        prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the call: it will not be signalled
            os.kill(os.getpid(), signal.SIGTERM)

    return set_death_signal


def stop_process_group(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> int | None:
    """SIGTERM the process group of ``proc`` (started with ``start_new_session=True``), wait up to
    ``timeout`` seconds, then SIGKILL it; returns the exit code."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        except ProcessLookupError:
            pass
    return proc.returncode


@dataclass
class BrokerProcess:
    """Base of the engines: subclasses fill in :meth:`command` and may :meth:`prepare` the data dir."""

    engine: str = "base"
    port: int = 0
    data_dir: Path | None = None
    keep_data: bool = False
    start_timeout: float = 90.0
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    startup_seconds: float = field(default=0.0, init=False)
    _owns_data_dir: bool = field(default=False, init=False, repr=False)
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        assert self.data_dir is not None
        return self.data_dir / "broker.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def prepare(self) -> None:
        """Anything to do before the process starts (formatting storage, ...)."""

    def start(self, *, detach: bool = False) -> BrokerProcess:
        """Start the broker and block until it serves a produce round trip."""
        if not self.port:
            self.port = free_port()
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix=f"ct-{self.engine}-"))
            self._owns_data_dir = True
        self.data_dir.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        self.prepare()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            self.command(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.environment(),
            cwd=self.data_dir,
            # detached brokers outlive the CLI that started them; others die with their group
            start_new_session=True,
            # ... and with the process that started them, even when it is SIGKILLed (a test run
            # killed by a timeout must not leave a broker behind holding 512 MB and a port)
            preexec_fn=None if detach else die_with_parent(),
        )
        try:
            wait_ready(
                self.bootstrap,
                timeout=self.start_timeout,
                alive=lambda: self.proc is not None and self.proc.poll() is None,
            )
        except TimeoutError as exc:
            tail = self.log_tail()
            self.stop()
            raise BrokerStartError(f"{self.engine} broker did not start: {exc}", tail) from None
        self.startup_seconds = time.monotonic() - began
        return self

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the broker (for crash tests)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        """Terminate (then kill) the broker and remove a data dir it created."""
        if self.proc is not None:
            stop_process_group(self.proc, timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._owns_data_dir and not self.keep_data and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> BrokerProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
