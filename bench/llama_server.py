"""llama.cpp's own ``llama-server`` as a bench anchor (issue 20: continuous batching).

``scripts/llama-server.sh`` builds it from the llama.cpp sources vendored in the pinned
llama-cpp-python sdist, with the engine's options (native CPU, AMX kernels off), into the
same cache as the engine's wheel; ``binary()`` finds that build (None when it was never
built: the anchor is then left out of the run, and the bench says so).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def binary() -> Path | None:
    """The build ``scripts/llama-server.sh`` would use for the pinned version, if present."""
    found = re.search(r'"llama-cpp-python==([0-9.]+)"', (ROOT / "pyproject.toml").read_text())
    if found is None:
        return None
    cache = Path(os.environ.get("LLAMA_WHEEL_DIR") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "assistant-wheels")
    builds = sorted(cache.glob(f"llama-server-{found.group(1)}-*/llama-server"))
    return builds[-1] if builds else None


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running(model: Path, slots: int, context_per_slot: int, threads: int,
            log_path: Path) -> Iterator[str]:
    """``llama-server -np slots`` on ``model`` (continuous batching is on by default); yields
    its base URL once ``/health`` answers. Each slot gets ``context_per_slot`` tokens (the
    server splits ``-c`` between its slots)."""
    path = binary()
    if path is None:
        raise FileNotFoundError("llama-server is not built: run scripts/llama-server.sh")
    port = _free_port()
    command = [str(path), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
               "-np", str(slots), "-c", str(context_per_slot * slots), "-t", str(threads),
               "-tb", str(threads), "--no-webui"]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"llama-server exited:\n{log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("llama-server did not start")
            time.sleep(0.3)
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
