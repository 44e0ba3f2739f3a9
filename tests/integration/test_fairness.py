"""Fairness through the whole stack: 429 + Retry-After, the daily quota, a busy queue's place.

Needs the web server to build its Dispatcher with ``Limits.from_settings(settings)``; until
``integrations/web/app.py`` does, these are skipped (the skip lifts itself).
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import httpx
import pytest
import redis

from tests.auxil.stack import ROOT
from tests.integration.sse import events

WEB_APP_ENFORCES_LIMITS = "Limits.from_settings" in (
    ROOT / "integrations" / "web" / "app.py").read_text(encoding="utf-8")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not WEB_APP_ENFORCES_LIMITS,
                       reason="integrations/web/app.py does not pass limits to its Dispatcher"),
]


def chat(url: str, text: str, user_id: str, **extra: Any) -> httpx.Response:
    return httpx.post(f"{url}/api/chat", json={"text": text, "user_id": user_id, **extra},
                      timeout=120)


def test_a_user_past_the_rate_gets_429_and_others_are_served(make_stack: Any) -> None:
    stack = make_stack(ASSISTANT_USER_RATE_LIMIT="2/minute", ASSISTANT_MAX_TOKENS="8")
    stack.start_worker("w1")
    stack.start_web()
    assert chat(stack.url, "Hi!", "ada").status_code == 200
    assert chat(stack.url, "Hi again!", "ada").status_code == 200
    refused = chat(stack.url, "And again!", "ada")
    assert refused.status_code == 429, refused.text
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert refused.json()["error"]["message"].startswith("You're sending messages faster")
    assert chat(stack.url, "Hello!", "bob").status_code == 200


def test_a_spent_daily_quota_gets_429(make_stack: Any) -> None:
    stack = make_stack(ASSISTANT_USER_DAILY_TOKENS="5")
    stack.start_worker("w1")
    stack.start_web()
    first = chat(stack.url, "Tell me about the sea.", "ada")
    assert first.status_code == 200 and first.json()["reply"]
    # The worker counts the turn just after it delivered the reply.
    client = redis.Redis.from_url(stack.redis_url)
    try:
        deadline = time.monotonic() + 10
        while not client.keys("assistant:quota:web:default:ada:*"):
            assert time.monotonic() < deadline, "the turn's tokens were not counted"
            time.sleep(0.05)
    finally:
        client.close()
    refused = chat(stack.url, "And the mountains?", "ada")
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["type"] == "quota_exceeded"
    assert int(refused.headers["Retry-After"]) > 0


def test_a_busy_queue_says_so_then_answers_everyone(make_stack: Any) -> None:
    stack = make_stack(ASSISTANT_MAX_QUEUE_DEPTH="1", ASSISTANT_MAX_TOKENS="8")
    stack.start_web()  # no worker yet: messages wait in the queue
    first: dict[str, Any] = {}

    def ask_first() -> None:
        response = chat(stack.url, "First!", "ada", conversation_id=uuid.uuid4().hex)
        first.update(status=response.status_code, body=response.json(),
                     position=response.headers.get("X-Queue-Position"))

    waiting = threading.Thread(target=ask_first)
    waiting.start()
    client = redis.Redis.from_url(stack.redis_url)
    try:
        deadline = time.monotonic() + 10
        while client.llen("assistant.turns") < 1:  # the first is in line before the second
            assert time.monotonic() < deadline, "the first message was not queued"
            time.sleep(0.05)
        received: list[tuple[str, Any]] = []
        with httpx.stream("POST", f"{stack.url}/api/chat", timeout=120,
                          json={"text": "Second!", "user_id": "bob", "stream": True}
                          ) as response:
            assert response.status_code == 200
            for kind, data in events(response):
                received.append((kind, data))
                if kind == "queued":
                    stack.start_worker("w1")  # now both get answered
        assert received[0][0] == "queued" and received[0][1]["position"] >= 1
        assert int(response.headers["X-Queue-Position"]) == received[0][1]["position"]
        assert received[-1][0] == "done" and received[-1][1]["reply"]
    finally:
        waiting.join(timeout=120)
        client.close()
    assert first["status"] == 200 and first["body"]["reply"] and first["position"] is None


def test_embeddings_are_charged_to_the_caller_like_chat(make_stack: Any) -> None:
    """``/v1/embeddings`` runs in the web process: a caller past its rate gets OpenAI's 429
    with Retry-After instead of unmetered CPU, and another caller is still served."""
    stack = make_stack(ASSISTANT_USER_RATE_LIMIT="2/minute")
    stack.start_web()

    def embed(user: str) -> httpx.Response:
        return httpx.post(f"{stack.url}/v1/embeddings", timeout=60, json={
            "model": "all-MiniLM-L6-v2", "input": "hello", "user": user})

    assert [embed("ada").status_code for _ in range(2)] == [200, 200]
    refused = embed("ada")
    assert refused.status_code == 429, refused.text
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert refused.json()["error"]["type"] == "rate_limited"
    assert embed("bob").status_code == 200
