# The two commands of the README's quick start. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Every package's exact version (runtime + the test extra), so reruns compute the same numbers.
LOCK := requirements.lock

.PHONY: run test test-fast install lock bench system-deps flickr8k train

# --no-compile: Python writes bytecode for the modules a run imports, on first import, instead of
# pip compiling every file of every package up front (most of TensorFlow's are never imported).
$(STAMP): $(LOCK) pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --no-compile -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# setuptools stays unpinned (--no-allow-unsafe): the venv's own copy, as `python -m venv` made it.
lock:  ## refresh requirements.lock to the newest versions pyproject.toml's ranges allow
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet pip-tools
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --upgrade --extra test --strip-extras \
	  --no-allow-unsafe --no-emit-options --output-file $(LOCK) pyproject.toml

run: $(STAMP)  ## train and evaluate on the embedded dataset (offline)
	. $(BIN)/activate && dvc repro

test: $(STAMP)  ## the whole test suite, end-to-end pipeline included
	. $(BIN)/activate && pytest

test-fast: $(STAMP)  ## the tests that run no pipeline, server or browser (pytest -m "not slow")
	. $(BIN)/activate && pytest -m "not slow"

FLICKR8K ?=
EXP ?= flickr8k
SET ?=
flickr8k: $(STAMP)  ## the real-photo profile (profiles/flickr8k.yaml): downloads Flickr8k, or FLICKR8K=/path/to/copy imports one [EXP=name SET="train.seed=43 ..."]
	. $(BIN)/activate && dvc exp run -n $(EXP) $$(python -m scripts.profile_args profiles/flickr8k.yaml \
	  $(if $(FLICKR8K),data.flickr8k.local_dir=$(abspath $(FLICKR8K))) $(SET))

DATA ?=
CAPTIONS ?=
# Paths as absolute ones: dvc exp run may run the stages elsewhere than the directory make ran in.
FOLDER_ARGS = data.folder.images_dir=$(abspath $(DATA)) $(if $(CAPTIONS),data.folder.captions=$(abspath $(CAPTIONS)))
train: EXP = folder
train: $(STAMP)  ## your own captioned images (profiles/folder.yaml): make train DATA=/path/to/folder [CAPTIONS=/path/to/captions.csv EXP=name SET="k=v ..."]
	@test -n "$(DATA)" || { echo "error: DATA is not set; make train DATA=/path/to/folder [CAPTIONS=/path/to/captions.csv] (docs/own_data.md)" >&2; exit 1; }
	. $(BIN)/activate && dvc exp run -n $(EXP) $$(python -m scripts.profile_args profiles/folder.yaml $(FOLDER_ARGS) \
	  data.folder.fingerprint=$$(python -m scripts.folder_fingerprint $(abspath $(DATA)) $(abspath $(CAPTIONS))) $(SET))

bench: $(STAMP)  ## every performance benchmark, quick arguments (benchmarks/README.md); after make run
	@test -f models/model.keras || { echo "error: models/model.keras not found; run make run first" >&2; exit 1; }
	. $(BIN)/activate && python -m benchmarks.text_pipeline && python -m benchmarks.features_throughput --images 192 && \
	  python -m benchmarks.training --captions 1024 && python -m benchmarks.flickr8k_training --steps 10 && \
	  python -m benchmarks.scaling precision && python -m benchmarks.scaling stages --sizes 500 2000 --train-steps 5 && \
	  python -m benchmarks.decoding --beams 1 3 && python -m benchmarks.serving --requests 48 --rss-requests 300 && \
	  python -m benchmarks.novelty_cost --images 20 && \
	  python -m benchmarks.pipeline_timing

# Debian packages the tests need (.ci/run installs them before `make test`); one `+=` line each.
SYSTEM_PACKAGES += postgresql       # tests/test_tracking_server.py: the MLflow server's PostgreSQL store
SYSTEM_PACKAGES += chromium chromium-driver  # tests/test_web_page.py: the page in a real browser
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

system-deps:  ## install SYSTEM_PACKAGES with apt (skipped when all are installed)
	dpkg -s $(SYSTEM_PACKAGES) >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES); }
