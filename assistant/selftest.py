"""The engine's self-test: load the model in a child process and decode a few tokens.

The machine that builds is not the machine that runs (docs/operations.md, runbook "the worker
refuses to start"). A llama.cpp build can carry CPU kernels that crash on the host it lands on:
ggml's AMX path dies at the first decode on Xeons with AMX (llama.cpp issue 20824), and a
``-march=native`` build from another machine dies with SIGILL. The check runs in a child so a
crash costs that child; ``make install``, the worker's start and ``assistant doctor`` run it,
and a failed check stops the worker before it takes any message.

The child is ``python -m worker.engine_check`` (it imports llama_cpp, which the core must not);
callers pass its command, so this module only runs and reads it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import redis

from assistant import keys

RESULTS_KEY = keys.ENGINE_SELFTEST
"""Hash: worker node name → its last self-test (JSON); kept a day, read by ``/readyz``."""
RESULTS_TTL_SECONDS = 86400
CPU_FEATURES_OF_NOTE = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8",
                        "amx_bf16", "f16c", "fma", "asimd", "sve", "i8mm", "dotprod")
FIX_REBUILD = ("rebuild the engine on this host: `make install` (it rebuilds when the CPU or the "
               "flags change; ggml's AMX kernels stay off), or build a portable one with "
               "`make install LLAMA_PORTABLE=1` (no -march=native), e.g. for an image built "
               "on another machine")


@dataclass(frozen=True)
class SelfTestResult:
    """What the child did, and what to do if it failed."""

    ok: bool
    summary: str
    fix: str = ""
    returncode: int | None = None
    system_info: str = ""
    stage: str = ""
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def engine_check_command(model_path: Path, threads: int = 1) -> list[str]:
    """The child: ``python -m worker.engine_check``, with this interpreter."""
    return [sys.executable, "-m", "worker.engine_check", str(model_path),
            "--threads", str(threads)]


def host_cpu_features(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """The features of this host's CPU that decide which llama.cpp kernels can run."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return []
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            present = set(value.split())
            return [feature for feature in CPU_FEATURES_OF_NOTE if feature in present]
    return []


def run(command: list[str], *, timeout: float = 180.0,
        cpu_features: list[str] | None = None) -> SelfTestResult:
    """Run the child and explain how it ended."""
    features = host_cpu_features() if cpu_features is None else cpu_features
    started = time.monotonic()
    env = dict(os.environ, ASSISTANT_ENGINE_CHECK="1")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        return _explain(None, out, "", features, time.monotonic() - started, timeout)
    except OSError as exc:
        return SelfTestResult(False, f"the engine check could not start: {exc}",
                              fix="reinstall: `make install`")
    return _explain(done.returncode, done.stdout, done.stderr, features,
                    time.monotonic() - started, timeout)


def _explain(returncode: int | None, stdout: str, stderr: str, features: list[str],
             seconds: float, timeout: float) -> SelfTestResult:
    fields = _fields(stdout)
    info = fields.get("system_info", "")
    stage = fields.get("stage", "started")
    where = {"started": "while loading the engine", "loaded": "while reading a prompt",
             "prompt read": "while generating"}.get(stage, stage)
    cpu = ", ".join(features) or "unknown"
    details: dict[str, Any] = {"cpu_features": features,
                               "llama_cpp_version": fields.get("llama_cpp_version", "")}
    base = SelfTestResult(False, "", returncode=returncode, system_info=info, stage=stage,
                          seconds=round(seconds, 2), details=details)

    def verdict(ok: bool, summary: str, fix: str = "") -> SelfTestResult:
        return replace(base, ok=ok, summary=summary, fix=fix)

    if returncode == 0 and "result" in fields:
        result = json.loads(fields["result"])
        details.update(result)
        return verdict(True, f"the engine decoded {result['tokens']} tokens "
                              f"({result['decode_seconds']} s)")
    if returncode is None:
        return verdict(False, f"the engine did not finish within {timeout:.0f} s "
                              f"({where})", fix=FIX_REBUILD)
    if returncode < 0:
        name = _signal_name(-returncode)
        summary = (f"the engine died with {name} {where} (build: {info or 'unknown'}; "
                   f"CPU: {cpu})")
        fix = FIX_REBUILD
        if "AMX" in info and any(f.startswith("amx") for f in features):
            fix = ("this build contains ggml's AMX kernels, which crash on this CPU "
                   "(llama.cpp issue 20824): " + FIX_REBUILD)
        elif name == "SIGILL":
            fix = ("the build uses CPU instructions this host does not have (was it built on "
                   "another machine?): " + FIX_REBUILD)
        return verdict(False, summary, fix=fix)
    if returncode == 3 and "result" in fields:
        details.update(json.loads(fields["result"]))
        return verdict(False, "the engine ran but produced no usable output "
                              "(non-finite logits or no token)", fix=FIX_REBUILD)
    last = _last_line(stderr) or _last_line(stdout) or f"exit status {returncode}"
    if stage == "started":
        return verdict(False, f"the model could not be loaded: {last}",
                              fix="check ASSISTANT_MODEL and ASSISTANT_MODELS_DIR, or pull the "
                                  "model again: `assistant model pull`")
    return verdict(False, f"the engine failed {where}: {last}", fix=FIX_REBUILD)


def _fields(stdout: str) -> dict[str, str]:
    """``name: value`` lines the child printed; a later line of the same name wins."""
    found: dict[str, str] = {}
    for line in stdout.splitlines():
        name, sep, value = line.partition(": ")
        if sep and name in ("system_info", "llama_cpp_version", "stage", "result"):
            found[name] = value.strip()
    return found


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _signal_name(number: int) -> str:
    try:
        return f"{signal.Signals(number).name} (signal {number})"
    except ValueError:
        return f"signal {number}"


def record(client: redis.Redis, node: str, result: SelfTestResult) -> None:
    """Keep a node's last self-test where ``/readyz`` can say why a worker is missing."""
    entry = {"at": time.time(), "ok": result.ok, "summary": result.summary, "fix": result.fix}
    with client.pipeline(transaction=False) as pipe:
        pipe.hset(RESULTS_KEY, node, json.dumps(entry))
        pipe.expire(RESULTS_KEY, RESULTS_TTL_SECONDS)
        pipe.execute()


def recent_failures(client: redis.Redis, within_seconds: float = 3600.0) -> dict[str, str]:
    """Nodes whose last self-test failed within the window: node → summary and fix."""
    failures: dict[str, str] = {}
    now = time.time()
    raw: dict[bytes | str, bytes | str] = client.hgetall(RESULTS_KEY)  # type: ignore[assignment, unused-ignore]
    for node, value in raw.items():
        try:
            entry = json.loads(value)
        except ValueError:
            continue
        if not entry.get("ok") and now - float(entry.get("at", 0)) <= within_seconds:
            name = node.decode() if isinstance(node, bytes) else node
            failures[name] = f"{entry.get('summary', '')}; fix: {entry.get('fix', '')}"
    return failures
