"""A worker with ASSISTANT_BATCH_SLOTS=4 (issue 20): one Celery process on the thread pool
answers four conversations at once through its one batching engine (worker/batching.py), its
heartbeat offers four places to the router, a reply alone equals a cold run's with the same
seed (also a turn restored from a state saved while other turns were writing), and a process
killed with four turns running loses none of their messages."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from assistant import keys
from assistant.engine import GenerationRequest
from assistant.envelope import ChatMessage
from assistant.pipeline import seed_for
from integrations.web.api import web_conversation
from tests.auxil.stack import Stack
from worker.llama import LlamaEngine

pytestmark = pytest.mark.integration

SLOTS = 4
MAX_TOKENS = 40
TEMPERATURE = 0.7
QUESTIONS = ["Write a short poem about the sea.", "How do bees make honey?",
             "Tell me about lighthouses in Norway.", "How do I boil an egg?"]


def chat(url: str, text: str, conversation_id: str) -> httpx.Response:
    return httpx.post(f"{url}/api/chat", json={"text": text, "conversation_id": conversation_id},
                      timeout=300)


def at_once(url: str, texts: list[str], conversation_ids: list[str]) -> list[httpx.Response]:
    """Send the messages together, one client thread each."""
    out: list[httpx.Response | None] = [None] * len(texts)

    def one(index: int) -> None:
        out[index] = chat(url, texts[index], conversation_ids[index])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert all(r is not None for r in out)
    return [r for r in out if r is not None]


def log_entries(stack: Stack, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stack.log(f"worker-{name}").splitlines()
            if line.startswith("{")]


def turn_spans(stack: Stack, name: str) -> dict[str, tuple[float, float]]:
    """Per conversation: when its turn entered the engine ("prompt of …") and when it was
    answered ("answered …"), from the worker's JSON log (its own clock)."""
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    for entry in log_entries(stack, name):
        conversation = entry.get("conversation")
        if not conversation:
            continue
        when = datetime.fromisoformat(entry["time"].replace("Z", "+00:00")).timestamp()
        if entry["msg"].startswith("prompt of"):
            starts.setdefault(conversation, when)
        elif entry["msg"].startswith("answered"):
            ends.setdefault(conversation, when)
    return {c: (starts[c], ends[c]) for c in starts if c in ends}


def most_at_once(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans],
                    key=lambda item: (item[0], item[1]))
    running = best = 0
    for _, change in events:
        running += change
        best = max(best, running)
    return best


def prompt_line(stack: Stack, name: str, conversation: str) -> list[str]:
    """The words of the conversation's engine lines: prompt of N tokens: R reused (S) in
    process P, slot K."""
    return [entry["msg"].replace(",", "").split() for entry in log_entries(stack, name)
            if entry.get("conversation") == conversation
            and entry["msg"].startswith("prompt of")]


def cold_reply(cold: LlamaEngine, stack: Stack, answer: dict[str, Any]) -> str:
    messages = tuple(ChatMessage.model_validate(m)
                     for m in stack.traced_prompt(answer["message_id"]))
    request = GenerationRequest(messages=messages, max_tokens=MAX_TOKENS,
                                temperature=TEMPERATURE, seed=seed_for(answer["message_id"]))
    cold.load().reset()  # nothing kept: the whole prompt is read
    return "".join(cold.stream(request)).strip()


def test_four_conversations_at_once_in_one_process(make_stack: Any, model_path: Path) -> None:
    stack: Stack = make_stack(ASSISTANT_BATCH_SLOTS=str(SLOTS),
                              ASSISTANT_MAX_TOKENS=str(MAX_TOKENS),
                              ASSISTANT_TEMPERATURE=str(TEMPERATURE),
                              ASSISTANT_TRACE_PROMPTS="true")
    (stack.log_dir / "worker-w1.log").unlink(missing_ok=True)
    stack.start_web()
    stack.start_worker("w1", concurrency=SLOTS, pool="threads")
    client = redis.Redis.from_url(stack.redis_url)
    try:
        # Routing counts turns: the node offers as many places as it has slots.
        assert client.get(keys.worker_alive("w1@test")) == str(SLOTS).encode()
        busy_seen: list[int] = []
        sampling = threading.Event()

        def sample_busy() -> None:
            while not sampling.is_set():
                busy_seen.append(int(client.zcard(keys.worker_busy("w1@test"))))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample_busy)
        sampler.start()
        ids = [uuid.uuid4().hex for _ in QUESTIONS]
        try:
            responses = at_once(stack.url, QUESTIONS, ids)
        finally:
            sampling.set()
            sampler.join()
        assert [r.status_code for r in responses] == [200] * SLOTS
        answers = [r.json() for r in responses]
        assert all(a["reply"] for a in answers)
        conversations = [web_conversation(i).redis_id for i in ids]
        time.sleep(0.5)  # the last log lines
        spans = turn_spans(stack, "w1")
        assert set(conversations) <= set(spans), stack.log("worker-w1")[-3000:]
        # They ran together, not one after another: several turns in the engine at once, and
        # several busy entries (one per turn) in the node's busy set at once.
        assert most_at_once([spans[c] for c in conversations]) >= 2, spans
        assert max(busy_seen) >= 2, busy_seen
        # In one process.
        pids = {prompt_line(stack, "w1", c)[0][-3] for c in conversations}
        assert len(pids) == 1, pids
        assert client.zcard(keys.worker_busy("w1@test")) == 0  # every turn freed its place

        cold = LlamaEngine(model_path, context_size=2048, threads=2, threads_batch=2)
        # A reply alone in the engine equals a cold run's with the same seed: a new
        # conversation, and the next turn of the first one, which starts from the state saved
        # from its slot while the other three were still writing or saving.
        alone_id = uuid.uuid4().hex
        alone = chat(stack.url, "Name three rivers in Europe.", alone_id)
        assert alone.status_code == 200
        assert alone.json()["reply"] == cold_reply(cold, stack, alone.json())
        follow = chat(stack.url, "Which word rhymes with sea?", ids[0])
        assert follow.status_code == 200
        assert follow.json()["reply"] == cold_reply(cold, stack, follow.json())
        time.sleep(0.5)
        lines = prompt_line(stack, "w1", conversations[0])
        assert len(lines) == 2 and lines[1][6] == "(saved)", lines
        assert int(lines[1][2]) - int(lines[1][4]) < 40, lines  # only the new message read
    finally:
        client.close()


def test_a_killed_batching_worker_loses_no_message(make_stack: Any) -> None:
    # The killed node's messages wait out the visibility timeout (+ kombu's 5 s sweep), then
    # the other node answers them; the web waits for their replies meanwhile.
    stack: Stack = make_stack(ASSISTANT_BATCH_SLOTS=str(SLOTS), ASSISTANT_MAX_TOKENS="60",
                              ASSISTANT_VISIBILITY_TIMEOUT="10", ASSISTANT_REPLY_TIMEOUT="400")
    stack.start_web()
    stack.start_worker("w1", concurrency=SLOTS, pool="threads")
    client = redis.Redis.from_url(stack.redis_url)
    try:
        ids = [uuid.uuid4().hex for _ in QUESTIONS]
        result: list[list[httpx.Response]] = []
        sender = threading.Thread(target=lambda: result.append(at_once(stack.url, QUESTIONS,
                                                                       ids)))
        sender.start()
        deadline = time.monotonic() + 120
        while client.zcard(keys.worker_busy("w1@test")) < 2:
            assert time.monotonic() < deadline, stack.log("worker-w1")[-3000:]
            time.sleep(0.05)
        stack.kill_worker("w1")  # with turns running: their messages are unacknowledged
        stack.start_worker("w2", concurrency=SLOTS, pool="threads")
        sender.join(timeout=600)
        responses = result[0]
        assert [r.status_code for r in responses] == [200] * SLOTS
        for conversation_id, response in zip(ids, responses, strict=True):
            assert response.json()["reply"]
            stored = httpx.get(f"{stack.url}/api/conversations/{conversation_id}").json()
            assert [m["role"] for m in stored["messages"]] == ["user", "assistant"]
        assert "] received" in stack.log("worker-w2")
    finally:
        client.close()
