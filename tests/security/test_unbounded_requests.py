"""Attack: make the service hold without bound (issue 15, item 3; OWASP LLM10).

Huge bodies (declared, and chunked without a length), a dead-letter list that kept a 5 MB
message forever, a queue that grew without end, requests that each hold a stream open, and a
Redis without a memory cap. Each is tried here and must be refused or bounded.

The body limit and the open-stream cap run against a real web server (uvicorn, real Valkey; no
worker, so nothing is ever answered); the queue, the dead-letter list and the caps' details
in-process on a fake Redis.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import httpx
import pytest
import yaml

from assistant import keys, turns
from assistant.conversation import Runtime, answer_pending
from assistant.dispatch import Dispatcher
from assistant.envelope import ChatMessage
from assistant.errors import Throttled
from assistant.limits import Limits
from assistant.settings import Settings
from integrations.web import api, errors
from integrations.web.deps import WebState
from tests.auxil.factories import inbound
from tests.auxil.fake_celery import QUEUE, FakeCelery, fake_backend
from tests.auxil.fake_engine import FakeEngine
from tests.auxil.stack import ROOT, Stack

LIMIT = 65536
OPEN_STREAMS = 2


@pytest.fixture(scope="module")
def web_only(redis_server: str, model_path: Path) -> Iterator[Stack]:
    """The web server alone: what it accepts, never answered by a worker."""
    from tests.conftest import _new_stack

    stack = _new_stack(redis_server, model_path, "security-unbounded",
                       ASSISTANT_MAX_BODY_BYTES=str(LIMIT),
                       ASSISTANT_MAX_OPEN_STREAMS=str(OPEN_STREAMS),
                       ASSISTANT_REPLY_TIMEOUT="6")
    try:
        stack.start_web()
        yield stack
    finally:
        stack.close()


def raw_request(stack: Stack, head: str, body_parts: list[bytes], pause: float = 0.0
                ) -> tuple[int, dict[str, Any], float]:
    """Send a request by hand (so a body can lie or never end); the status, JSON body, and
    the seconds until the answer came."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", stack.port), timeout=10) as sock:
        sock.sendall(head.encode())
        try:
            for part in body_parts:
                sock.sendall(part)
                time.sleep(pause)
        except OSError:
            pass  # the server answered and closed while we were still sending: fine
        received = b""
        while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    elapsed = time.monotonic() - started
    status = int(received.split(b" ", 2)[1])
    body = json.loads(received.split(b"\r\n\r\n", 1)[1] or b"{}")
    return status, body, elapsed


ROUTES = ["/api/chat", "/v1/chat/completions", "/admin/login", "/telegram/webhook",
          "/no/such/route"]


@pytest.mark.parametrize("path", ROUTES)
def test_a_declared_huge_body_is_refused_before_it_is_sent(web_only: Stack, path: str) -> None:
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {50 * 1024 * 1024}\r\n\r\n")
    status, body, elapsed = raw_request(web_only, head, [])  # not one byte of the body
    assert status == 413
    assert body["error"]["code"] == 413 and body["error"]["type"] == "request_too_large"
    assert elapsed < 5


