# The contest-telemetry image: worker, archiver, loadgen and monitor (one console script).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY contest_telemetry ./contest_telemetry
COPY producers ./producers
COPY streams ./streams
COPY sinks ./sinks
RUN pip install --no-cache-dir . && useradd --create-home --uid 10001 contest
USER contest
# The worker's or the archiver's /healthz, whichever this container runs (contest_telemetry/healthcheck.py).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-m", "contest_telemetry.healthcheck"]
ENTRYPOINT ["contest-telemetry"]
CMD ["--help"]
