#!/usr/bin/env bash
# Build llama-cpp-python once per (version, build options, compiler flags, host CPU) into
# <cache>/llama-cpp-python-<version>-<key>/ and print that directory. pip's own wheel cache is
# keyed by the source archive only, so a changed CMAKE_ARGS or a different host would silently
# get the old build back (docs/benchmarks.md, "The build").
#
# usage: scripts/llama-wheel.sh PYTHON VERSION [LOCKFILE]
#   LOCKFILE: a requirements file with hashes (requirements.lock): the source archive must
#   match its hash for llama-cpp-python.
# environment: LLAMA_CMAKE_ARGS (build options), LLAMA_PORTABLE=1 (no -march=native),
#              LLAMA_WHEEL_DIR (default ~/.cache/assistant-wheels: safe to share between
#              checkouts, since the key names everything the binary depends on),
#              LLAMA_WHEEL_PRINT_ONLY=1 (print the directory this build would use, build
#              nothing)
set -euo pipefail
python=${1:?python}
version=${2:?version}
lockfile=${3:-}
portable=${LLAMA_PORTABLE:-0}
arch=$(uname -m)

if [ "$portable" = 1 ]; then native=OFF; else native=ON; fi
cmake_args="-DLLAVA_BUILD=OFF -DGGML_NATIVE=$native ${LLAMA_CMAKE_ARGS:-}"

# ggml's AMX kernels crash at the first decode on Xeons with AMX (SIGSEGV in
# ggml_backend_amx_mul_mat at ldtilecfg: llama.cpp issue 20824, pull request 26954). With
# -march=native the compiler turns them on by itself; explicit -mno-* flags win over -march in
# GCC and Clang whatever their order. Set LLAMA_ALLOW_AMX=1 once upstream has fixed it.
cflags="${CFLAGS:-}"
if [ "$arch" = x86_64 ] && [ "${LLAMA_ALLOW_AMX:-0}" != 1 ]; then
  cflags="$cflags -mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
fi

# A native build is only good for CPUs with the same features: the host's are part of the key.
cpu=""
if [ "$native" = ON ]; then
  cpu=$(grep -m1 -E '^(flags|Features)' /proc/cpuinfo 2>/dev/null || true)
fi
key=$(printf '%s|%s|%s|%s|%s|%s' "$version" "$cmake_args" "$cflags" "$arch" "$cpu" \
      "$("$python" -c 'import sys; print(sys.implementation.cache_tag)')" | sha256sum | cut -c1-16)
dir="${LLAMA_WHEEL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/assistant-wheels}/llama-cpp-python-$version-$key"

if [ "${LLAMA_WHEEL_PRINT_ONLY:-0}" = 1 ]; then
  echo "$dir"
  exit 0
fi
if ! ls "$dir"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python $version ($cmake_args; CFLAGS=$cflags) into $dir" >&2
  mkdir -p "$dir.tmp"
  requirement=("llama-cpp-python==$version")
  if [ -n "$lockfile" ]; then
    # Its lines from the lock (the pin and its --hash options), so pip checks the archive.
    awk '/^llama-cpp-python==/{p=1} p{print; if ($0 !~ /\\$/) exit}' "$lockfile" \
      > "$dir.tmp/requirement.txt"
    grep -q "^llama-cpp-python==$version " "$dir.tmp/requirement.txt" || {
      echo "$lockfile pins no llama-cpp-python==$version" >&2; exit 1; }
    requirement=(--require-hashes -r "$dir.tmp/requirement.txt")
  fi
  CMAKE_ARGS="$cmake_args" CFLAGS="$cflags" CXXFLAGS="${CXXFLAGS:-} $cflags" \
    "$python" -m pip wheel --disable-pip-version-check -q --no-deps --no-cache-dir \
    --no-binary llama-cpp-python -w "$dir.tmp" "${requirement[@]}" >&2
  printf 'version=%s\ncmake_args=%s\ncflags=%s\narch=%s\n' \
    "$version" "$cmake_args" "$cflags" "$arch" > "$dir.tmp/BUILD-INFO"
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
fi
echo "$dir"
