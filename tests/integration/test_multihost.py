"""Workers on several hosts against one Redis; one host dies mid-load; nothing is lost or doubled.

The hosts are network namespaces on this machine (tests/auxil/netns.py): Redis on one, a worker
on each of two others, all behind a bridge in a private 10.231.<n>.0/24; the web server runs in
the root namespace. A steady load of multi- and single-turn conversations goes through
``POST /api/chat``; meanwhile worker host w1 is unplugged (its link goes down) and its worker
SIGKILLed while it is generating a reply. Its message comes back after the visibility timeout
(10 s here) and kombu's 5 s sweep, w2 takes it once the dead worker's conversation lock (15 s)
has expired, and every message is answered exactly once. docs/scaling.md explains the setup.

Needs root, iproute2 and permission to create network namespaces; it is skipped, saying which
is missing, otherwise.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.auxil import netns
from tests.auxil.hosts import HostStack
from tests.auxil.stack import ROOT, Stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

LOG_DIR = ROOT / "test-artifacts" / "logs" / "multihost"
MULTI_TURN = 6  # conversations of TURNS sequential turns each
TURNS = 5
SINGLE_TURN = 10  # one-message conversations, one a second
TOTAL = MULTI_TURN * TURNS + SINGLE_TURN  # 40 messages


@dataclass
class Sent:
    conversation_id: str
    message_id: str
    text: str
    status: int = 0
    body: dict[str, Any] = field(default_factory=dict)
    error: str = ""


@dataclass
class WorkerLog:
    """What one worker's JSON log says: turns it answered and tasks it started/finished."""

    answered: list[dict[str, Any]]  # the "answered N message(s)" records
    received: list[str]  # task ids, in order
    finished: Counter[str]  # task ids that succeeded, retried or failed, with how often

    @classmethod
    def read(cls, text: str) -> WorkerLog:
        answered: list[dict[str, Any]] = []
        received: list[str] = []
        finished: Counter[str] = Counter()
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            message = str(record.get("msg", ""))
            if message.startswith("answered "):
                answered.append(record)
            task = _task_id(message)
            if task is None:
                continue
            if message.endswith("] received"):
                received.append(task)
            elif "] succeeded in" in message or "] retry:" in message or "] raised" in message:
                finished[task] += 1
        return cls(answered, received, finished)

    @property
    def in_flight(self) -> list[str]:
        received = Counter(self.received)
        return [task for task in received if received[task] > self.finished[task]]


def _task_id(message: str) -> str | None:
    start = message.find("assistant.answer_conversation[")
    if start < 0:
        return None
    start += len("assistant.answer_conversation[")
    end = message.find("]", start)
    return message[start:end] if end > start else None


@pytest.fixture
def lab() -> Iterator[netns.Lab]:
    reason = netns.unavailable()
    if reason is not None:
        pytest.skip(f"multi-host test needs network namespaces: {reason}")
    made = netns.Lab()
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def hosts(lab: netns.Lab, model_path: Path) -> Iterator[tuple[netns.Lab, HostStack]]:
    shutil.rmtree(LOG_DIR, ignore_errors=True)  # "ready." in an old log would fool the wait
    LOG_DIR.mkdir(parents=True)
    redis_host = lab.add_host("redis")
    lab.add_host("w1")
    lab.add_host("w2")
    stack = HostStack(
        f"redis://{redis_host.address}:{HostStack.REDIS_PORT}/0", model_path, LOG_DIR,
        ASSISTANT_MAX_TOKENS="24", ASSISTANT_VISIBILITY_TIMEOUT="10",
        ASSISTANT_REPLY_TIMEOUT="75", ASSISTANT_TRACE_PROMPTS="false",
        ASSISTANT_WORKER_METRICS_PORT="0", ASSISTANT_THREADS="1")
    try:
        stack.start_redis(redis_host)
        stack.start_web()  # root namespace: reaches Redis through the bridge
        stack.start_worker_on(lab.hosts["w1"])
        stack.start_worker_on(lab.hosts["w2"])
        yield lab, stack
    finally:
        stack.close()


def _send(url: str, item: Sent) -> None:
    try:
        response = httpx.post(f"{url}/api/chat", timeout=90, json={
            "text": item.text, "conversation_id": item.conversation_id,
            "message_id": item.message_id})
        item.status = response.status_code
        item.body = response.json() if response.status_code == 200 else {}
        item.error = "" if response.status_code == 200 else response.text[:500]
    except Exception as exc:  # noqa: BLE001 - recorded and asserted on below
        item.error = repr(exc)


def _answered_count(stack: Stack, name: str) -> int:
    return len(WorkerLog.read(stack.log(f"worker-{name}")).answered)


