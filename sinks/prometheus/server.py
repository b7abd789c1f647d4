"""Serve ``/metrics`` of a registry, and ``/healthz`` / ``/readyz``, from a small, bounded set of threads.

The page is the Prometheus text format (0.0.4), rendered by :func:`render_text`: the collector's
:class:`~sinks.prometheus.collector.CompactFamily` families render themselves (a few times faster
than ``generate_latest``, which matters with hundreds of hubs x histogram buckets), any other
family registered in the same registry goes through ``prometheus_client.generate_latest``.
No OpenMetrics negotiation and no gzip: Prometheus reads the text format fine.

Connections cost no thread while they wait (``prometheus_client``'s own server, like the stdlib
``ThreadingMixIn``, starts a thread per connection with no timeout: 300 idle connections held 300
threads). One selector thread accepts connections and reads request heads without blocking; a
connection is handed to a fixed pool of ``threads`` worker threads only once its request head is
complete. Limits (read from the settings, see :func:`start_exporter`):

- ``request_timeout_s`` (default 5 s): a connection whose request head is not complete that long
  after it was accepted is closed (idle and trickling clients alike); a worker gives up sending a
  page to a client that does not read it after the same time;
- ``max_connections`` (default 256): connections waiting for their request head; beyond it the
  oldest one is closed to make room for the new one;
- ``threads`` (default 4): requests are answered by this many threads; complete requests beyond
  ``16 x threads`` waiting for one get ``503``.

One request per connection (HTTP/1.0 replies, the connection closes after the page), as before.

What the limits did is on the page the server serves (after the registry's own families, so
every registry served this way has them; counted since the server started):
``contest_exporter_requests_rejected_total`` (503 answers: every thread busy and the queue full)
and ``contest_exporter_connections_closed_total{reason}`` (``request_timeout``: no complete
request head, or a page not read, within ``request_timeout_s``; ``max_connections``: the oldest
waiting connection closed for a new one; ``head_too_large``: 431 answers).

``/healthz`` and ``/readyz`` answer the :class:`~contest_telemetry.health.HealthSource` passed to
:func:`start_exporter` (200 or 503, a one-line JSON body with the reason, see
``sinks/prometheus/health.py``); without one both say ok while the server answers.

``start_exporter(registry, settings)`` binds ``settings.host:settings.port`` (port 0 picks a free
port) and returns an :class:`ExporterServer`; ``.stop()`` shuts the server down, closes the socket
and joins the threads. The registry is the one passed in (never prometheus_client's global one,
unless the caller passes it).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import queue
import selectors
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from contest_telemetry.health import AlwaysHealthy, HealthSource
from sinks.prometheus.collector import CompactFamily
from sinks.prometheus.exceptions import ExporterStartError
from sinks.prometheus.settings import ExporterServerSettings, ExporterSettings

__all__ = [
    "CLOSE_REASONS",
    "ExporterServer",
    "render_text",
    "start_exporter",
]

log = logging.getLogger(__name__)

# What render_text writes: the classic text format with legacy (underscore) names.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"

CLOSE_REASONS = ("request_timeout", "max_connections", "head_too_large")
_QUEUED_PER_THREAD = 16  # complete requests waiting for a worker, per worker thread
_MAX_HEAD_BYTES = 64 * 1024  # a request line and headers beyond this get 431
_ACCEPTS_PER_WAKEUP = 64
_HEAD_ENDS = (b"\r\n\r\n", b"\n\n")


class _Connection:
    """An accepted connection: its socket, the request bytes read so far, its deadline."""

    __slots__ = ("address", "deadline", "head", "sock")

    def __init__(self, sock: socket.socket, address: Any, deadline: float) -> None:
        self.sock = sock
        self.address = address
        self.deadline = deadline
        self.head = b""


class _ServerCounts:
    """What the server's limits did (written by the selector and worker threads, read by scrapes)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rejected = 0
        self.closed: dict[str, int] = dict.fromkeys(CLOSE_REASONS, 0)

    def reject(self) -> int:
        with self._lock:
            self.rejected += 1
            return self.rejected

    def close(self, reason: str) -> None:
        with self._lock:
            self.closed[reason] += 1

    def families(self) -> list[Metric]:
        with self._lock:
            rejected, closed = self.rejected, dict(self.closed)
        requests = CompactFamily(
            "contest_exporter_requests_rejected_total",
            "Requests answered 503 because every exporter thread was busy and the queue was full.",
            "counter",
        )
        requests.add((), rejected)
        connections = CompactFamily(
            "contest_exporter_connections_closed_total",
            "Connections the exporter closed at a limit: request_timeout (CT_*EXPORTER_REQUEST_TIMEOUT_S), "
            "max_connections (CT_*EXPORTER_MAX_CONNECTIONS), head_too_large (431).",
            "counter",
            labels=("reason",),
        )
        for reason, n in closed.items():
            connections.add((reason,), n)
        return [requests, connections]


