"""A running `assistant up` (embedded Valkey, one Celery worker, the web server) to break.

The faults of issue 16, one at a time, against the real supervisor, worker, model and Valkey.
Every test leaves the stack serving (the supervisor restarts what a fault killed), and asserts
what must hold: exactly one real reply per message, a stream equal to the stored reply.
Figures (time to recover) go to ``test-artifacts/chaos.json`` for docs/operations.md.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from assistant.prompts import PromptLibrary
from tests.auxil.stack import ROOT, children, free_port
from tests.integration.sse import events

ARTIFACTS = ROOT / "test-artifacts"
MAX_TOKENS = 64


def cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@dataclass
class Up:
    """`assistant up` and what the tests need to reach into it."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    redis_url: str = ""
    figures: dict[str, Any] = field(default_factory=dict)

    def component(self, marker: str) -> int:
        """The pid of the supervisor's child whose command line holds ``marker``."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for pid in children(self.process.pid):
                if marker in cmdline(pid):
                    return pid
            time.sleep(0.2)
        raise AssertionError(f"no child {marker!r} of `assistant up`:\n{self.log()[-3000:]}")

    def worker_main(self) -> int:
        return self.component("celery")

    def pool_process(self) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pool = children(self.worker_main())
            if pool:
                return pool[0]
            time.sleep(0.2)
        raise AssertionError("the worker has no pool process")

    def valkey(self) -> int:
        # Valkey sets its own process title ("valkey-server 127.0.0.1:PORT").
        return self.component("valkey")

    def web(self) -> int:
        return self.component("uvicorn")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, socket_timeout=5)

    def wait_ready(self, timeout: float = 120) -> float:
        """Seconds until /readyz says 200."""
        started = time.monotonic()
        while True:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            assert time.monotonic() - started < timeout, f"not ready:\n{self.log()[-4000:]}"
            time.sleep(0.25)


@pytest.fixture(scope="package")
def up(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[Up]:
    tmp = tmp_path_factory.mktemp("chaos")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(
        ASSISTANT_ENV="test", ASSISTANT_PORT=str(port), ASSISTANT_MODEL=str(model_path),
        ASSISTANT_DATA_DIR=str(tmp / "data"), ASSISTANT_KV_CACHE_DIR=str(tmp / "kv"),
        # One llama thread: two threads spin-wait for each other, which on a machine shared
        # by several test suites (load 15 on 2 cores) made a 96-token turn take minutes.
        ASSISTANT_MAX_TOKENS=str(MAX_TOKENS), ASSISTANT_THREADS="1",
        ASSISTANT_REPLY_TIMEOUT="90", ASSISTANT_LOG_FORMAT="text",
        # Faults are found fast here, yet above a turn on a busy 2-core test machine (the
        # first one, reading the persona cold, took 10 s there; a whole turn up to 40 s).
        ASSISTANT_STALL_SECONDS="45", ASSISTANT_TURN_TIME_LIMIT="300",
        ASSISTANT_USER_RATE_LIMIT="", ASSISTANT_CHANNEL_RATE_LIMIT="",
        ASSISTANT_USER_DAILY_TOKENS="0", ASSISTANT_STRIKE_LIMIT="0",
        ASSISTANT_WORKER_METRICS_PORT="0", ASSISTANT_PUBLIC_OPS="true",  # /readyz details
        DATABASE_URL=f"sqlite:///{tmp / 'assistant.db'}", PYTHONUNBUFFERED="1")
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / "logs" / "chaos-up.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "assistant.cli", "up"], cwd=ROOT,
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
    stack = Up(process, f"http://127.0.0.1:{port}", log_path)
    try:
        deadline = time.monotonic() + 120
        while "started an embedded Valkey at " not in stack.log():
            assert process.poll() is None and time.monotonic() < deadline, stack.log()
            time.sleep(0.2)
        # The log masks the password; it is in the data directory's password file.
        shown = stack.log().split("embedded Valkey at ", 1)[1].split()[0]
        password = (tmp / "data" / "valkey" / "password").read_text().strip()
        assert password not in stack.log()
        stack.redis_url = shown.replace("***", password)
        stack.wait_ready()
        yield stack
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                process.kill()
        figures = ARTIFACTS / "chaos.json"
        figures.write_text(json.dumps(stack.figures, indent=2, sort_keys=True))


@dataclass
class Streamed:
    """What a streaming client saw: the joined tokens, the final event and its reply."""

    text: str = ""
    kinds: list[str] = field(default_factory=list)
    reply: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    broken: str | None = None  # the connection failed (the web server died)


def stream_chat(up: Up, text: str, conversation_id: str, message_id: str,
                on_first_token: Any = None) -> Streamed:
    seen = Streamed()
    try:
        with httpx.stream("POST", f"{up.url}/api/chat", timeout=httpx.Timeout(120, connect=5),
                          json={"text": text, "conversation_id": conversation_id,
                                "message_id": message_id, "stream": True}) as response:
            assert response.status_code == 200, response.read()
            for kind, data in events(response):
                seen.kinds.append(kind)
                if kind == "token":
                    seen.text += data["text"]
                    if on_first_token is not None and seen.kinds.count("token") == 1:
                        on_first_token()
                elif kind == "done":
                    seen.reply = data
                elif kind == "error":
                    seen.error = data
    except httpx.HTTPError as exc:
        seen.broken = repr(exc)
    return seen


def ask(up: Up, text: str, conversation_id: str, message_id: str,
        timeout: float = 120) -> httpx.Response:
    return httpx.post(f"{up.url}/api/chat", timeout=timeout,
                      json={"text": text, "conversation_id": conversation_id,
                            "message_id": message_id})


def answered_once(up: Up, conversation_id: str, texts: list[str]) -> list[dict[str, Any]]:
    """The conversation holds each user message once and exactly one real reply after
    each (no apology); returns the stored messages."""
    stored = httpx.get(f"{up.url}/api/conversations/{conversation_id}", timeout=30)
    assert stored.status_code == 200, stored.text
    messages = stored.json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"] * len(texts), messages
    assert [m["text"] for m in messages[::2]] == texts
    apology = PromptLibrary.load().render("dead_letter")
    for reply in messages[1::2]:
        assert reply["text"] and reply["text"] != apology, reply
    return list(messages)


def new_ids() -> tuple[str, str]:
    return uuid.uuid4().hex, uuid.uuid4().hex
