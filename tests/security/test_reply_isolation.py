"""Attack: read or plant another person's reply (issue 15, item 1; docs/security.md).

Replies and token streams used to be keyed by the message id alone, and the web API let the
client choose it: posting someone's id returned their reply (steal), and posting an id before
its owner did made the worker "find" the attacker's reply and deliver it to them (plant),
across conversations and platforms (Telegram ids are ``uuid5`` of a counting update id).
Each attack is performed here, in both orders, and must fail: replies are keyed by the
conversation plus a server-made id, and a client's id is only a dedupe token.

The first tests drive the core with a fake engine (exact, fast); the rest a real stack: the
web server, a Celery worker with the real model, and Telegram's webhook against a fake Bot API.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import httpx
import pytest
import redis

from assistant import turns
from assistant.conversation import Runtime, answer_pending
from assistant.envelope import ConversationKey, Inbound, Reply, reply_id_for
from assistant.errors import ReplyTimeout
from assistant.memory import RedisConversationHistory
from assistant.stream import Listener, Publisher, reply_key, stored_reply
from integrations.telegram.convert import dedupe_id, message_id_for
from tests.auxil.fake_engine import FakeEngine
from tests.auxil.stack import Stack
from tests.telegram import fake_telegram as tg
from tests.telegram.fake_telegram import TOKEN, FakeTelegram
from tests.telegram.test_end_to_end import BOT, SECRET, post, wait_for_final_edit

WEB = ConversationKey(platform="web", channel="alice-conversation")
TELEGRAM = ConversationKey(platform="telegram", channel="42", user="42")


def message(conversation: ConversationKey, message_id: str, text: str) -> Inbound:
    return Inbound(message_id=message_id, dedupe_id=f"test:{conversation.redis_id}:{text}",
                   conversation=conversation, user_id=conversation.user or "alice", text=text)


# -- the core: the same message id in two conversations ----------------------------------------


@pytest.mark.parametrize("first", [WEB, TELEGRAM], ids=["web-first", "telegram-first"])
def test_a_message_id_shared_across_conversations_never_shares_a_reply(
        runtime: Runtime, engine: FakeEngine, first: ConversationKey) -> None:
    second = TELEGRAM if first == WEB else WEB
    shared = uuid.uuid4().hex
    engine.answers += ["A pelican is a magnificent creature.", "2 + 2 = 4."]
    earlier = message(first, shared, "Tell me about pelicans.")
    later = message(second, shared, "What is 2+2?")
    for inbound in (earlier, later):
        turns.submit(runtime.client, inbound)
        answer_pending(runtime, inbound.conversation)
    # The later message was answered on its own (not "already answered" by the first reply).
    assert [r.messages[-1].text for r in engine.requests] == [earlier.text, later.text]
    first_reply = stored_reply(runtime.client, first, shared)
    second_reply = stored_reply(runtime.client, second, shared)
    assert first_reply is not None and first_reply.text == "A pelican is a magnificent creature."
    assert second_reply is not None and second_reply.text == "2 + 2 = 4."
    assert second_reply.conversation == second
    later_history = RedisConversationHistory(runtime.client, second, 3600).records()
    assert [(m.role, m.text) for m in later_history] == [
        ("user", "What is 2+2?"), ("assistant", "2 + 2 = 4.")]


def test_a_reply_found_under_a_conversations_key_is_still_checked(
        runtime: Runtime, engine: FakeEngine) -> None:
    """Belt and braces: a reply of another conversation is never served, wherever it lies."""
    shared = uuid.uuid4().hex
    planted = Reply(message_id=reply_id_for([shared]), conversation=WEB, in_reply_to=(shared,),
                    text="A pelican is a magnificent creature.")
    runtime.client.set(reply_key(TELEGRAM, shared), planted.model_dump_json())
    assert stored_reply(runtime.client, TELEGRAM, shared) is None
    engine.answers.append("2 + 2 = 4.")
    victim = message(TELEGRAM, shared, "What is 2+2?")
    turns.submit(runtime.client, victim)
    answer_pending(runtime, TELEGRAM)
    reply = stored_reply(runtime.client, TELEGRAM, shared)
    assert reply is not None and reply.text == "2 + 2 = 4." and len(engine.requests) == 1


def test_a_listener_never_passes_on_another_conversations_reply() -> None:
    server = fakeredis.FakeServer()
    client = fakeredis.FakeRedis(server=server)
    shared = uuid.uuid4().hex
    foreign = Reply(message_id="r1", conversation=WEB, in_reply_to=(shared,), text="secret")
    client.set(reply_key(TELEGRAM, shared), foreign.model_dump_json())  # planted in place

    async def listen() -> list[str]:
        aclient = fakeredis.FakeAsyncRedis(server=server)
        seen: list[str] = []
        async with Listener(aclient, TELEGRAM, shared) as listener:
            # ... and announced on its channel as if it were the answer.
            Publisher(client, TELEGRAM, [shared]).done(foreign)
            try:
                async for event in listener.events(timeout=1.0):
                    seen.append(event.reply.text if event.reply else event.text)
            except ReplyTimeout:
                seen.append("timeout")
        await aclient.aclose()
        return seen

    assert asyncio.run(listen()) == ["timeout"]


# -- a real stack: the web API and Telegram's webhook --------------------------------------------


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeTelegram]:
    with FakeTelegram() as telegram:
        yield telegram


@pytest.fixture(scope="module")
def isolated(redis_server: str, model_path: Path, fake: FakeTelegram) -> Iterator[Stack]:
    from tests.conftest import _running_stack

    yield from _running_stack(redis_server, model_path, "security-reply-isolation",
                              telegram_webhook=True, TELEGRAM_BOT_TOKEN=TOKEN,
                              TELEGRAM_API_URL=fake.base_url, TELEGRAM_WEBHOOK_SECRET=SECRET,
                              # What is asserted is where replies go, not what they say.
                              ASSISTANT_MAX_TOKENS="12", ASSISTANT_THREADS="1")


def chat(stack: Stack, conversation_id: str, message_id: str, text: str) -> dict[str, Any]:
    response = httpx.post(f"{stack.url}/api/chat", timeout=120, json={
        "conversation_id": conversation_id, "message_id": message_id, "text": text})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def stored(stack: Stack, conversation_id: str) -> list[tuple[str, str, str]]:
    response = httpx.get(f"{stack.url}/api/conversations/{conversation_id}", timeout=10)
    assert response.status_code == 200, response.text
    return [(m["role"], m["text"], m["message_id"]) for m in response.json()["messages"]]


def telegram_records(stack: Stack, conversation: ConversationKey) -> list[tuple[str, str]]:
    client = redis.Redis.from_url(stack.redis_url)
    try:
        history = RedisConversationHistory(client, conversation, 3600)
        return [(m.role, m.text) for m in history.records()]
    finally:
        client.close()


@pytest.mark.parametrize("order", ["steal", "plant"])
def test_a_web_client_cannot_take_or_plant_a_reply_in_another_conversation(
        isolated: Stack, order: str) -> None:
    shared = uuid.uuid4().hex  # the message_id both clients send
    victim_id, attacker_id = uuid.uuid4().hex, uuid.uuid4().hex
    victim_text, attacker_text = "Tell me about pelicans.", "What is 2+2?"
    if order == "steal":
        victim = chat(isolated, victim_id, shared, victim_text)
        attacker = chat(isolated, attacker_id, shared, attacker_text)
    else:
        attacker = chat(isolated, attacker_id, shared, attacker_text)
        victim = chat(isolated, victim_id, shared, victim_text)
    assert victim["message_id"] != attacker["message_id"]
    for body, conversation_id, text in ((victim, victim_id, victim_text),
                                        (attacker, attacker_id, attacker_text)):
        # Each conversation holds its own message and exactly the reply its client got.
        (user, assistant) = stored(isolated, conversation_id)
        assert user[:2] == ("user", text) and user[2] != shared
        assert assistant == ("assistant", body["reply"], body["message_id"])


@pytest.mark.parametrize("order", ["plant", "steal"])
def test_a_web_client_cannot_take_or_plant_a_telegram_users_reply(
        isolated: Stack, fake: FakeTelegram, order: str) -> None:
    user_id = 4200 + (1 if order == "plant" else 2)
    update_id = fake.next_update_id()
    # The id the Telegram adapter derives for this update: computable by anyone.
    telegram_message_id = message_id_for(dedupe_id(BOT, update_id))
    update = tg.update(update_id, tg.message("What is 2+2?", tg.private_chat(user_id),
                                             tg.user(user_id)))
    web_id = uuid.uuid4().hex
    if order == "plant":
        web = chat(isolated, web_id, telegram_message_id, "Tell me about pelicans.")
        assert post(isolated, update).status_code == 200
        reply, final = wait_for_final_edit(fake, isolated, update_id, user_id)
    else:
        assert post(isolated, update).status_code == 200
        reply, final = wait_for_final_edit(fake, isolated, update_id, user_id)
        web = chat(isolated, web_id, telegram_message_id, "Tell me about pelicans.")
    conversation = ConversationKey(platform="telegram", channel=str(user_id),
                                   user=str(user_id))
    # The Telegram user got the reply generated for their own message, in their chat...
    assert reply.conversation == conversation
    assert reply.in_reply_to == (telegram_message_id,)
    assert telegram_records(isolated, conversation) == [("user", "What is 2+2?"),
                                                         ("assistant", reply.text)]
    # ... and the web client got its own, never the Telegram one.
    assert web["message_id"] != reply.message_id
    (user, assistant) = stored(isolated, web_id)
    assert user[:2] == ("user", "Tell me about pelicans.")
    assert assistant == ("assistant", web["reply"], web["message_id"])
    assert int(final["chat_id"]) == user_id
