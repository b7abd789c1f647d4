# Every target sets up what it needs from nothing: `make install` is idempotent.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install system-deps demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

demo: install
	$(BIN)/contest-telemetry demo

system-deps:
	@scripts/install-system-deps.sh

test: install system-deps
	$(BIN)/python -m pytest -q -ra

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install
	$(BIN)/python benchmarks/publish.py
	$(BIN)/python benchmarks/stream_throughput.py
	$(BIN)/python benchmarks/archive.py
	$(BIN)/python benchmarks/replay.py
	$(BIN)/python benchmarks/stream_memory.py
	$(BIN)/python benchmarks/exporter_scrape.py
	$(BIN)/python benchmarks/monitor.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
