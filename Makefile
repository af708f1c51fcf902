# Two entry points (see README): `make demo` and `make test`. Both set up .venv first.
# Everything is idempotent: a second run checks stamps and does (almost) nothing.

PYTHON ?= python3
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed
# dvc runs stage commands (`curate ...`) through the shell: put the venv first on PATH.
export PATH := $(BIN):$(PATH)

.PHONY: help setup models demo-data demo test test-all bench-table clean browser gpu

help:
	@echo "make demo      set up, provision models, run dvc repro (its first stage makes the demo data)"
	@echo "make test      set up, provision models, run the test suite (CI runs this)"
	@echo "make test-all  the test suite including tests marked slow"
	@echo "make clean     remove generated data, caches and reports (keeps .venv and models)"
	@echo "make gpu       on a CUDA machine: ONNX Runtime with the CUDA provider (mattes on the GPU)"
	@echo "make bench-table  README's performance table rendered again from bench/results/*.json"

# torch and torchvision first, pinned: they come from this machine's local wheel files; letting
# another package's requirement pull torch would fetch a multi-GB build from the network.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[test]'
	# MTCNN for `face` alignment ships its weights in this wheel; it pins an old torch, so no deps.
	$(BIN)/pip install -q --no-deps facenet-pytorch==2.6.0
	touch $@

setup: $(STAMP)

# onnxruntime and onnxruntime-gpu install the same module and conflict: swap one for the other,
# at the installed version. torch's CUDA build already comes with the pinned wheel.
gpu: setup
	$(BIN)/python -c "import onnxruntime as o; assert 'CUDAExecutionProvider' in o.get_available_providers()" 2>/dev/null || { \
	  v=$$($(BIN)/python -c "import importlib.metadata as m; print(m.version('onnxruntime'))"); \
	  $(BIN)/pip uninstall -q -y onnxruntime && $(BIN)/pip install -q "onnxruntime-gpu==$$v"; }

models: setup
	$(BIN)/curate models provision

# The demo's raw photos are the output of dvc.yaml's demo-data stage: DVC versions them like
# any input (a queued experiment, a clone with `dvc pull` and `dvc checkout` get them).
demo-data: setup
	$(BIN)/dvc repro demo-data

demo: models
	$(BIN)/dvc repro
	@echo "outputs: data/ (manifests, stores), reports/ (HTML reports); see README"

# Debian's chromium for the HTML report tests (real headless browser). Installed with apt when
# missing and possible (root or passwordless sudo); otherwise those tests skip and say why (and
# fail where CI is set: .ci/run sets it).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	  else SUDO=none; fi; \
	  if [ "$$SUDO" = none ] || ! command -v apt-get >/dev/null 2>&1; then \
	    echo "warning: chromium is missing and cannot be installed here (needs apt-get as root):" \
	         "browser tests will be skipped (they fail where CI is set)"; \
	  else $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    chromium >/dev/null || echo "warning: apt-get install chromium failed: browser tests will be skipped"; \
	  fi; }

# pytest exits 5 when a selection collects nothing; that is not a failure of the suite.
test: models browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then rc=0; fi; exit $$rc

test-all: models browser
	$(BIN)/python -m pytest -q -m ''

# README's performance table is rendered from the benchmarks' result files (bench/README.md);
# tests/unit/test_bench_table.py fails when the two disagree.
bench-table: setup
	$(BIN)/python bench/table.py

clean:
	rm -rf data reports .cache
