"""Serve ``/metrics`` (and ``/healthz``) of a registry from a background thread.

The page is the Prometheus text format (0.0.4), rendered by :func:`render_text`: the collector's
:class:`~sinks.prometheus.collector.CompactFamily` families render themselves (a few times faster
than ``generate_latest``, which matters with hundreds of hubs x histogram buckets), any other
family registered in the same registry goes through ``prometheus_client.generate_latest``.
No OpenMetrics negotiation and no gzip: Prometheus reads the text format fine.

``start_exporter(registry, settings)`` binds ``settings.host:settings.port`` (port 0 picks a free
port) and returns an :class:`ExporterServer`; ``.stop()`` shuts the server down, closes the socket
and joins the thread. The registry is the one passed in (never prometheus_client's global one,
unless the caller passes it).
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from types import TracebackType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from sinks.prometheus.collector import CompactFamily
from sinks.prometheus.exceptions import ExporterStartError
from sinks.prometheus.settings import ExporterSettings

__all__ = ["ExporterServer", "render_text", "start_exporter"]

log = logging.getLogger(__name__)

# What render_text writes: the classic text format with legacy (underscore) names.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # no access log on stderr
        pass


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


def _server_class(host: str) -> type[_ThreadingWSGIServer]:
    """A server class whose address family fits ``host`` (IPv4 or IPv6)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ExporterStartError(f"exporter: cannot resolve host {host!r}: {exc}") from exc
    family = infos[0][0] if infos else socket.AF_INET

    class Server(_ThreadingWSGIServer):
        address_family = family

    return Server


class _One:
    def __init__(self, metric: Metric) -> None:
        self.metric = metric

    def collect(self) -> list[Metric]:
        return [self.metric]


def _escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def render_text(registry: Collector) -> bytes:
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


def _app(registry: Collector) -> WSGIApp:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path in ("/metrics", "/"):
            try:
                body = render_text(registry)
            except Exception:
                log.exception("scrape failed")
                start_response("500 Internal Server Error", [("Content-Type", "text/plain; charset=utf-8")])
                return [b"scrape failed, see the worker log\n"]
            start_response("200 OK", [("Content-Type", CONTENT_TYPE), ("Content-Length", str(len(body)))])
            return [body] if environ.get("REQUEST_METHOD") != "HEAD" else []
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"ok\n"]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: try /metrics or /healthz\n"]

    return app


class ExporterServer:
    """A running exporter: ``.host``, ``.port`` (the bound one), ``.url`` (of /metrics), ``.stop()``."""

    def __init__(self, httpd: _ThreadingWSGIServer, thread: threading.Thread, host: str) -> None:
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
        """Stop serving, close the listening socket and join the thread (idempotent)."""
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


def start_exporter(registry: Collector, settings: ExporterSettings | None = None) -> ExporterServer:
    """Serve ``registry`` on ``settings.host:settings.port`` from a daemon thread.

    Raises :class:`ExporterStartError` when the address cannot be bound. ``settings.enabled`` is
    the caller's decision (the worker skips this call when it is false).
    """
    settings = settings if settings is not None else ExporterSettings()
    try:
        httpd = make_server(
            settings.host,
            settings.port,
            _app(registry),
            server_class=_server_class(settings.host),
            handler_class=_QuietHandler,
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
