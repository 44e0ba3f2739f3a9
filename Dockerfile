# One image for every service (web, worker, model puller); the command picks the role.
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake git \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md requirements.lock ./
COPY scripts ./scripts
# An image is built on one machine and run on others: portable CPU flags (no -march=native),
# ggml's AMX kernels off (llama.cpp issue 20824), the same script as `make install`
# (docs/benchmarks.md, "The build"). LLAMA_CMAKE_ARGS adds options (-DGGML_CUDA=ON ...).
ARG LLAMA_PORTABLE=1
ARG LLAMA_CMAKE_ARGS=""
RUN version=$(sed -n 's/.*"llama-cpp-python==\([0-9.]*\)".*/\1/p' pyproject.toml) \
 && wheels=$(LLAMA_PORTABLE="$LLAMA_PORTABLE" LLAMA_CMAKE_ARGS="$LLAMA_CMAKE_ARGS" \
      LLAMA_WHEEL_DIR=/tmp/wheels scripts/llama-wheel.sh python "$version" requirements.lock) \
 && pip install --no-cache-dir --no-deps "$wheels"/llama_cpp_python-*.whl \
 && pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock \
 && rm -rf /tmp/wheels
COPY assistant ./assistant
COPY integrations ./integrations
COPY worker ./worker
COPY prompts ./prompts
# /data: what processes write for themselves (the safety and embedding caches; SQLite when no
# DATABASE_URL): /app belongs to root. compose.yaml mounts a volume there.
RUN pip install --no-cache-dir --no-deps . \
 && useradd --create-home --uid 1000 assistant \
 && mkdir -p /data && chown assistant:assistant /data
USER assistant
ENV ASSISTANT_MODELS_DIR=/models ASSISTANT_HOST=0.0.0.0 ASSISTANT_DATA_DIR=/data
EXPOSE 8000
# The worker self-tests its engine at start and exits 3 if it cannot decode on this host.
CMD ["assistant", "web"]
