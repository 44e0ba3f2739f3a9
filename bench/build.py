"""``python -m bench.build``: the llama-cpp-python build, before and after our CMake options.

Builds the installed llama-cpp-python version from its PyPI source twice, in this run, with
pip's cache off: **before** with pip's defaults (no ``CMAKE_ARGS``: multimodal tools built)
and **after** with the Makefile's ``LLAMA_CMAKE_ARGS``. Each wheel is installed into its own
directory; fresh interpreters, alternating between the two builds, measure with the default
model decode speed (tokens/s while generating 128 tokens at temperature 0, after a warm-up)
and prompt speed (reading ~1,000 tokens). Keys merged into ``bench/results.json``:
``install_seconds`` and ``decode_tps`` (``before``/``after``), details under ``build``.

Takes two full builds (about 9 + 4 minutes on 2 cores); ``make bench`` does not run it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import system
from bench.load import merge_into

ROOT = Path(__file__).resolve().parents[1]

# Run in a fresh interpreter whose sys.path starts with one build's install directory.
PROBE = r"""
import json, statistics, sys, time
sys.path.insert(0, sys.argv[1])
import llama_cpp
from llama_cpp import Llama
assert llama_cpp.__file__.startswith(sys.argv[1]), llama_cpp.__file__
llm = Llama(model_path=sys.argv[2], n_ctx=2048, n_threads=int(sys.argv[3]),
            n_threads_batch=int(sys.argv[3]), verbose=False)
decode = []
for run in range(int(sys.argv[4]) + 1):
    llm.reset()
    started = None
    count = 0
    for chunk in llm.create_completion("Once upon a time", max_tokens=128, temperature=0,
                                       stream=True):
        count += 1
        if started is None:
            started = time.perf_counter()
    if run:  # the first run warms up
        decode.append((count - 1) / (time.perf_counter() - started))
text = " ".join(f"Line {i}: the keeper climbed the stairs and lit the lamp." for i in range(90))
tokens = llm.tokenize(text.encode())[:1000]
prompt = []
for run in range(3):
    llm.reset()
    llm._ctx.kv_cache_seq_rm(-1, 0, -1)
    started = time.perf_counter()
    llm.eval(tokens)
    prompt.append(len(tokens) / (time.perf_counter() - started))
print(json.dumps({"decode_tps": round(statistics.median(decode), 2),
                  "decode_tps_runs": [round(d, 2) for d in decode],
                  "prompt_tps": round(statistics.median(prompt), 1),
                  "system_info": llama_cpp.llama_print_system_info().decode().strip()}))
