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
ENTRYPOINT ["contest-telemetry"]
CMD ["--help"]
