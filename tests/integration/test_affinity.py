"""Conversation-affine routing with real worker processes: turns go back to the worker that
holds the conversation's state, and a message routed to a worker that died is still answered."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import httpx
import pytest
import redis

from tests.auxil.stack import Stack
from worker.affinity import direct_queue

pytestmark = pytest.mark.integration


def chat(url: str, text: str, conversation_id: str) -> httpx.Response:
    return httpx.post(f"{url}/api/chat", json={"text": text, "conversation_id": conversation_id},
                      timeout=120)


def tasks_received(stack: Stack, name: str) -> int:
    return stack.log(f"worker-{name}").count("] received")


def affine_node(client: redis.Redis) -> str:
    keys = client.keys("assistant:affinity:*")
    assert len(keys) == 1
    node = client.get(keys[0])
    assert node is not None
    return node.decode()


def test_every_turn_of_a_conversation_goes_to_the_same_worker(make_stack: Any) -> None:
    stack: Stack = make_stack(ASSISTANT_MAX_TOKENS="16")
    for old in stack.log_dir.glob("worker-*.log"):  # a previous run's, appended to otherwise
        old.unlink()
    stack.start_web()
    stack.start_worker("w1")
    stack.start_worker("w2")
    conversation_id = uuid.uuid4().hex
    for turn in range(5):
        response = chat(stack.url, f"Tell me more about tea, part {turn}.", conversation_id)
        assert response.status_code == 200 and response.json()["reply"]
        time.sleep(0.3)  # the turn's task has finished: its worker is idle again
    counts = sorted(tasks_received(stack, name) for name in ("w1", "w2"))
    assert counts == [0, 5], counts


def test_a_message_routed_to_a_killed_worker_is_answered_by_another(make_stack: Any) -> None:
    stack: Stack = make_stack(ASSISTANT_MAX_TOKENS="16", ASSISTANT_VISIBILITY_TIMEOUT="10")
    stack.start_web()
    stack.start_worker("w1")
    stack.start_worker("w2")
    client = redis.Redis.from_url(stack.redis_url)
    conversation_id = uuid.uuid4().hex
    try:
        assert chat(stack.url, "Hello there.", conversation_id).status_code == 200
        time.sleep(0.3)
        holder = affine_node(client)
        stack.kill_worker(holder.split("@")[0])  # its heartbeat key lives a few seconds more
        result: dict[str, httpx.Response] = {}
        sender = threading.Thread(
            target=lambda: result.update(r=chat(stack.url, "Still there?", conversation_id)))
        sender.start()
        deadline = time.monotonic() + 5
        routed = False
        while time.monotonic() < deadline and not routed:
            routed = client.llen(direct_queue(holder)) == 1
            time.sleep(0.05)
        assert routed, "the turn should have been sent to the dead worker's own queue"
        sender.join(timeout=120)
        response = result["r"]
        assert response.status_code == 200 and response.json()["reply"]
        assert client.llen(direct_queue(holder)) == 0
        stored = httpx.get(f"{stack.url}/api/conversations/{conversation_id}").json()["messages"]
        assert [m["role"] for m in stored] == ["user", "assistant", "user", "assistant"]
        assert affine_node(client) != holder
    finally:
        client.close()
