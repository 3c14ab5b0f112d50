# Two commands matter: `make run` and `make test`. Everything else is what they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)
# The .proto files in buf's layout: protos/ is the module root, imported as "upload/v1/x.proto".
PROTOS := $(wildcard protos/upload/v1/*.proto)
GENERATED := $(PROTOS:.proto=_pb2.py)
NODE_STAMP := node_modules/.installed

.PHONY: run test lint-imports proto-check proto-release bench bench-quick profile fuzz install protos system-deps lock clean

run: install
	$(BIN)/honcho start -f Procfile

test: install
	@$(PG_INSTALL)
	@$(CLAMD_INSTALL)
	$(MAKE) --no-print-directory lint-imports proto-check
	@rm -f .pytest-last
	$(BIN)/pytest $(PYTEST_ARGS) || { status=$$?; test ! -s .pytest-last || \
	  echo "pytest was killed while running: $$(cat .pytest-last) (its output above says by what)" >&2; exit $$status; }

# The import contracts in pyproject.toml (layers, no cycles, services apart). PYTHONPATH: grimp finds
# packages on sys.path, not through the editable install; --no-cache: its cache trusts mtimes.
lint-imports: install
	PYTHONPATH=. $(BIN)/lint-imports --no-cache

# buf (npm's @bufbuild/buf) on the protos: its lint rules (buf.yaml: every element commented),
# and no breaking change (FILE: generated code of every language keeps compiling) against the
# last release's image in protos/releases/. The CHANGELOG's policy says when that may change.
BUF := ../node_modules/.bin/buf
PROTO_RELEASE = $(lastword $(shell ls protos/releases/ | sort -V))

proto-check: $(NODE_STAMP)
	cd protos && $(BUF) lint && $(BUF) breaking --against releases/$(PROTO_RELEASE)

# Records the protos as released: `make proto-release VERSION=1.1.0` (see protos/CHANGELOG.md).
proto-release: $(NODE_STAMP)
	@test -n "$(VERSION)" || { echo "Say which version: make proto-release VERSION=1.1.0" >&2; exit 1; }
	cd protos && $(BUF) build --exclude-source-info -o releases/upload-v1-$(VERSION).binpb

# The tests run the metadata on PostgreSQL too: they start a throwaway server from Debian's
# `postgresql` binaries (tests/postgres.py), installed here when missing and root.
PG_INSTALL = ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql; \
	  else echo "PostgreSQL is missing (the tests start their own server): run 'sudo apt-get install postgresql', then make test again." >&2; exit 1; fi; }

# The ClamAV tests start a clamd of their own (tests/clamd.py, with a signature database they write) from
# Debian's `clamav-daemon`, installed here when missing and root.
CLAMD_INSTALL = command -v clamd >/dev/null || test -x /usr/sbin/clamd || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends clamav-daemon; \
	  else echo "clamd is missing (the ClamAV tests start their own): run 'sudo apt-get install clamav-daemon', then make test again." >&2; exit 1; fi; }

# The `load` area drives small uploads with wrk (Debian's package), installed here when missing.
WRK_INSTALL = command -v wrk >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; fi; }

bench: install
	$(BIN)/pip install -q -r requirements.lock
	@$(WRK_INSTALL)
	$(BIN)/python -m bench $(BENCH_ARGS)

# The same, fewer rounds and smaller files (about 2 minutes).
bench-quick: install
	$(BIN)/pip install -q -r requirements.lock
	@$(WRK_INSTALL)
	$(BIN)/python -m bench --quick $(BENCH_ARGS)

# Where one small upload's CPU goes, by process, library and part of the work (bench/profile.py:
# py-spy, and perf when installed).
profile: install
	$(BIN)/pip install -q -r requirements.lock
	@$(WRK_INSTALL)
	$(BIN)/python -m bench.profile $(PROFILE_ARGS)

# Coverage-guided fuzzing of the validator's rules (atheris): not part of `make test`.
# Seeds come from tests/samples.py; what it learns stays in build/fuzz/corpus, a crash
# lands in build/fuzz/ (replay: $(BIN)/python fuzz/validator_pipeline.py build/fuzz/crash-...).
# atheris (pyproject's `fuzz` extra) is installed here only, from its manylinux wheel.
FUZZ_SECONDS ?= 60

fuzz: system-deps protos
	@$(BIN)/python -c "import atheris" 2>/dev/null || $(BIN)/python -c "import tomllib; \
	  print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['fuzz'], sep='\n')" \
	  | $(BIN)/pip install -q -c requirements.lock -r /dev/stdin
	$(BIN)/python fuzz/validator_pipeline.py --make-seeds build/fuzz/seeds
	mkdir -p build/fuzz/corpus
	$(BIN)/python fuzz/validator_pipeline.py -max_total_time=$(FUZZ_SECONDS) -timeout=10 \
	  -artifact_prefix=build/fuzz/ build/fuzz/corpus build/fuzz/seeds

install: system-deps $(STAMP) protos $(NODE_STAMP)

# libmagic is the one system library the services need; Debian usually has it. ffmpeg is the
# program the thumbnail service makes video posters with (thumbnail_service/video.py).
system-deps:
	@$(PYTHON) -c "import ctypes.util, sys; sys.exit(0 if ctypes.util.find_library('magic') else 1)" || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libmagic1; \
	  else echo "libmagic is missing: run 'sudo apt-get install libmagic1', then make again." >&2; exit 1; fi; }
	@command -v ffmpeg >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ffmpeg; \
	  else echo "ffmpeg is missing (video thumbnails): run 'sudo apt-get install ffmpeg', then make again." >&2; exit 1; fi; }

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV) || { echo "Creating a virtualenv failed: on Debian run 'sudo apt-get install python3-venv'." >&2; exit 1; }

# Installs exactly the locked versions (every extra: the three services, dev, test, bench), then
# the project itself without touching them. --no-build-isolation: the build (setup.py generates
# the protos) uses the venv's locked setuptools and grpcio-tools instead of fetching its own.
$(STAMP): requirements.lock pyproject.toml setup.py | $(VENV)/bin/python
	rm -f $(VENV)/.installed-*
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $@

# The page's browser libraries (tus-js-client), exactly as package-lock.json pins them.
# `npm ci` empties node_modules first, so the stamp is only there after a complete install.
$(NODE_STAMP): package.json package-lock.json
	@command -v npm >/dev/null || { \
	  echo "npm is missing (the upload page serves tus-js-client from node_modules): install Node.js 18 or newer with npm, e.g. 'sudo apt-get install nodejs npm', then make again." >&2; exit 1; }
	npm ci --no-audit --no-fund
	touch $@

protos: $(GENERATED)

$(GENERATED): $(PROTOS) protos/generate.py | $(STAMP)
	$(BIN)/python -m protos.generate

# Refresh the lock after changing pyproject.toml's dependencies. One lock for every extra but
# fuzz: the images and lean installs take their extra's part of it (pip install -c requirements.lock).
lock: | $(VENV)/bin/python
	$(BIN)/pip install -q uv
	$(BIN)/uv pip compile -q pyproject.toml --extra gateway --extra validator --extra thumbnail --extra dev \
	  --extra test --extra bench --python-version 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) protos/upload/v1/*_pb2*.py protos/upload/v1/*_pb2.pyi .pytest_cache node_modules
