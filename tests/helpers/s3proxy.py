"""A real S3 server for tests and benchmarks: S3Proxy (Apache-2.0) from its Maven Central jar.

The ``jar-with-dependencies`` is copied once with ``mvn dependency:copy-dependencies`` (like the
Kafka jars, contest_telemetry/broker/apache.py) into ``CT_S3PROXY_LIBS_DIR`` or
``~/.cache/contest-telemetry/s3proxy-<version>``, then run with ``java -jar`` and a properties
file: the ``filesystem`` provider under a temp dir (a stop and start on the same port keeps the
objects, which the outage tests need), bound to 127.0.0.1 on a free port, stopped by
:meth:`S3Proxy.stop` (and with the process that started it).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from contest_telemetry.broker.process import die_with_parent, free_port, stop_process_group

__all__ = ["S3PROXY_VERSION", "S3Proxy", "S3ProxyUnavailable", "resolve_s3proxy_jar"]

S3PROXY_VERSION = "4.1.0"  # targets Java 17 (the Java scripts/install-system-deps.sh installs)
_ARTIFACT = f"s3proxy-{S3PROXY_VERSION}-jar-with-dependencies.jar"
_POM = f"""<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.contest-telemetry</groupId>
  <artifactId>s3proxy-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.gaul</groupId>
      <artifactId>s3proxy</artifactId>
      <version>{S3PROXY_VERSION}</version>
      <classifier>jar-with-dependencies</classifier>
      <exclusions><exclusion><groupId>*</groupId><artifactId>*</artifactId></exclusion></exclusions>
    </dependency>
  </dependencies>
</project>
"""


class S3ProxyUnavailable(RuntimeError):
    """Java or Maven is missing, or the jar cannot be resolved."""


def _libs_dir() -> Path:
    override = os.environ.get("CT_S3PROXY_LIBS_DIR")
    if override:
        return Path(override)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "contest-telemetry" / f"s3proxy-{S3PROXY_VERSION}"


def resolve_s3proxy_jar() -> Path:
    """The S3Proxy jar, fetched from Maven Central the first time."""
    libs = _libs_dir()
    jar = libs / "libs" / _ARTIFACT
    if jar.is_file() and (libs / ".complete").exists():
        return jar
    if shutil.which("java") is None:
        raise S3ProxyUnavailable("S3Proxy needs Java >= 17 on PATH (java not found)")
    if shutil.which("mvn") is None:
        raise S3ProxyUnavailable("S3Proxy's jar is resolved with Maven (mvn not found)")
    libs.mkdir(parents=True, exist_ok=True)
    (libs / "pom.xml").write_text(_POM)
    cmd = [
        "mvn",
        "-B",
        "-q",
        "-f",
        str(libs / "pom.xml"),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={libs / 'libs'}",
        "-DexcludeTransitive=true",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not jar.is_file():
        raise S3ProxyUnavailable(f"mvn could not resolve S3Proxy {S3PROXY_VERSION}: {result.stdout[-2000:]}")
    (libs / ".complete").write_text(S3PROXY_VERSION)
    return jar


@dataclass
class S3Proxy:
    """One S3Proxy process; :attr:`endpoint`, :attr:`access_key`, :attr:`secret_key` reach it."""

    port: int = 0
    data_dir: Path | None = None
    access_key: str = "ct-test"
    secret_key: str = field(default_factory=lambda: secrets.token_hex(16))
    start_timeout: float = 90.0
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _owns_dir: bool = field(default=False, init=False, repr=False)
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        assert self.data_dir is not None
        return self.data_dir / "s3proxy.log"

    def env(self, region: str = "us-east-1") -> dict[str, str]:
        """The AWS-convention variables that point a client at this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": region,
            "AWS_ENDPOINT_URL": self.endpoint,
        }

    def start(self) -> S3Proxy:
        jar = resolve_s3proxy_jar()
        if not self.port:
            self.port = free_port()
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="ct-s3proxy-"))
            self._owns_dir = True
        blobs = self.data_dir / "blobs"
        blobs.mkdir(parents=True, exist_ok=True)
        props = self.data_dir / "s3proxy.conf"
        props.write_text(
            f"s3proxy.endpoint=http://127.0.0.1:{self.port}\n"
            "s3proxy.authorization=aws-v2-or-v4\n"
            f"s3proxy.identity={self.access_key}\n"
            f"s3proxy.credential={self.secret_key}\n"
            "jclouds.provider=filesystem\n"
            f"jclouds.filesystem.basedir={blobs}\n"
        )
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            ["java", "-Xmx256m", "-XX:+UseSerialGC", "-jar", str(jar), "--properties", str(props)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.data_dir,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise S3ProxyUnavailable(f"S3Proxy exited at start:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                    pass
                # Any S3 answer (403 for an anonymous request) means it serves.
                urllib.request.urlopen(self.endpoint, timeout=2.0).close()
                return
            except urllib.error.HTTPError:
                return
            except OSError:
                time.sleep(0.2)
        raise S3ProxyUnavailable(f"S3Proxy did not answer within {self.start_timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def create_bucket(self, name: str) -> None:
        blobs = self._blobs()
        # The filesystem provider's bucket is a directory; creating it directly needs no client.
        (blobs / name).mkdir(exist_ok=True)

    def _blobs(self) -> Path:
        assert self.data_dir is not None
        return self.data_dir / "blobs"

    def object_path(self, bucket: str, key: str) -> Path:
        """Where the filesystem provider keeps an object (to corrupt one in a test)."""
        return self._blobs() / bucket / key

    def halt(self) -> None:
        """Stop the process but keep its data (an outage; :meth:`start` brings it back)."""
        if self.proc is not None:
            stop_process_group(self.proc, 10.0)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self) -> None:
        self.halt()
        if self._owns_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> S3Proxy:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
