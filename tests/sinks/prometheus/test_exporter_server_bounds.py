"""The /metrics server under idle, slow and many connections (audit finding 12).

The server must not give a thread to every connection: idle ones wait in a selector (no thread)
until a request head has arrived, are closed after a timeout, and are dropped oldest first beyond
a connection limit; a fixed pool of threads answers the requests.

The timeout, pool size and connection limit are the settings' ``request_timeout_s``, ``threads``
and ``max_connections`` (the worker's defaults: 5 s, 4, 256).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sinks.prometheus import ExporterServer, ExporterSettings, start_exporter
from sinks.prometheus.collector import CompactFamily

IDLE = 200
# Threads the exporter may add to the process: its selector loop and the pool (default 4), plus slack.
MAX_EXTRA_THREADS = 8


def scrape(url: str, timeout: float = 10) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.status, resp.read()


def server_counts(url: str) -> dict[str, float]:
    """The server's own counters on a /metrics page: ``rejected`` and each close ``reason``."""
    _, body = scrape(url)
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            if s.name == "contest_exporter_requests_rejected_total":
                found["rejected"] = s.value
            elif s.name == "contest_exporter_connections_closed_total":
                found[s.labels["reason"]] = s.value
    return found


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """True when the server closes ``sock`` within ``within`` seconds (EOF or reset)."""
    sock.settimeout(within)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


@contextlib.contextmanager
def connections(port: int, n: int) -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        yield socks
    finally:
        for s in socks:
            s.close()


def peak_threads(seconds: float) -> int:
    peak = threading.active_count()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        peak = max(peak, threading.active_count())
        time.sleep(0.02)
    return peak


def test_idle_connections_do_not_hold_a_thread_each_and_a_scrape_still_answers(exporter):
    """Default settings: 200 idle connections (half with a partial request line) add a bounded
    number of threads, and /metrics answers while they are open."""
    registry, counters, _ = exporter
    counters.processed(7)
    before = threading.active_count()
    srv = start_exporter(registry, ExporterSettings(port=0))
    try:
        with connections(srv.port, IDLE) as socks:
            for s in socks[::2]:
                s.sendall(b"GET /metr")  # a request line that never ends
            peak = peak_threads(1.0)
            status, body = scrape(srv.url)
            peak = max(peak, threading.active_count())
            assert status == 200 and b"contest_processed_events_total 7" in body
            assert peak - before <= MAX_EXTRA_THREADS, f"{peak - before} threads for {IDLE} idle connections"
    finally:
        srv.stop()
    assert threading.active_count() <= before + 1  # stop() joins the loop and the pool


@pytest.fixture
def quick_server(exporter) -> Iterator[ExporterServer]:
    registry, _, _ = exporter
    srv = start_exporter(
        registry, ExporterSettings(port=0, request_timeout_s=0.5, threads=2, max_connections=20)
    )
    try:
        yield srv
    finally:
        srv.stop()


def test_idle_and_incomplete_requests_are_closed_after_the_timeout(quick_server: ExporterServer):
    assert server_counts(quick_server.url) == {
        "rejected": 0,
        "request_timeout": 0,
        "max_connections": 0,
        "head_too_large": 0,
    }
    with connections(quick_server.port, 2) as (idle, partial):
        partial.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # headers never end
        start = time.monotonic()
        assert closed_by_server(idle, within=5)
        assert closed_by_server(partial, within=5)
        assert time.monotonic() - start < 3
    counts = server_counts(quick_server.url)
    assert counts["request_timeout"] == 2 and counts["max_connections"] == counts["rejected"] == 0


def test_a_request_head_beyond_the_limit_gets_431_and_is_counted(quick_server: ExporterServer):
    with connections(quick_server.port, 1) as (sock,):
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"GET /metrics HTTP/1.0\r\nX-Pad: " + b"x" * (80 * 1024))
        sock.settimeout(5)
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(4096).startswith(b"HTTP/1.0 431")
    assert server_counts(quick_server.url)["head_too_large"] == 1


def test_a_trickling_client_is_closed_at_the_deadline_even_while_it_sends(quick_server: ExporterServer):
    """The timeout bounds the whole request head, not each read: one byte every 50 ms does not
    keep the connection (or a thread) forever."""
    with connections(quick_server.port, 1) as (sock,):
        start = time.monotonic()
        closed = False
        try:
            while time.monotonic() - start < 5:
                sock.sendall(b"X")
                if closed_by_server(sock, within=0.05):
                    closed = True
                    break
        except (BrokenPipeError, ConnectionResetError):
            closed = True
        assert closed and time.monotonic() - start < 3


