"""Long-term memory across platforms with real processes: a Celery worker with the real
model, real Redis, the web server; the person tells a fact on Telegram and asks on the web.

A Telegram message enters as the Telegram adapter enqueues it (``Dispatcher.submit`` of the
envelope ``integrations/telegram/convert.py`` makes); the web question goes through
``/api/chat`` in local mode, where the page names its user. SmolLM2 is too small to use the
fact reliably: the test asserts on what was stored and on the prompt the engine received.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
import redis

from assistant.backend import load_backend
from assistant.dispatch import Dispatcher
from assistant.envelope import ConversationKey, Inbound, reply_id_for
from assistant.settings import Settings
from assistant.store import connect_store
from assistant.store.memories import Memories
from assistant.store.people import People
from assistant.stream import stored_reply
from tests.auxil.stack import Stack
from tests.integration.test_backbone import chat

pytestmark = pytest.mark.integration

TELEGRAM_USER = "4242"
DM = ConversationKey(platform="telegram", channel=TELEGRAM_USER, user=TELEGRAM_USER)
GROUP = ConversationKey(platform="telegram", channel="-100777")


def telegram_message(text: str, conversation: ConversationKey = DM) -> Inbound:
    update = uuid.uuid4().hex
    return Inbound(message_id=uuid.uuid5(uuid.NAMESPACE_URL, update).hex,
                   dedupe_id=f"telegram:test:{update}", conversation=conversation,
                   user_id=TELEGRAM_USER, text=text,
                   reply_to={"chat_id": int(conversation.channel)})


def wait_for_reply(client: redis.Redis, inbound: Inbound, timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = stored_reply(client, inbound.conversation, inbound.message_id)
        if reply is not None:
            return reply.text
        time.sleep(0.2)
    raise TimeoutError(f"no reply to {inbound.text!r}")


def wait_for_trace(stack: Stack, reply_id: str, timeout: float = 300) -> list[dict[str, str]]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return stack.traced_prompt(reply_id)  # type: ignore[return-value]
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_told_on_telegram_recalled_on_the_web_never_in_a_group(
        make_stack: Callable[..., Stack], monkeypatch: pytest.MonkeyPatch) -> None:
    stack = make_stack(ASSISTANT_TRACE_PROMPTS="true")
    stack.start_worker("w1")
    stack.start_web()
    store = connect_store(stack.env["DATABASE_URL"])
    people = People(store)
    people.invite("ada", by="test")
    people.link("ada", "telegram", "default", TELEGRAM_USER, by="test")
    client = redis.Redis.from_url(stack.redis_url)
    settings = Settings(_env_file=None, REDIS_URL=stack.redis_url)  # type: ignore[call-arg]
    dispatcher = Dispatcher(client, load_backend(settings, client))
    try:
        told = telegram_message("remember that I'm allergic to hazelnuts")
        assert dispatcher.submit(told)
        confirmation = wait_for_reply(client, told)
        assert "hazelnuts" in confirmation and "/memory" in confirmation
        kept = Memories(store).list([("telegram", "default", TELEGRAM_USER)])
        assert [(m.text, m.private, m.source_message) for m in kept] == [
            ("I'm allergic to hazelnuts", True, told.message_id)]

        # Later, on the web, the same (linked) person asks.
        asked = chat(stack.url, "Can I eat a chocolate spread made with hazelnuts?",
                     user_id="ada")
        assert asked.status_code == 200, asked.text
        prompt = stack.traced_prompt(asked.json()["message_id"])
        assert "\u201cI'm allergic to hazelnuts\u201d" in prompt[-1]["text"]
        assert prompt[-1]["role"] == "user" and "hazelnuts" not in prompt[0]["text"]
        # Someone else on the web does not get it.
        other = chat(stack.url, "Can I eat a chocolate spread made with hazelnuts?",
                     user_id="bob").json()
        assert "allergic" not in str(stack.traced_prompt(other["message_id"]))

        # The same person in a Telegram group: the DM's memory stays out of the prompt.
        in_group = telegram_message("what am I allergic to? hazelnuts?", GROUP)
        assert dispatcher.submit(in_group)
        group_prompt = wait_for_trace(stack, reply_id_for([in_group.message_id]))
        assert "allergic to hazelnuts\u201d" not in str(group_prompt)

        # The web lists it (with the linked Telegram memory), and forgetting works there.
        listed = chat(stack.url, "/memory", user_id="ada").json()["reply"]
        assert "1. I'm allergic to hazelnuts" in listed
    finally:
        client.close()
        store.engine.dispose()