@pytest.mark.parametrize("path", ROUTES)
def test_a_chunked_body_is_cut_off_at_the_limit(web_only: Stack, path: str) -> None:
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"x" * 16384
    # Twice the limit, and no last chunk: a server reading it all would wait forever.
    parts = [f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"] * (2 * LIMIT // len(chunk))
    status, body, _ = raw_request(web_only, head, parts)
    assert status == 413
    assert body == {"error": {"message": f"the request body is larger than {LIMIT:,} bytes",
                              "type": "request_too_large", "code": 413}}


def test_a_body_under_the_limit_still_reaches_the_route(web_only: Stack) -> None:
    response = httpx.post(f"{web_only.url}/api/chat", content=b'{"text": ""}',
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 422  # the route's own validation, not the guard


def test_one_user_cannot_hold_more_than_its_share_of_open_streams(web_only: Stack) -> None:
    """Each waiting request holds a connection and a subscription: at most N per user."""
    statuses: list[int] = []
    opened = threading.Barrier(OPEN_STREAMS + 1)

    def hold() -> None:
        with httpx.stream("POST", f"{web_only.url}/api/chat", timeout=30, json={
                "text": "hello", "user_id": "greedy", "stream": True}) as response:
            statuses.append(response.status_code)
            opened.wait()
            for _ in response.iter_lines():
                pass  # until the reply timeout ends the stream

    holders = [threading.Thread(target=hold) for _ in range(OPEN_STREAMS)]
    for holder in holders:
        holder.start()
    opened.wait(timeout=20)
    refused = httpx.post(f"{web_only.url}/api/chat", timeout=30,
                         json={"text": "one more", "user_id": "greedy"})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["error"]["code"] == 429
    assert stream_status(web_only, "someone-else") == 200  # another user is not affected
    for holder in holders:
        holder.join(timeout=30)
    assert statuses == [200] * OPEN_STREAMS
    assert stream_status(web_only, "greedy") == 200  # the slots came back with the streams


def stream_status(stack: Stack, user_id: str) -> int:
    """Open a streamed request and leave at once (the server gives the slot back)."""
    with httpx.stream("POST", f"{stack.url}/api/chat", timeout=30, json={
            "text": "hi", "user_id": user_id, "stream": True}) as response:
        return response.status_code


def test_open_stream_slots_are_given_back_and_expire(tmp_path: Path) -> None:
    server = fakeredis.FakeServer()
    client = fakeredis.FakeRedis(server=server)
    celery = FakeCelery(client)
    settings = Settings(ASSISTANT_MAX_OPEN_STREAMS="2", ASSISTANT_REPLY_TIMEOUT="1")
    state = WebState(settings=settings, client=client,
                     aclient=fakeredis.FakeAsyncRedis(server=server),
                     backend=fake_backend(celery),  # type: ignore[arg-type]
                     dispatcher=Dispatcher(client, fake_backend(celery)))  # type: ignore[arg-type]

    async def scenario() -> None:
        first, _ = await state.open_stream(inbound("one"))
        second, _ = await state.open_stream(inbound("two"))
        with pytest.raises(Throttled):
            await state.open_stream(inbound("three"))
        await first.__aexit__(None, None, None)
        third, _ = await state.open_stream(inbound("three"))
        await second.__aexit__(None, None, None)
        await third.__aexit__(None, None, None)

    asyncio.run(scenario())
    key = keys.open_streams("web", "u1")
    assert client.zcard(key) == 0
    # A web process that died never gives its slots back: they lapse at their deadline.
    client.zadd(key, {"lost-1": time.time() - 1, "lost-2": time.time() - 1})

    async def after_a_crash() -> None:
        listener, _ = await state.open_stream(inbound("four"))
        await listener.__aexit__(None, None, None)

    asyncio.run(after_a_crash())  # would be refused if the lost slots still counted
    assert client.zcard(key) == 0


def in_process(server: fakeredis.FakeServer, limits: Limits) -> tuple[Any, FakeCelery]:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    client = fakeredis.FakeRedis(server=server)
    celery = FakeCelery(client)
    state = WebState(settings=Settings(ASSISTANT_REPLY_TIMEOUT="1"), client=client,
                     aclient=fakeredis.FakeAsyncRedis(server=server),
                     backend=fake_backend(celery),  # type: ignore[arg-type]
                     dispatcher=Dispatcher(client, fake_backend(celery), limits=limits))  # type: ignore[arg-type]
    app = FastAPI()
    app.state.web = state
    errors.install(app)
    app.include_router(api.router)
    return TestClient(app), celery


def test_past_the_hard_queue_depth_new_messages_get_503_with_retry_after() -> None:
    server = fakeredis.FakeServer()
    http, celery = in_process(server, Limits(hard_queue_depth=5))
    for number in range(5):
        celery.send_task("assistant.answer_conversation", args=[str(number)])
    with http:
        response = http.post("/api/chat", json={"text": "hello", "conversation_id": "c9"})
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json() == {"error": {
        "message": "The service is unavailable or busy; try again in a moment.",
        "type": "overloaded", "code": 503}}
    client = fakeredis.FakeRedis(server=server)
    assert client.llen(QUEUE) == 5  # nothing was queued...
    assert client.keys("assistant:pending:*") == [] and client.keys("assistant:dedupe:*") == []


def test_a_poison_message_leaves_a_bounded_dead_letter_entry_that_expires(
        runtime: Runtime) -> None:
    class Exploding(FakeEngine):
        def stream(self, request):  # type: ignore[no-untyped-def]
            raise RuntimeError("boom")

    runtime.engine = Exploding()
    history = [ChatMessage(role="user", text="x" * 100) for _ in range(5000)]
    poison = inbound("y" * 5_000_000, channel="poison", history=history)
    turns.submit(runtime.client, poison)
    for _ in range(runtime.max_deliveries):
        with pytest.raises(RuntimeError):
            answer_pending(runtime, poison.conversation)
    answer_pending(runtime, poison.conversation)
    (raw,) = runtime.client.lrange(turns.DEAD_LETTER_KEY, 0, -1)
    entry = json.loads(raw)
    assert len(raw) < 2048  # was the whole 5 MB message and its 5,000-message history
    assert entry["message_id"] == poison.message_id
    assert entry["excerpt"] == "y" * turns.DEAD_LETTER_EXCERPT_CHARS
    assert entry["text_chars"] == 5_000_000 and entry["history_messages"] == 5000
    assert 0 < runtime.client.ttl(turns.DEAD_LETTER_KEY) <= keys.DEAD_LETTER_TTL_SECONDS


def test_the_dead_letter_list_keeps_only_the_newest_entries(fake_redis: Any) -> None:
    for number in range(turns.DEAD_LETTER_MAX_ENTRIES + 10):
        turns.dead_letter(fake_redis, inbound(f"m{number}", message_id=f"id{number}"), "x")
    kept = [json.loads(e)["message_id"] for e in fake_redis.lrange(turns.DEAD_LETTER_KEY, 0, -1)]
    assert len(kept) == turns.DEAD_LETTER_MAX_ENTRIES
    assert kept[0] == "id10" and kept[-1] == f"id{turns.DEAD_LETTER_MAX_ENTRIES + 9}"


def test_redis_has_a_memory_cap_and_never_evicts(tmp_path: Path) -> None:
    import redis

    from assistant.cli import start_embedded_valkey

    server = start_embedded_valkey(tmp_path / "valkey", Settings().redis_maxmemory)
    try:
        # Behind a password: a local process without it can neither read nor write.
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=server.port).get("anything")
        assert oct((tmp_path / "valkey" / "password").stat().st_mode & 0o777) == "0o600"
        client = redis.Redis.from_url(server.url)
        assert int(client.config_get("maxmemory")["maxmemory"]) == 1 << 30
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        client.close()
    finally:
        server.stop()
    command = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["redis"]["command"]
    assert command[command.index("--maxmemory") + 1].startswith("${ASSISTANT_REDIS_MAXMEMORY")
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"

