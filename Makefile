# make run   — set everything up, then start the whole assistant
# make test  — set everything up, then run the whole test suite
# make bench — measure speed into bench/results.json

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# llama-cpp-python is compiled by pip (no Linux wheel on PyPI). Skipping the multimodal
# (llava/mtmd) library cuts the build 258 -> 214 s on 2 cores at the same speed; GGML_NATIVE
# is ggml's default already, explicit for SOURCE_DATE_EPOCH builds (docs/benchmarks.md, "The
# build": make bench-build). pip caches the built wheel, so only the first install pays.
# pip keys that cache by the source archive, not by CMAKE_ARGS: after changing the options, run
# `.venv/bin/pip cache remove llama_cpp_python` first, or the old build is installed again.
LLAMA_CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DGGML_NATIVE=ON
CHROMIUM ?= /usr/bin/chromium

.PHONY: install model browser run test bench bench-build lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install --disable-pip-version-check -q -e '.[test]'
	touch $@

model: install
	$(BIN)/assistant model pull

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

# The model bench writes bench/results.json (it ends with bench.conversation: time to first
# token by turn with and without state reuse, ~14 minutes on a quiet 2-core machine); the load
# run (stub engine, no model) merges its keys into it (docs/benchmarks.md).
bench: model
	$(BIN)/python -m bench
	$(BIN)/python -m bench.load

# The llama-cpp-python build before/after LLAMA_CMAKE_ARGS: two source builds with pip's cache
# off (~15 minutes on 2 cores), then decode and prompt speed of each (bench/build.py).
bench-build: model
	$(BIN)/python -m bench.build

lint: install
	$(BIN)/ruff check assistant integrations worker tests bench
	$(BIN)/mypy assistant integrations worker

clean:
	rm -rf $(VENV) test-artifacts .pytest_cache
