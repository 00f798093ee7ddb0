# Two commands for a newcomer: `make demo` and `make test`. Everything else is set up by them.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench collector clean venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

collector: $(STAMP)
	@bash scripts/build-collector.sh

lint: $(STAMP)
	$(BIN)/ruff check otel_audit tests benchmarks examples
	$(BIN)/mypy

test: $(STAMP) collector lint
	OTEL_AUDIT_COLLECTOR_BIN=$$(bash scripts/build-collector.sh --print) $(BIN)/python -m pytest -q -p no:cacheprovider

demo: $(STAMP) collector
	OTEL_AUDIT_COLLECTOR_BIN=$$(bash scripts/build-collector.sh --print) $(BIN)/python examples/demo.py

# Scenarios 1-6 against the SDK's pipeline, then aggregate throughput through 1 and 2 gateways.
bench: $(STAMP) collector
	$(BIN)/python -m benchmarks $(ARGS)
	$(BIN)/python -m benchmarks.scaleout $(if $(findstring --full,$(ARGS)),--profile full,)

clean:
	rm -rf $(VENV) build *.egg-info
