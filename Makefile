# The two commands of the README's quick start. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install bench system-deps flickr8k

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

FLICKR8K ?=
EXP ?= flickr8k
SET ?=
flickr8k: $(STAMP)  ## the real-photo profile (profiles/flickr8k.yaml) on a local copy: make flickr8k FLICKR8K=/path/to/copy [EXP=name SET="train.seed=43 ..."]
	@test -n "$(FLICKR8K)" || { echo "error: FLICKR8K is not set; make flickr8k FLICKR8K=/path/to/flickr8k (docs/flickr8k.md)" >&2; exit 1; }
	. $(BIN)/activate && dvc exp run -n $(EXP) $$(python -m scripts.profile_args profiles/flickr8k.yaml \
	  data.flickr8k.local_dir=$(abspath $(FLICKR8K)) $(SET))

bench: $(STAMP)  ## throughput / timing figures quoted in the README
	. $(BIN)/activate && python -m benchmarks.features_throughput && python -m benchmarks.pipeline_timing

# Debian packages the tests need (.ci/run installs them before `make test`); one `+=` line each.
SYSTEM_PACKAGES += postgresql       # tests/test_tracking_server.py: the MLflow server's PostgreSQL store
SYSTEM_PACKAGES += chromium chromium-driver  # tests/test_web_page.py: the page in a real browser
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

system-deps:  ## install SYSTEM_PACKAGES with apt (skipped when all are installed)
	dpkg -s $(SYSTEM_PACKAGES) >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES); }