"""


def makefile_cmake_args() -> str:
    """The build options ``make install`` uses (scripts/llama-wheel.sh, a native build)."""
    match = re.search(r'^cmake_args="(.*?) *\$\{LLAMA_CMAKE_ARGS', (ROOT / "scripts" /
                      "llama-wheel.sh").read_text(), re.M)
    return match.group(1).replace("$native", "ON").strip() if match else ""


# Both builds keep ggml's AMX kernels off, as make install does: they crash on Xeons with AMX
# (llama.cpp issue 20824), so a "before" build with them would not survive its probe there.
AMX_OFF = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" if os.uname().machine == "x86_64" else ""


def installed_version() -> str:
    from importlib.metadata import version

    return version("llama-cpp-python")


def fetch_source(version: str, into: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
                    "-q", "--no-deps", "--no-binary", ":all:", "-d", str(into),
                    f"llama-cpp-python=={version}"], check=True)
    found = sorted(into.glob("llama_cpp_python-*.tar.gz"))
    if not found:
        raise SystemExit(f"no llama-cpp-python {version} source archive was downloaded")
    return found[0]


def build(source: Path, cmake_args: str, out: Path) -> float:
    """Wall seconds of ``pip wheel`` (cache off, so nothing is reused between the builds)."""
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.pop("CMAKE_ARGS", None)
    if cmake_args:
        env["CMAKE_ARGS"] = cmake_args
    if AMX_OFF:
        env["CFLAGS"] = f"{env.get('CFLAGS', '')} {AMX_OFF}".strip()
        env["CXXFLAGS"] = f"{env.get('CXXFLAGS', '')} {AMX_OFF}".strip()
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "-q",
                    "--no-cache-dir", "--no-deps", "-w", str(out), str(source)],
                   check=True, env=env)
    return time.perf_counter() - started


def install(wheel_dir: Path, target: Path) -> float:
    wheel = next(wheel_dir.glob("llama_cpp_python-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check",
                    "-q", "--no-deps", "--target", str(target), str(wheel)], check=True)
    return round(wheel.stat().st_size / 2**20, 1)


def probe(target: Path, model: Path, threads: int, runs: int) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", PROBE, str(target), str(model), str(threads),
                           str(runs)], check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    from assistant.models import resolve_model_path
    from assistant.settings import Settings

    parser = argparse.ArgumentParser(prog="python -m bench.build", description=__doc__)
    parser.add_argument("--before", default="", help="CMAKE_ARGS of the baseline (pip's "
                        "defaults when empty)")
    parser.add_argument("--after", default=None, help="CMAKE_ARGS to compare (default: the "
                        "Makefile's LLAMA_CMAKE_ARGS)")
    parser.add_argument("--threads", type=int, default=Settings().threads)
    parser.add_argument("--runs", type=int, default=3, help="decode runs per probe")
    parser.add_argument("--rounds", type=int, default=3,
                        help="probes per build, alternating between the builds")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results.json")
    args = parser.parse_args(argv)
    after_args = makefile_cmake_args() if args.after is None else args.after
    settings = Settings()
    model = resolve_model_path(settings.model, settings.models_dir)
    version = installed_version()
    work = Path(tempfile.mkdtemp(prefix="bench-build-"))
    load_before = system.loadavg()
    try:
        source = fetch_source(version, work / "src")
        figures: dict[str, dict[str, Any]] = {}
        for name, cmake_args in (("before", args.before), ("after", after_args)):
            print(f"[{datetime.now():%H:%M:%S}] building {name}: CMAKE_ARGS={cmake_args!r}",
                  file=sys.stderr, flush=True)
            seconds = build(source, cmake_args, work / name / "wheel")
            figures[name] = {"cmake_args": cmake_args, "build_seconds": round(seconds, 1),
                             "wheel_mb": install(work / name / "wheel", work / name / "site"),
                             "probes": []}
        # Speeds alternate between the builds, so both see the same machine (shared, noisy).
        for _ in range(args.rounds):
            for name in ("before", "after"):
                figures[name]["probes"].append(
                    probe(work / name / "site", model, args.threads, args.runs))
        for figure in figures.values():
            probes = figure["probes"]
            figure["decode_tps"] = statistics.median(p["decode_tps"] for p in probes)
            figure["prompt_tps"] = statistics.median(p["prompt_tps"] for p in probes)
            figure["system_info"] = probes[-1]["system_info"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    before, after = figures["before"], figures["after"]
    results = {
        "install_seconds": {"before": before["build_seconds"], "after": after["build_seconds"],
                            "what": "pip wheel of llama-cpp-python from source, cache off"},
        "decode_tps": {"before": before["decode_tps"], "after": after["decode_tps"]},
        "build": {"timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
                  "llama_cpp_python": version, "model": str(model), "threads": args.threads,
                  "loadavg_before": load_before, "loadavg_after": system.loadavg(),
                  "before": before, "after": after,
                  "build_speedup": round(before["build_seconds"] / after["build_seconds"], 2),
                  "decode_ratio": round(after["decode_tps"] / before["decode_tps"], 3),
                  "prompt_ratio": round(after["prompt_tps"] / before["prompt_tps"], 3),
                  "decode_tps_probes": {k: [p["decode_tps"] for p in v["probes"]]
                                        for k, v in figures.items()}},
    }
    merge_into(args.output, results)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