class _Served:
    """The page of a scrape: the registry's families, then the server's own (:class:`_ServerCounts`)."""

    def __init__(self, registry: Collector, counts: _ServerCounts) -> None:
        self._registry = registry
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        yield from self._registry.collect()
        yield from self._counts.families()


class _SocketWriter(io.BufferedIOBase):
    """``wfile`` of a request: buffers the response, sends it with ``sendall`` on flush (so the
    socket timeout bounds the whole send, and headers and page leave in one call)."""

    def __init__(self, sock: socket.socket, counts: _ServerCounts) -> None:
        self._sock = sock
        self._counts = counts
        self._chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._chunks.append(chunk)
        return len(chunk)

    def flush(self) -> None:
        if self._chunks:
            data = b"".join(self._chunks)
            self._chunks.clear()
            try:
                self._sock.sendall(data)
            except TimeoutError:
                # The handler drops the connection (http.server catches it); counted here.
                self._counts.close("request_timeout")
                raise


class _Handler(BaseHTTPRequestHandler):
    """One request whose head the selector thread has already read (``request`` is a
    :class:`_Connection`)."""

    server: _PooledServer

    def setup(self) -> None:
        conn: _Connection = self.request
        self.connection = conn.sock
        conn.sock.setblocking(True)
        conn.sock.settimeout(self.server.request_timeout_s)
        self.rfile = io.BytesIO(conn.head)
        self.wfile = _SocketWriter(conn.sock, self.server.counts)

    def log_message(self, format: str, *args: Any) -> None:  # no access log on stderr
        pass

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def _serve(self, *, send_body: bool) -> None:
        path = unquote(urlsplit(self.path).path, "iso-8859-1")
        if path in ("/metrics", "/"):
            accept = self.headers.get("Accept", "")
            try:
                if "application/openmetrics-text" in accept:
                    # What prometheus_client's own server negotiates (Prometheus asks for it first).
                    from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST, generate_latest

                    page, content_type = generate_latest(self.server.page), CONTENT_TYPE_LATEST
                else:
                    page, content_type = render_text(self.server.page), CONTENT_TYPE
            except Exception:
                log.exception("scrape failed")
                self._reply(500, _TEXT, b"scrape failed, see the worker log\n", send_body)
                return
            self._reply(200, content_type, page, send_body, gzip_ok=_accepts_gzip(self.headers))
        elif path in ("/healthz", "/readyz"):
            live = path == "/healthz"
            health = self.server.health
            try:
                verdict = health.liveness() if live else health.readiness()
            except Exception:
                log.exception("%s failed", path)
                self._reply(500, _TEXT, b"health check failed, see the log\n", send_body)
                return
            self._reply(
                200 if verdict.ok else 503, _JSON, verdict.body("live" if live else "ready"), send_body
            )
        else:
            self._reply(404, _TEXT, b"not found: try /metrics, /healthz or /readyz\n", send_body)

    def _reply(
        self, status: int, content_type: str, payload: bytes, send_body: bool, *, gzip_ok: bool = False
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if gzip_ok:
            payload = gzip.compress(payload, compresslevel=1)
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if send_body:
            self.wfile.write(payload)


def _accepts_gzip(headers: Any) -> bool:
    return any(
        part.split(";")[0].strip().lower() == "gzip" for part in headers.get("Accept-Encoding", "").split(",")
    )


def _reject(sock: socket.socket, status: str) -> None:
    """Best effort (the socket is non-blocking): a one-line error reply, then close."""
    with contextlib.suppress(OSError):
        sock.send(f"HTTP/1.0 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
    sock.close()


class _PooledServer(socketserver.TCPServer):
    """A TCP server whose connections wait in a selector (no thread) until their request head is
    complete, then go to a fixed pool of worker threads. See the module docstring."""

    allow_reuse_address = True
    request_queue_size = 128  # listen() backlog

    def __init__(
        self,
        address: tuple[str, int],
        registry: Collector,
        *,
        family: socket.AddressFamily,
        threads: int,
        request_timeout_s: float,
        max_connections: int,
        health: HealthSource,
    ) -> None:
        self.address_family = family
        self.registry = registry
        self.health = health
        self.threads = threads
        self.request_timeout_s = request_timeout_s
        self.max_connections = max_connections
        self.counts = _ServerCounts()
        self.page = _Served(registry, self.counts)
        self._jobs: queue.Queue[_Connection | None] = queue.Queue(maxsize=_QUEUED_PER_THREAD * threads)
        self._stop = threading.Event()
        self._serving = threading.Event()
        self._done = threading.Event()
        self._next_full_warning = 0.0
        super().__init__(address, _Handler)

    # ------------------------------------------------------------------ selector thread
    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._serving.set()
        port = self.server_address[1]
        workers = [
            threading.Thread(target=self._work, name=f"contest-exporter-{port}-w{i}", daemon=True)
            for i in range(self.threads)
        ]
        for worker in workers:
            worker.start()
        pending: dict[socket.socket, _Connection] = {}  # in accept order, so in deadline order
        selector = selectors.DefaultSelector()
        try:
            self.socket.setblocking(False)
            selector.register(self.socket, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in selector.select(poll_interval):
                    if key.data is None:
                        self._accept(selector, pending)
                    else:
                        self._receive(selector, pending, key.data)
                self._expire(selector, pending)
        finally:
            for conn in pending.values():
                conn.sock.close()
            selector.close()
            self._stop_workers(workers)
            self._done.set()

    def _accept(self, selector: selectors.BaseSelector, pending: dict[socket.socket, _Connection]) -> None:
        for _ in range(_ACCEPTS_PER_WAKEUP):
            try:
                sock, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. out of file descriptors: back off instead of spinning
                log.warning("exporter: accept failed: %s", exc)
                time.sleep(0.1)
                return
            sock.setblocking(False)
            while len(pending) >= self.max_connections:
                self._drop(selector, pending, next(iter(pending.values())))
                self.counts.close("max_connections")
            conn = _Connection(sock, address, time.monotonic() + self.request_timeout_s)
            pending[sock] = conn
            selector.register(sock, selectors.EVENT_READ, conn)

    def _receive(
        self, selector: selectors.BaseSelector, pending: dict[socket.socket, _Connection], conn: _Connection
    ) -> None:
        try:
            data = conn.sock.recv(_MAX_HEAD_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(selector, pending, conn)
            return
        start = max(0, len(conn.head) - 3)
        conn.head += data
        if any(conn.head.find(end, start) >= 0 for end in _HEAD_ENDS):
            selector.unregister(conn.sock)
            del pending[conn.sock]
            try:
                self._jobs.put_nowait(conn)
            except queue.Full:
                rejected = self.counts.reject()
                now = time.monotonic()
                if now >= self._next_full_warning:  # at most one line a minute
                    self._next_full_warning = now + 60.0
                    log.warning(
                        "exporter: every thread busy and %d requests waiting; answered 503 (%d so far)",
                        self._jobs.qsize(),
                        rejected,
                    )
                _reject(conn.sock, "503 Service Unavailable")
        elif len(conn.head) > _MAX_HEAD_BYTES:
            selector.unregister(conn.sock)
            del pending[conn.sock]
            self.counts.close("head_too_large")
            _reject(conn.sock, "431 Request Header Fields Too Large")

    def _expire(self, selector: selectors.BaseSelector, pending: dict[socket.socket, _Connection]) -> None:
        now = time.monotonic()
        while pending:
            oldest = next(iter(pending.values()))
            if oldest.deadline > now:
                return
            self._drop(selector, pending, oldest)
            self.counts.close("request_timeout")

    @staticmethod
    def _drop(
        selector: selectors.BaseSelector, pending: dict[socket.socket, _Connection], conn: _Connection
    ) -> None:
        selector.unregister(conn.sock)
        del pending[conn.sock]
        conn.sock.close()

    # ------------------------------------------------------------------ worker threads
    def _work(self) -> None:
        while True:
            conn = self._jobs.get()
            if conn is None:
                return
            try:
                _Handler(conn, conn.address, self)  # type: ignore[arg-type]  # see _Handler.setup
            except Exception as exc:  # a client gone or too slow: nothing to answer
                log.debug("exporter: request from %s failed: %r", conn.address, exc)
            finally:
                self.shutdown_request(conn.sock)

    def _stop_workers(self, workers: list[threading.Thread]) -> None:
        while True:  # requests not started yet are dropped
            try:
                conn = self._jobs.get_nowait()
            except queue.Empty:
                break
            if conn is not None:
                conn.sock.close()
        for _ in workers:
            self._jobs.put(None)
        deadline = time.monotonic() + self.request_timeout_s + 1.0
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))

    # ------------------------------------------------------------------ lifecycle
    def shutdown(self) -> None:
        """Stop the selector loop and the workers; returns once they are done."""
        self._stop.set()
        if self._serving.is_set():
            self._done.wait()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("exporter: request from %s failed", client_address, exc_info=True)


def _address_family(host: str) -> socket.AddressFamily:
    """The address family that fits ``host`` (IPv4 or IPv6)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ExporterStartError(f"exporter: cannot resolve host {host!r}: {exc}") from exc
    return infos[0][0] if infos else socket.AF_INET


class _One:
    def __init__(self, metric: Metric) -> None:
        self.metric = metric

    def collect(self) -> list[Metric]:
        return [self.metric]


def _escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def render_text(registry: Collector | _Served) -> bytes:
    """``registry`` in the text exposition format (what ``/metrics`` serves)."""
    cache: dict[str, str] = {}

    def escape(value: str) -> str:
        escaped = cache.get(value)
        if escaped is None:
            escaped = cache[value] = _escape_label_value(value)
        return escaped

    parts: list[str] = []
    for metric in registry.collect():
        if isinstance(metric, CompactFamily):
            parts.extend(metric.text(escape))
        else:
            parts.append(generate_latest(_One(metric)).decode("utf-8"))  # type: ignore[arg-type]
    return "".join(parts).encode("utf-8")


class ExporterServer:
    """A running exporter: ``.host``, ``.port`` (the bound one), ``.url`` (of /metrics), ``.stop()``."""

    def __init__(self, httpd: _PooledServer, thread: threading.Thread, host: str) -> None:
        self._httpd = httpd
        self._thread = thread
        self.host = host
        self.port = int(httpd.server_address[1])
        self._stopped = False

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/metrics"

    @property
    def running(self) -> bool:
        return not self._stopped and self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, close the listening socket and join the threads (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout)

    def __enter__(self) -> ExporterServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_exporter(
    registry: Collector,
    settings: ExporterServerSettings | None = None,
    health: HealthSource | None = None,
) -> ExporterServer:
    """Serve ``registry`` on ``settings.host:settings.port`` from a selector thread and a pool of
    ``settings.threads`` worker threads (all daemon threads); ``/healthz`` and ``/readyz`` answer
    ``health`` (always ok when None).

    Raises :class:`ExporterStartError` when the address cannot be bound. ``settings.enabled`` is
    the caller's decision (the worker skips this call when it is false).
    """
    settings = settings if settings is not None else ExporterSettings()
    try:
        httpd = _PooledServer(
            (settings.host, settings.port),
            registry,
            family=_address_family(settings.host),
            threads=settings.threads,
            request_timeout_s=settings.request_timeout_s,
            max_connections=settings.max_connections,
            health=health if health is not None else AlwaysHealthy(),
        )
    except OSError as exc:
        raise ExporterStartError(
            f"exporter: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"
        ) from exc
    thread = threading.Thread(
        target=httpd.serve_forever,
        kwargs={"poll_interval": 0.05},
        name=f"contest-exporter-{httpd.server_address[1]}",
        daemon=True,
    )
    thread.start()
    return ExporterServer(httpd, thread, settings.host)
