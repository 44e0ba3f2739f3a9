"""Slack end to end: signed events → web (bolt) → Redis → real worker + SmolLM2 → fake Slack.

Asserts on what reached the fake Slack Web API and on the traced prompt, never on wording.
(That model output cannot ping ``<!channel>`` is tested in ``test_sender.py``: the real model
cannot be made to write it on demand.)
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from assistant import turns
from assistant.envelope import ConversationKey, Reply, reply_id_for
from assistant.stream import stored_reply
from integrations.slack.convert import dedupe_id_for, message_id_for, to_mrkdwn
from tests.auxil.stack import Stack
from tests.slack.fake_slack import BOT_USER_ID, FakeSlack, event_body, sign

pytestmark = pytest.mark.integration

SECRET = "test-secret"
CHANNEL = "C1"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeSlack]:
    server = FakeSlack()
    yield server
    server.close()


@pytest.fixture(scope="module")
def slack_stack(redis_server: str, model_path: Path, fake: FakeSlack) -> Iterator[Stack]:
    from tests.conftest import _new_stack

    stack = _new_stack(redis_server, model_path, "slack", SLACK_BOT_TOKEN="xoxb-test",
                       SLACK_SIGNING_SECRET=SECRET, SLACK_API_URL=fake.api_url,
                       ASSISTANT_TRACE_PROMPTS="true", ASSISTANT_MAX_TOKENS="120")
    try:
        stack.start_web()
        stack.start_worker("w1")
        yield stack
    finally:
        stack.close()


def deliver(stack: Stack, event: dict[str, Any], event_id: str, **headers: str) -> None:
    body = json.dumps(event_body(event, event_id)).encode()
    response = httpx.post(f"{stack.url}/slack/events", content=body,
                          headers=sign(SECRET, body) | headers, timeout=10)
    assert response.status_code == 200, response.text


def mention(ts: str, text: str) -> dict[str, Any]:
    return {"type": "app_mention", "user": "U1", "text": f"<@{BOT_USER_ID}> {text}", "ts": ts,
            "channel": CHANNEL, "event_ts": ts}


def thread_message(ts: str, thread_ts: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "message", "channel_type": "channel", "user": "U1", "text": text,
            "ts": ts, "thread_ts": thread_ts, "channel": CHANNEL, "event_ts": ts} | extra


def answered(stack: Stack, fake: FakeSlack, ts: str, thread_ts: str) -> Reply:
    """Wait until the message ``ts`` is answered and delivered; returns the stored reply."""
    message_id = message_id_for(dedupe_id_for("T1", CHANNEL, ts))
    conversation = ConversationKey(platform="slack", workspace="T1", channel=CHANNEL,
                                   thread=thread_ts)
    client = redis.Redis.from_url(stack.redis_url)
    found: list[Reply] = []

    def delivered() -> bool:
        # The pending list is trimmed only after the sender's finish() returned.
        reply = stored_reply(client, conversation, message_id)
        if reply is None or client.exists(turns.pending_key(conversation)):
            return False
        found.append(reply)
        return True

    try:
        fake.wait_for(delivered, timeout=90)
    finally:
        client.close()
    return found[-1]


def test_a_mention_is_answered_in_its_thread_and_edited_in_place(slack_stack: Stack,
                                                                 fake: FakeSlack) -> None:
    root = "1000.000001"
    before = len(fake.calls)
    deliver(slack_stack, mention(root, "Tell me a short story about a kite."), "EvA1")
    # Slack's retry of the same event (as after an http_timeout) is answered once.
    deliver(slack_stack, mention(root, "Tell me a short story about a kite."), "EvA1",
            **{"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})
    reply = answered(slack_stack, fake, root, root)
    calls = fake.calls[before:]
    posts = [c for c in calls if c.method == "chat.postMessage"]
    assert len(posts) == 1, posts
    assert posts[0].args["thread_ts"] == root and posts[0].args["channel"] == CHANNEL
    placeholder_index = calls.index(posts[0])
    edits = [c for c in calls if c.method == "chat.update"]
    assert edits, "the reply should be edited in place"
    assert all(calls.index(e) > placeholder_index for e in edits)
    # Every edit targets the placeholder: its ts is what the fake handed out for that post.
    assert len({e.args["ts"] for e in edits}) == 1
    gaps = [b.at - a.at for a, b in zip(edits, edits[1:], strict=False)]
    gaps.append(edits[0].at - posts[0].at)  # the first edit waits for the placeholder too
    assert all(gap >= 0.9 for gap in gaps), gaps
    assert edits[-1].args["text"] == to_mrkdwn(reply.text)


def test_a_follow_up_in_the_thread_is_answered_with_the_first_turn_in_memory(
        slack_stack: Stack, fake: FakeSlack) -> None:
    root = "2000.000001"
    deliver(slack_stack, mention(root, "My name is Zebulon."), "EvB1")
    first = answered(slack_stack, fake, root, root)
    deliver(slack_stack, thread_message("2000.000002", root, "What is my name?"), "EvB2")
    answered(slack_stack, fake, "2000.000002", root)
    follow_up_id = message_id_for(dedupe_id_for("T1", CHANNEL, "2000.000002"))
    prompt = slack_stack.traced_prompt(reply_id_for([follow_up_id]))
    assert [(m["role"], m["text"]) for m in prompt[1:]] == [
        ("user", "My name is Zebulon."),
        ("assistant", first.text),
        ("user", "What is my name?"),
    ]


def test_a_bot_message_in_the_thread_is_ignored(slack_stack: Stack, fake: FakeSlack) -> None:
    root = "3000.000001"
    deliver(slack_stack, mention(root, "Hello"), "EvC1")
    answered(slack_stack, fake, root, root)
    before = len(fake.calls)
    deliver(slack_stack, thread_message("3000.000002", root, "beep", bot_id="B2",
                                        subtype="bot_message"), "EvC2")
    deliver(slack_stack, thread_message("3000.000003", root, "me", user=BOT_USER_ID,
                                        bot_id="BBOT"), "EvC3")
    time.sleep(3)
    assert fake.calls[before:] == []


def test_a_rate_limited_edit_delays_but_does_not_lose_the_reply(slack_stack: Stack,
                                                                fake: FakeSlack) -> None:
    root = "4000.000001"
    before = len(fake.calls)
    fake.rate_limit("chat.update", times=3)
    deliver(slack_stack, mention(root, "Say something nice."), "EvD1")
    reply = answered(slack_stack, fake, root, root)
    calls = fake.calls[before:]
    assert sum(1 for c in calls if c.method == "chat.update") >= 4  # 3 refused, then shown
    final = [c for c in calls if c.method == "chat.update"][-1]
    assert final.args["text"] == to_mrkdwn(reply.text)
    assert len([c for c in calls if c.method == "chat.postMessage"]) == 1
