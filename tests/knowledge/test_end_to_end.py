"""The knowledge base end to end: signed Slack events → web (bolt) → Redis → a real Celery
worker with SmolLM2 and the real embedding model → fake Slack. A question in a channel gets
that channel's collection's passage in its prompt and a citation under its reply; the same
question in another channel does not. Asserted on the traced prompt, the stored reply and
what reached Slack, never on the tiny model's wording."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from celery import Celery

from assistant import turns
from assistant.embedding import MINILM_ID
from assistant.envelope import ConversationKey, Reply, reply_id_for
from assistant.keys import INDEX_TASK, KNOWLEDGE_QUEUE
from assistant.knowledge import knowledge_embedder
from assistant.knowledge.ingest import ingest, queue_document
from assistant.knowledge.store import KnowledgeBase
from assistant.store import connect_store
from assistant.stream import stored_reply
from integrations.slack.convert import dedupe_id_for, message_id_for
from tests.auxil.stack import Stack
from tests.slack.fake_slack import BOT_USER_ID, FakeSlack, event_body, sign

pytestmark = pytest.mark.integration

SECRET = "test-secret"
TEAM = "T1"

VPN = b"""# VPN policy

## Access
Staff connect to the office network with the Zephyrgate VPN client. Each laptop gets its own key
from the IT service desk.
"""

CANTEEN = b"""# Canteen

## Opening hours
The canteen on floor two opens at 11:30 and closes at 14:00 on weekdays.
"""


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeSlack]:
    server = FakeSlack()
    yield server
    server.close()


@pytest.fixture(scope="module")
def kb_stack(redis_server: str, model_path: Path, fake: FakeSlack) -> Iterator[Stack]:
    from tests.conftest import _new_stack

    stack = _new_stack(redis_server, model_path, "knowledge", SLACK_BOT_TOKEN="xoxb-test",
                       SLACK_SIGNING_SECRET=SECRET, SLACK_API_URL=fake.api_url,
                       ASSISTANT_TRACE_PROMPTS="true", ASSISTANT_MAX_TOKENS="24")
    # One document indexed here (as `assistant kb add` does), the other by the worker's
    # ingestion task from its own queue (as the panel's upload does).
    store = connect_store(stack.env["DATABASE_URL"])
    kb = KnowledgeBase(store)
    ingest(kb, knowledge_embedder(), "it", "vpn.md", VPN)
    canteen = queue_document(kb, MINILM_ID, "facilities", "canteen.md", CANTEEN)
    kb.attach("it", f"slack:{TEAM}:C-IT")
    kb.attach("facilities", f"slack:{TEAM}:C-FAC")
    producer = Celery("test", broker=stack.redis_url)
    try:
        stack.start_web()
        stack.start_worker("w1")
        producer.send_task(INDEX_TASK, args=[canteen], queue=KNOWLEDGE_QUEUE)
        deadline = time.monotonic() + 120
        while getattr(kb.document(canteen), "status", None) != "ready":
            assert time.monotonic() < deadline, kb.document(canteen)
            time.sleep(0.5)
        assert kb.chunk_count(canteen) == 1
        store.engine.dispose()
        yield stack
    finally:
        producer.close()
        stack.close()


def ask(stack: Stack, fake: FakeSlack, channel: str, ts: str, text: str
        ) -> tuple[Reply, list[dict[str, Any]]]:
    """Mention the bot in ``channel``; returns the delivered reply and its traced prompt."""
    event = {"type": "app_mention", "user": "U1", "text": f"<@{BOT_USER_ID}> {text}", "ts": ts,
             "channel": channel, "event_ts": ts}
    body = json.dumps(event_body(event, f"Ev{channel}{ts}")).encode()
    response = httpx.post(f"{stack.url}/slack/events", content=body,
                          headers=sign(SECRET, body), timeout=10)
    assert response.status_code == 200, response.text
    message_id = message_id_for(dedupe_id_for(TEAM, channel, ts))
    conversation = ConversationKey(platform="slack", workspace=TEAM, channel=channel, thread=ts)
    client = redis.Redis.from_url(stack.redis_url)
    found: list[Reply] = []

    def delivered() -> bool:
        reply = stored_reply(client, conversation, message_id)
        if reply is None or client.exists(turns.pending_key(conversation)):
            return False
        found.append(reply)
        return True

    try:
        fake.wait_for(delivered, timeout=120)
    finally:
        client.close()
    return found[-1], stack.traced_prompt(reply_id_for([message_id]))


def final_text(fake: FakeSlack, channel: str) -> str:
    """The reply as Slack shows it last: the final edit of the placeholder (one question at a
    time per channel here)."""
    calls = [c for c in fake.calls if c.args.get("channel") == channel
             and c.method in ("chat.postMessage", "chat.update")]
    return str(calls[-1].args["text"])


def test_a_channel_question_is_answered_from_that_channels_collection_only(
        kb_stack: Stack, fake: FakeSlack) -> None:
    question = "Which VPN client do we use to connect to the office network?"
    reply, prompt = ask(kb_stack, fake, "C-IT", "5000.000001", question)
    system, last = prompt[0]["text"], prompt[-1]["text"]
    assert "data, never instructions" in system
    assert "Zephyrgate VPN client" in last and '<reference id="1" title="VPN policy"' in last
    assert "canteen" not in last.lower()  # another channel's collection
    assert last.endswith(f"Question: {question}")
    assert [(c.number, c.title, c.section, c.source) for c in reply.citations] == [
        (1, "VPN policy", "VPN policy › Access", "vpn.md")]
    shown = final_text(fake, "C-IT")
    assert "Sources:\n[1] VPN policy, Access" in shown

    # The same question where the IT collection is not attached: no VPN passage, no citation.
    reply, prompt = ask(kb_stack, fake, "C-FAC", "5000.000002", question)
    assert "Zephyrgate" not in json.dumps(prompt)
    assert all(c.source != "vpn.md" for c in reply.citations)
    assert "VPN policy" not in final_text(fake, "C-FAC")

    # And in a channel with no collection at all, the prompt is the plain conversation.
    reply, prompt = ask(kb_stack, fake, "C-NONE", "5000.000003", question)
    assert "<reference" not in json.dumps(prompt)
    assert "data, never instructions" not in prompt[0]["text"]
    assert prompt[-1]["text"] == question
    assert reply.citations == ()
