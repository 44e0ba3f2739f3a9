"""A worker node whose consumer stopped fetching restarts itself instead of looking alive.

Celery's Redis consumer can reconnect after a broker restart and never fetch again
(celery/celery#8030, #9054, #10205): the node keeps its heartbeat and ``/readyz`` says ready,
while every message waits until a client times out. Here the stop is made on purpose, with
Celery's own remote control (``cancel_consumer`` on the shared queue), on a real worker and
the real model: the node must notice within ``ASSISTANT_CONSUMER_STUCK_SECONDS`` (5 s here),
shut down with status 75 (EX_TEMPFAIL) and say why, and the waiting message must be answered
by the node that replaces it, without the client sending anything twice.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import httpx
import pytest
from celery import Celery

from assistant.keys import TURNS_QUEUE

pytestmark = pytest.mark.integration


def test_a_node_whose_consumer_stopped_restarts_and_the_message_is_answered(
        make_stack: Any) -> None:
    stack = make_stack(ASSISTANT_CONSUMER_STUCK_SECONDS="5", ASSISTANT_MAX_TOKENS="8",
                       ASSISTANT_REPLY_TIMEOUT="120")
    worker = stack.start_worker("w1")
    stack.start_web()
    control = Celery(broker=stack.redis_url)
    deadline = time.monotonic() + 60
    replies: list[Any] = []
    while not replies and time.monotonic() < deadline:  # its control channel may lag "ready"
        replies = control.control.cancel_consumer(TURNS_QUEUE, destination=["w1@test"],
                                                  reply=True, timeout=3)
    assert replies, "the worker did not answer the remote control"
    control.close()

    answer: dict[str, httpx.Response] = {}
    body = {"text": "Hello!", "conversation_id": uuid.uuid4().hex,
            "message_id": uuid.uuid4().hex}
    asking = threading.Thread(target=lambda: answer.update(response=httpx.post(
        f"{stack.url}/api/chat", json=body, timeout=150)))
    asking.start()
    started = time.monotonic()
    status = worker.wait(timeout=60)
    noticed_after = time.monotonic() - started
    assert status == 75, f"worker exited with {status}"
    log = (stack.log_dir / "worker-w1.log").read_text()
    assert "the consumer stopped" in log
    assert noticed_after < 40  # 5 s stuck + 2 s rounds + a warm shutdown

    stack.start_worker("w2")  # what a process manager does
    asking.join(timeout=150)
    response = answer["response"]
    assert response.status_code == 200, response.text
    assert response.json()["reply"].strip()