def test_a_worker_host_dies_mid_load_and_every_message_is_answered_once(
        hosts: tuple[netns.Lab, HostStack]) -> None:
    lab, stack = hosts
    conversations: dict[str, list[Sent]] = {}
    threads: list[threading.Thread] = []

    def conversation(index: int) -> None:
        conversation_id = uuid.uuid4().hex
        turns = conversations[conversation_id] = []
        time.sleep(index * 0.3)
        for turn in range(TURNS):
            item = Sent(conversation_id, uuid.uuid4().hex,
                        f"Conversation {index}, message {turn}: tell me about kites.")
            turns.append(item)
            _send(stack.url, item)  # the next turn only after this one's reply
            time.sleep(0.7)

    def single(index: int) -> None:
        conversation_id = uuid.uuid4().hex
        item = Sent(conversation_id, uuid.uuid4().hex, f"Single {index}: what is a river?")
        conversations[conversation_id] = [item]
        _send(stack.url, item)

    def singles() -> None:
        for index in range(SINGLE_TURN):
            thread = threading.Thread(target=single, args=(index,), daemon=True)
            threads.append(thread)
            thread.start()
            time.sleep(1.0)

    started = time.monotonic()
    for index in range(MULTI_TURN):
        threads.append(threading.Thread(target=conversation, args=(index,), daemon=True))
    threads.append(threading.Thread(target=singles, daemon=True))
    for thread in list(threads):
        thread.start()

    # Kill w1's host mid-load: once both workers have answered something, at the moment w1
    # has a task running (its log shows a task received and not finished).
    deadline = started + 30
    while time.monotonic() < deadline and not (
            time.monotonic() - started >= 4 and _answered_count(stack, "w1") >= 1
            and _answered_count(stack, "w2") >= 1):
        time.sleep(0.05)
    while time.monotonic() < deadline and not WorkerLog.read(stack.log("worker-w1")).in_flight:
        time.sleep(0.005)
    # SIGKILL first, the moment the task is seen running (a reply takes ≥ 150 ms, the kill
    # microseconds); then the machine drops off the network.
    stack.kill_worker("w1")
    lab.unplug("w1")
    killed_at = time.monotonic() - started
    w1_at_kill = WorkerLog.read(stack.log("worker-w1"))
    w2_answered_at_kill = _answered_count(stack, "w2")

    while any(thread.is_alive() for thread in threads) and time.monotonic() < started + 80:
        for thread in list(threads):
            thread.join(timeout=1)
    finished_at = time.monotonic() - started
    assert not any(thread.is_alive() for thread in threads), "the load did not finish in time"

    # Which worker answered what, for the record (the message ids of each turn).
    w1 = WorkerLog.read(stack.log("worker-w1"))
    w2 = WorkerLog.read(stack.log("worker-w2"))
    answered_by: dict[str, list[str]] = {}
    for name, log in (("w1", w1), ("w2", w2)):
        for record in log.answered:
            for message_id in str(record.get("message_id") or "").split(","):
                answered_by.setdefault(message_id, []).append(f"{name}: {record['msg']}")
    sent = [item for items in conversations.values() for item in items]
    (LOG_DIR / "answers.json").write_text(json.dumps({
        "killed_at_s": round(killed_at, 2), "finished_at_s": round(finished_at, 2),
        "w1_in_flight_at_kill": w1_at_kill.in_flight,
        "messages": [{"conversation_id": item.conversation_id, "message_id": item.message_id,
                      "status": item.status, "error": item.error,
                      "answered_by": answered_by.get(item.message_id, [])} for item in sent],
    }, indent=2))

    # Every request got its reply.
    assert len(sent) == TOTAL
    failed = [(item.message_id, item.status, item.error) for item in sent if item.status != 200]
    assert not failed, failed
    assert all(item.body["reply"].strip() for item in sent)

    # Every conversation holds each message once, each followed by exactly one reply, in order,
    # and the reply each request got is the one stored.
    stored_replies = 0
    for conversation_id, items in conversations.items():
        response = httpx.get(f"{stack.url}/api/conversations/{conversation_id}", timeout=10)
        assert response.status_code == 200, response.text
        stored = response.json()["messages"]
        assert [m["role"] for m in stored] == ["user", "assistant"] * len(items), stored
        # The server names each message; the client's id was only its retry token.
        assert not {m["message_id"] for m in stored[0::2]} & {i.message_id for i in items}
        assert [m["text"] for m in stored[0::2]] == [i.text for i in items]
        assert [(m["message_id"], m["text"]) for m in stored[1::2]] == [
            (i.body["message_id"], i.body["reply"]) for i in items]
        stored_replies += len(stored[1::2])
    assert stored_replies == TOTAL
    assert len({item.body["message_id"] for item in sent}) == TOTAL

    # Nothing failed for good, nothing is left waiting.
    client = redis.Redis.from_url(stack.redis_url, socket_timeout=5)
    try:
        assert client.llen("assistant:deadletter") == 0
        assert list(client.scan_iter("assistant:pending:*")) == []
    finally:
        client.close()

    # A client retrying after the outage (same message ids) gets the same replies, no new turn.
    for item in sent[:3]:
        again = Sent(item.conversation_id, item.message_id, item.text)
        _send(stack.url, again)
        assert (again.status, again.body) == (200, item.body)
    for conversation_id in {item.conversation_id for item in sent[:3]}:
        stored = httpx.get(f"{stack.url}/api/conversations/{conversation_id}").json()["messages"]
        assert len(stored) == 2 * len(conversations[conversation_id])

    # Both hosts served before the kill; w1 died mid-task and w2 took its task and the rest.
    assert len(w1_at_kill.answered) >= 1 and w2_answered_at_kill >= 1
    assert w1_at_kill.in_flight, "w1 should have been killed while running a task"
    assert set(w1_at_kill.in_flight) <= set(w2.received), (
        "the dead host's task should have come back to w2", w1_at_kill.in_flight)
    assert len(w2.answered) > w2_answered_at_kill
    assert len(w1.answered) == len(w1_at_kill.answered)  # nothing more from the dead host