def test_beyond_max_connections_the_oldest_waiting_connections_are_dropped(exporter):
    registry, _, _ = exporter
    settings = ExporterSettings(port=0, request_timeout_s=30, threads=2, max_connections=20)
    with start_exporter(registry, settings) as srv, connections(srv.port, 50) as socks:
        assert scrape(srv.url)[0] == 200  # the scrape is the newest connection: it is served
        oldest, newest = socks[:30], socks[-10:]
        assert all(closed_by_server(s, within=5) for s in oldest)
        assert not any(closed_by_server(s, within=0.05) for s in newest)
        # 50 waiting, then the first scrape: 31 closed to keep 20 waiting.
        assert server_counts(srv.url)["max_connections"] == 31


def test_concurrent_scrapes_are_all_answered_by_a_small_pool(exporter):
    registry, counters, _ = exporter
    counters.processed(3)
    with start_exporter(registry, ExporterSettings(port=0, threads=2)) as srv, ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: scrape(srv.url), range(24)))
    assert [status for status, _ in results] == [200] * 24
    assert all(b"contest_processed_events_total 3" in body for _, body in results)


class BigPage:
    """A collector whose family renders to ~10 MB: more than the kernel buffers of a connection
    whose client does not read (send buffer up to 4 MB by default on Linux)."""

    def collect(self) -> Iterator[CompactFamily]:
        family = CompactFamily("test_big_page", "Padding.", "gauge", ["k"])
        family.rows.extend(((f"{i:06d}-{'x' * 100}",), i) for i in range(80_000))
        yield family


def test_a_client_that_does_not_read_the_page_frees_its_thread_after_the_timeout(exporter):
    """The pool's only thread blocks sending to a client that never reads, for at most the
    timeout; then it serves the next scrape."""
    registry, _, _ = exporter
    registry.register(BigPage())  # type: ignore[arg-type]
    settings = ExporterSettings(port=0, request_timeout_s=0.5, threads=1)
    with start_exporter(registry, settings) as srv, socket.socket() as stuck:
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
        stuck.connect(("127.0.0.1", srv.port))
        stuck.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")  # and never read
        time.sleep(0.1)
        start = time.monotonic()
        status, body = scrape(srv.url, timeout=20)
        elapsed = time.monotonic() - start
        assert status == 200 and b"test_big_page" in body and len(body) > 8_000_000
        assert 0.3 < elapsed < 10, elapsed  # waited for the stuck send to time out, not forever
        assert b'contest_exporter_connections_closed_total{reason="request_timeout"} 1' in body


def test_requests_beyond_the_queue_get_503_while_every_thread_is_busy(exporter):
    """One thread, blocked on a client that does not read: 16 complete requests wait for it, the
    rest are answered 503 at once instead of piling up."""
    registry, _, _ = exporter
    registry.register(BigPage())  # type: ignore[arg-type]
    settings = ExporterSettings(port=0, request_timeout_s=1.0, threads=1)
    with start_exporter(registry, settings) as srv, socket.socket() as stuck:
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", srv.port))
        stuck.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        time.sleep(0.3)  # rendered, now blocked in send
        with connections(srv.port, 20) as socks:
            for s in socks:
                s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            replies = []
            for s in socks:
                s.settimeout(10)
                replies.append(b"".join(iter(lambda s=s: s.recv(4096), b"")))
        statuses = sorted(reply.split(b" ", 2)[1].decode() for reply in replies)
        assert statuses == ["200"] * 16 + ["503"] * 4, statuses
        assert scrape(f"{srv.base_url}/healthz")[0] == 200
        assert server_counts(srv.url)["rejected"] == 4


def test_gzip_and_openmetrics_are_negotiated() -> None:
    """What Prometheus asks for: OpenMetrics when it accepts it, gzip when it accepts it; the
    classic text format otherwise."""
    import gzip
    import urllib.request

    from prometheus_client import CollectorRegistry, Counter

    from sinks.prometheus import ExporterSettings, start_exporter

    registry = CollectorRegistry()
    Counter("demo_things", "Things.", registry=registry).inc(3)
    server = start_exporter(registry, ExporterSettings(port=0))
    try:

        def get(headers: dict[str, str]) -> tuple[str, str | None, bytes]:
            req = urllib.request.Request(server.url, headers=headers)
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.headers["Content-Type"], resp.headers.get("Content-Encoding"), resp.read()

        ctype, enc, body = get({})
        assert (
            ctype.startswith("text/plain; version=0.0.4") and enc is None and b"demo_things_total 3.0" in body
        )
        ctype, enc, body = get(
            {"Accept": "application/openmetrics-text; version=1.0.0", "Accept-Encoding": "gzip"}
        )
        assert ctype.startswith("application/openmetrics-text") and enc == "gzip"
        text = gzip.decompress(body)
        assert b"demo_things_total 3.0" in text and text.rstrip().endswith(b"# EOF")
    finally:
        server.stop()
