# The two commands of the README's quick start. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install bench system-deps

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)  ## train and evaluate on the embedded dataset (offline)
	. $(BIN)/activate && dvc repro

test: $(STAMP)  ## the whole test suite, end-to-end pipeline included
	. $(BIN)/activate && pytest

bench: $(STAMP)  ## throughput / timing figures quoted in the README
	. $(BIN)/activate && python -m benchmarks.features_throughput && python -m benchmarks.pipeline_timing

system-deps:  ## Debian packages the tests use: chromium + its driver for the web page's browser test (root)
	apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver
