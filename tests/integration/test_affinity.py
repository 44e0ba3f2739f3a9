"""Conversation-affine routing with real worker processes: turns go back to the worker that
holds the conversation's state, a node of two pool processes reuses a conversation's state in
either process, and a message routed to a worker that died is still answered."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from assistant.engine import GenerationRequest
from assistant.envelope import ChatMessage
from assistant.pipeline import seed_for
from integrations.web.api import web_conversation
from tests.auxil.stack import Stack
from worker.affinity import direct_queue
from worker.llama import LlamaEngine

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


def prompt_lines(stack: Stack, name: str, conversation: str | None = None,
                 ) -> list[dict[str, Any]]:
    """The engine's per-turn lines (JSON logs), in order, of one conversation or of all: reuse
    and process. With no conversation named, also an idle engine's work on another process'
    cut-short save (it reads that conversation into its context): conversation None."""
    lines = []
    for line in stack.log(f"worker-{name}").splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if conversation is None and "state of a prompt" in entry["msg"] and \
                    "had cut short" in entry["msg"]:
                lines.append({"pid": int(entry["msg"].split()[-1]), "conversation": None})
            elif entry["msg"].startswith("prompt of") and conversation in (
                    None, entry.get("conversation")):
                words = entry["msg"].split()  # prompt of N tokens: R reused (source) in process P
                lines.append({"total": int(words[2]), "reused": int(words[4]),
                              "source": words[6].strip("()"), "pid": int(words[-1]),
                              "conversation": entry.get("conversation")})
    return lines


def last_before(lines: list[dict[str, Any]], turn: dict[str, Any]) -> dict[str, Any] | None:
    """What the process that answered `turn` read just before it, if anything."""
    earlier = [line for line in lines[:lines.index(turn)] if line["pid"] == turn["pid"]]
    return earlier[-1] if earlier else None


def saves_pending(stack: Stack, name: str) -> int:
    """Turns whose state save has not ended yet: the engine logs one line when it does."""
    started = ended = 0
    for line in stack.log(f"worker-{name}").splitlines():
        if line.startswith("{"):
            message = json.loads(line)["msg"]
            started += message.startswith("prompt of")
            ended += message.startswith("kept the state after")
    return started - ended


def test_a_node_of_two_processes_reuses_a_conversations_state_in_either_one(
    make_stack: Any, model_path: Path, tmp_path: Path,
) -> None:
    stack: Stack = make_stack(ASSISTANT_MAX_TOKENS="24", ASSISTANT_TEMPERATURE="0.7",
                              ASSISTANT_TRACE_PROMPTS="true",
                              ASSISTANT_KV_CACHE_DIR=str(tmp_path / "kv"))
    (stack.log_dir / "worker-w1.log").unlink(missing_ok=True)
    stack.start_web()
    stack.start_worker("w1", concurrency=2)
    conversation_id = uuid.uuid4().hex
    conversation = web_conversation(conversation_id).redis_id
    answers = []
    holder = None
    for turn in range(5):  # at once after each reply: the state may still be being saved
        # Keep the process that answered the last turn busy with another conversation, so that
        # this turn goes to the other one. Celery picks among idle processes as it likes: try
        # a few other conversations until one runs on the holder.
        occupier = None
        # The last turn's save has ended: an occupier arriving during it would cut it short,
        # and this turn would read its previous reply again (tests/integration/test_kv_reuse.py
        # tests that case); here each turn must find the whole previous turn saved.
        deadline = time.monotonic() + 60
        while saves_pending(stack, "w1"):
            assert time.monotonic() < deadline, stack.log("worker-w1")[-3000:]
            time.sleep(0.02)
        for _ in range(4 if holder else 0):
            other_id = uuid.uuid4().hex
            occupier = threading.Thread(target=chat, args=(stack.url, "Name a bird.", other_id))
            occupier.start()
            deadline = time.monotonic() + 60
            while not (started := prompt_lines(stack, "w1",
                                               web_conversation(other_id).redis_id)):
                assert time.monotonic() < deadline, stack.log("worker-w1")[-3000:]
                time.sleep(0.02)
            if started[0]["pid"] == holder:
                break
            occupier.join(120)
        response = chat(stack.url, f"Tell me about tea, part {turn}.", conversation_id)
        assert response.status_code == 200
        answers.append(response.json())
        if occupier is not None:
            occupier.join(120)
        holder = prompt_lines(stack, "w1", conversation)[-1]["pid"]
    time.sleep(1)  # the last log lines
    turns = prompt_lines(stack, "w1", conversation)
    assert len(turns) == 5, stack.log("worker-w1")[-3000:]
    assert len({t["pid"] for t in turns}) == 2, turns  # both processes answered it
    every = prompt_lines(stack, "w1")
    for turn in turns[1:]:
        # Only the new message is read, whoever answered the last turn: a process whose last turn
        # was this conversation's still holds it in its context; one that has read another
        # conversation since (an occupier may end before this turn is picked up, or the idle
        # process finishes an occupier's save the next occupier cut short) restores what was
        # saved.
        assert turn["total"] - turn["reused"] < 40, turns
        before = last_before(every, turn)
        expected = ("context" if before is not None and before["conversation"] == conversation
                    else "saved")
        assert turn["source"] == expected, every
    cold = LlamaEngine(model_path, context_size=2048, threads=2, threads_batch=2)
    for answer in answers:
        messages = tuple(ChatMessage.model_validate(m)
                         for m in stack.traced_prompt(answer["message_id"]))
        request = GenerationRequest(messages=messages, max_tokens=24, temperature=0.7,
                                    seed=seed_for(answer["message_id"]))
        cold.load().reset()  # nothing kept: the whole prompt is read
        assert "".join(cold.stream(request)).strip() == answer["reply"]


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
        # Recorded when the task ends, just after the reply went out.
        deadline = time.monotonic() + 10
        while affine_node(client) == holder and time.monotonic() < deadline:
            time.sleep(0.05)
        assert affine_node(client) != holder
    finally:
        client.close()
