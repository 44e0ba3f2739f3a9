# One image for every service (web, worker, model puller); the command picks the role.
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake git \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY assistant ./assistant
COPY integrations ./integrations
COPY worker ./worker
COPY prompts ./prompts
# Portable CPU flags in an image that may run on other hosts; see docs/benchmarks.md.
ARG LLAMA_CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF"
RUN CMAKE_ARGS="$LLAMA_CMAKE_ARGS" pip install --no-cache-dir . \
 && useradd --create-home --uid 1000 assistant
USER assistant
ENV ASSISTANT_MODELS_DIR=/models ASSISTANT_HOST=0.0.0.0
EXPOSE 8000
CMD ["assistant", "web"]
