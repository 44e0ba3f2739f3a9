#!/usr/bin/env bash
# Build llama.cpp's own `llama-server` from the sources vendored in the llama-cpp-python sdist
# the project pins, once per (version, host CPU), into <cache>/llama-server-<version>-<key>/,
# and print the binary's path. It is the anchor of the batching bench (issue 20: continuous
# batching with `-np N`), built with the same options as the engine (native CPU, AMX off: see
# scripts/llama-wheel.sh). About 7 minutes on 2 cores; bench only, never part of `make install`.
#
# usage: scripts/llama-server.sh PYTHON VERSION [LOCKFILE]
set -euo pipefail
python=${1:?python}
version=${2:?version}
lockfile=${3:-}
arch=$(uname -m)
cflags="${CFLAGS:-}"
if [ "$arch" = x86_64 ] && [ "${LLAMA_ALLOW_AMX:-0}" != 1 ]; then
  cflags="$cflags -mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
fi
cpu=$(grep -m1 -E '^(flags|Features)' /proc/cpuinfo 2>/dev/null || true)
key=$(printf '%s|%s|%s|%s' "$version" "$cflags" "$arch" "$cpu" | sha256sum | cut -c1-16)
dir="${LLAMA_WHEEL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/assistant-wheels}/llama-server-$version-$key"
if [ ! -x "$dir/llama-server" ]; then
  echo "building llama-server $version (CFLAGS=$cflags) into $dir" >&2
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  requirement=("llama-cpp-python==$version")
  if [ -n "$lockfile" ]; then
    awk '/^llama-cpp-python==/{p=1} p{print; if ($0 !~ /\\$/) exit}' "$lockfile" \
      > "$work/requirement.txt"
    requirement=(--require-hashes -r "$work/requirement.txt")
  fi
  "$python" -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: \
    -d "$work" "${requirement[@]}" >&2
  tar -xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
  source=$(echo "$work"/llama_cpp_python-*/vendor/llama.cpp)
  CFLAGS="$cflags" CXXFLAGS="${CXXFLAGS:-} $cflags" cmake -S "$source" -B "$work/build" \
    -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=ON \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF >&2
  cmake --build "$work/build" --target llama-server -j "$(nproc)" >&2
  mkdir -p "$dir"
  cp "$work/build/bin/llama-server" "$dir/llama-server.tmp"
  mv "$dir/llama-server.tmp" "$dir/llama-server"
fi
echo "$dir/llama-server"
