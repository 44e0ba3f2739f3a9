"""A worker whose engine cannot decode on this host refuses to start, before it takes any
message: nothing is consumed, retried or answered with an apology, ``/readyz`` says why, and
a sound worker started later answers the waiting message once."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.auxil.stack import Stack

pytestmark = pytest.mark.integration

# Imported by every Python process started with this directory on PYTHONPATH: the engine
# check's child (marked by ASSISTANT_ENGINE_CHECK) dies by SIGSEGV as soon as it starts, as
# an AMX build does on an AMX Xeon at its first decode; the worker itself is untouched.
CRASHING_ENGINE = """\
import os, signal
if os.environ.get("ASSISTANT_ENGINE_CHECK") == "1":
    print("system_info: CPU : AVX2 = 1 | AMX_INT8 = 1 |", flush=True)
    os.kill(os.getpid(), signal.SIGSEGV)
"""


def test_a_worker_whose_engine_crashes_refuses_to_start_and_consumes_nothing(
        make_stack: Any, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(CRASHING_ENGINE)
    stack: Stack = make_stack()
    stack.start_web()

    answer: dict[str, Any] = {}

    def ask() -> None:
        response = httpx.post(f"{stack.url}/api/chat", json={"text": "What is 2+2?"},
                              timeout=120)
        answer["status"] = response.status_code
        answer["body"] = response.json()

    asker = threading.Thread(target=ask)
    asker.start()
    client = redis.Redis.from_url(stack.redis_url)
    deadline = time.monotonic() + 20
    while client.llen("assistant.turns") == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.llen("assistant.turns") == 1, "the message should be queued"

    crashing_env = dict(stack.env)
    crashing_env["PYTHONPATH"] = f"{site}:{stack.env.get('PYTHONPATH', '')}".rstrip(":")
    log_path = stack.log_dir / "worker-crashing.log"
    with log_path.open("wb") as log:
        worker = subprocess.run(
            [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "--loglevel=INFO",
             "--pool=prefork", "--concurrency=1", "--hostname=crashing@test",
             "--without-gossip", "--without-mingle"],
            cwd=Path(__file__).resolve().parents[2], env=crashing_env, stdout=log,
            stderr=subprocess.STDOUT, timeout=120)
    output = log_path.read_text(errors="replace")
    assert worker.returncode == 3, output
    assert "refuses to start: engine self-test failed" in output
    assert "SIGSEGV" in output and "make install" in output
    # The AMX explanation only where the CPU has AMX (an AMD EPYC runs this suite too).
    host_has_amx = "amx_tile" in Path("/proc/cpuinfo").read_text()
    assert ("issue 20824" in output) == host_has_amx
    assert " ready." not in output
    # Nothing was taken: the task is still queued, no delivery was counted, no dead letter.
    assert client.llen("assistant.turns") == 1
    assert client.llen("assistant:deadletter") == 0
    assert not client.keys("assistant:deliveries:*")

    ready = httpx.get(f"{stack.url}/readyz", timeout=10)
    assert ready.status_code == 503
    failed = ready.json()["engine_selftest_failed"]
    assert "SIGSEGV" in failed["crashing@test"] and "make install" in failed["crashing@test"]

    # A sound worker takes the same message and answers it once.
    stack.start_worker("w1")
    asker.join(timeout=120)
    assert answer["status"] == 200, answer
    assert answer["body"]["reply"] and "Sorry" not in answer["body"]["reply"]
    deadline = time.monotonic() + 20
    while httpx.get(f"{stack.url}/readyz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "readyz should recover once a worker is up"
        time.sleep(0.5)
    client.close()
