"""Telegram end to end: the real PTB Application, a real worker and SmolLM2, a fake Bot API.

Polling mode runs ``python -m integrations.telegram``; webhook mode posts updates to the web
server's /telegram/webhook. SmolLM2 is too small to say anything reliable, so the assertions
are on where replies go and what is stored, and the final text is compared with the stored reply.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from assistant.envelope import ConversationKey, Reply, reply_id_for
from assistant.memory import RedisConversationHistory
from integrations.telegram.convert import BotIdentity, dedupe_id, message_id_for, to_html
from tests.auxil.stack import Stack
from tests.telegram import fake_telegram as tg
from tests.telegram.fake_telegram import TOKEN, FakeTelegram

pytestmark = pytest.mark.integration

BOT = BotIdentity(id=tg.BOT_ID, username=tg.BOT_USERNAME)
SECRET = "s3cret-webhook_token"


def inbound_id(update_id: int) -> str:
    return message_id_for(dedupe_id(BOT, update_id))


def wait_for_reply(stack: Stack, update_id: int, timeout: float = 90) -> Reply:
    client = redis.Redis.from_url(stack.redis_url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # The test knows the update, not the chat it lands in: find its reply by id.
            for key in client.scan_iter(f"assistant:reply:*:{inbound_id(update_id)}"):
                raw = client.get(key)
                if raw:
                    return Reply.model_validate_json(raw)
            time.sleep(0.2)
    finally:
        client.close()
    raise AssertionError(f"no reply to update {update_id}:\n{stack.log('worker-w1')[-3000:]}")


def wait_for_final_edit(fake: FakeTelegram, stack: Stack, update_id: int,
                        chat_id: int) -> tuple[Reply, dict[str, Any]]:
    """The stored reply, and the final editMessageText that showed it in ``chat_id``."""
    reply = wait_for_reply(stack, update_id)
    assert reply.message_id == reply_id_for([inbound_id(update_id)])
    wanted = {to_html(reply.text), reply.text}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for call in fake.calls_of("editMessageText", ok_only=True, chat_id=chat_id):
            if call.params["text"] in wanted:
                return reply, call.params
        time.sleep(0.1)
    raise AssertionError(f"final text never shown: {reply.text!r}; "
                         f"{[c.params for c in fake.calls_of('editMessageText')]}")


def records(stack: Stack, conversation: ConversationKey) -> list[Any]:
    client = redis.Redis.from_url(stack.redis_url)
    try:
        return RedisConversationHistory(client, conversation, 3600).records()
    finally:
        client.close()


def private_update(fake: FakeTelegram, text: str, user_id: int = 42) -> dict[str, Any]:
    return tg.update(fake.next_update_id(),
                     tg.message(text, tg.private_chat(user_id), tg.user(user_id)))


# -- polling --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def polling_fake() -> Iterator[FakeTelegram]:
    with FakeTelegram() as fake:
        yield fake


@pytest.fixture(scope="module")
def polling(redis_server: str, model_path: Path, polling_fake: FakeTelegram) -> Iterator[Stack]:
    from tests.conftest import _new_stack

    stack = _new_stack(redis_server, model_path, "telegram-polling", TELEGRAM_BOT_TOKEN=TOKEN,
                       TELEGRAM_API_URL=polling_fake.base_url)
    try:
        stack.start_worker("w1")
        stack.start_process("telegram", [sys.executable, "-m", "integrations.telegram"])
        polling_fake.wait_for("deleteWebhook", timeout=30)
        yield stack
    finally:
        stack.close()


def test_polling_a_private_message_is_answered_in_place(polling: Stack,
                                                        polling_fake: FakeTelegram) -> None:
    fake = polling_fake
    fake.wait_for("setMyCommands")
    commands = fake.calls_of("setMyCommands")[0].params["commands"]
    assert [c["command"] for c in commands] == ["start", "help", "reset", "forget", "remember",
                                                "memory"]
    update = private_update(fake, "Hello! Say something nice.", user_id=42)
    fake.queue_update(update)
    reply, final = wait_for_final_edit(fake, polling, update["update_id"], 42)
    placeholder = fake.calls_of("sendMessage", chat_id=42)
    assert len(placeholder) == 1 and placeholder[0].params["text"] == "…"
    assert fake.calls_of("sendChatAction", chat_id=42, action="typing")
    sent_id = next(mid for (chat, mid) in fake.messages if chat == 42)
    assert final["message_id"] == sent_id
    assert all(c.params["message_id"] == sent_id
               for c in fake.calls_of("editMessageText", chat_id=42))
    assert fake.messages[(42, sent_id)]["text"] in {to_html(reply.text), reply.text}


def test_polling_groups_answer_only_mentions_in_their_topic(polling: Stack,
                                                            polling_fake: FakeTelegram) -> None:
    fake = polling_fake
    chat = tg.group_chat(-100200, forum=True)
    ignored = tg.update(fake.next_update_id(), tg.message("hello all", chat, thread_id=7))
    mention = tg.update(fake.next_update_id(),
                        tg.message("@assistant_bot hello", chat, thread_id=7))
    fake.queue_update(ignored)
    fake.queue_update(mention)
    wait_for_final_edit(fake, polling, mention["update_id"], -100200)
    sent = fake.calls_of("sendMessage", chat_id=-100200)
    assert len(sent) == 1
    assert sent[0].params["message_thread_id"] == 7
    assert sent[0].params["reply_parameters"]["message_id"] == mention["message"]["message_id"]
    assert records(polling, ConversationKey(platform="telegram", channel="-100200",
                                            thread="7"))[0].text == "hello"


def test_polling_a_429_on_an_edit_delays_but_keeps_the_reply(polling: Stack,
                                                             polling_fake: FakeTelegram) -> None:
    fake = polling_fake
    fake.fail_next("editMessageText", times=3, retry_after=1)
    update = private_update(fake, "Tell me about kites.", user_id=44)
    fake.queue_update(update)
    reply, _ = wait_for_final_edit(fake, polling, update["update_id"], 44)
    edits = fake.calls_of("editMessageText", chat_id=44)
    assert [c.status for c in edits].count(429) >= 1
    assert fake.messages[(44, next(m for (c, m) in fake.messages if c == 44))]["text"] in {
        to_html(reply.text), reply.text}


def test_polling_reset_empties_only_that_conversation(polling: Stack,
                                                      polling_fake: FakeTelegram) -> None:
    fake = polling_fake
    mine = private_update(fake, "Remember the word apple.", user_id=50)
    theirs = private_update(fake, "Remember the word pear.", user_id=51)
    fake.queue_update(mine)
    fake.queue_update(theirs)
    wait_for_final_edit(fake, polling, mine["update_id"], 50)
    wait_for_final_edit(fake, polling, theirs["update_id"], 51)
    my_key = ConversationKey(platform="telegram", channel="50", user="50")
    their_key = ConversationKey(platform="telegram", channel="51", user="51")
    assert len(records(polling, my_key)) == 2 and len(records(polling, their_key)) == 2
    fake.queue_update(private_update(fake, "/reset", user_id=50))
    done = fake.wait_for("sendMessage", chat_id=50, count=2)[-1]
    assert done.params["text"].startswith("Done")
    assert records(polling, my_key) == []
    assert len(records(polling, their_key)) == 2


def test_polling_non_text_gets_a_polite_answer(polling: Stack,
                                               polling_fake: FakeTelegram) -> None:
    fake = polling_fake
    sticker = {"file_id": "f", "file_unique_id": "u", "type": "regular", "width": 512,
               "height": 512, "is_animated": False, "is_video": False}
    fake.queue_update(tg.update(fake.next_update_id(),
                                tg.message(None, tg.private_chat(60), tg.user(60),
                                           sticker=sticker)))
    answer = fake.wait_for("sendMessage", chat_id=60, timeout=20)[0]
    assert "only understand text" in answer.params["text"]


# -- webhook --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def webhook_fake() -> Iterator[FakeTelegram]:
    with FakeTelegram() as fake:
        yield fake


@pytest.fixture(scope="module")
def webhook(redis_server: str, model_path: Path, webhook_fake: FakeTelegram) -> Iterator[Stack]:
    from tests.conftest import _running_stack

    yield from _running_stack(redis_server, model_path, "telegram-webhook",
                              telegram_webhook=True, TELEGRAM_BOT_TOKEN=TOKEN,
                              TELEGRAM_API_URL=webhook_fake.base_url,
                              TELEGRAM_WEBHOOK_SECRET=SECRET)


def post(stack: Stack, update: dict[str, Any], secret: str | None = SECRET) -> httpx.Response:
    headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
    return httpx.post(f"{stack.url}/telegram/webhook", json=update, headers=headers, timeout=30)


def test_webhook_is_registered_with_its_secret(webhook: Stack,
                                               webhook_fake: FakeTelegram) -> None:
    registered = webhook_fake.wait_for("setWebhook")[0].params
    assert registered["url"] == f"{webhook.url}/telegram/webhook"
    assert registered["secret_token"] == SECRET
    assert registered["allowed_updates"] == ["message"]
    webhook_fake.wait_for("setMyCommands")


def test_webhook_wrong_or_missing_secret_is_403_and_queues_nothing(
        webhook: Stack, webhook_fake: FakeTelegram) -> None:
    update = private_update(webhook_fake, "sneaky", user_id=70)
    assert post(webhook, update, secret="wrong").status_code == 403
    assert post(webhook, update, secret=None).status_code == 403
    client = redis.Redis.from_url(webhook.redis_url)
    try:
        assert client.keys("assistant:pending:*") == []
        assert client.keys(f"assistant:dedupe:telegram:*:{update['update_id']}") == []
    finally:
        client.close()
    assert webhook_fake.calls_of("sendMessage", chat_id=70) == []


def test_webhook_a_private_message_is_answered_once_even_if_delivered_twice(
        webhook: Stack, webhook_fake: FakeTelegram) -> None:
    fake = webhook_fake
    update = private_update(fake, "Hi there, how are you?", user_id=80)
    assert post(webhook, update).status_code == 200
    assert post(webhook, update).status_code == 200  # Telegram's retry
    reply, final = wait_for_final_edit(fake, webhook, update["update_id"], 80)
    time.sleep(1)
    sent = fake.calls_of("sendMessage", chat_id=80)
    assert len(sent) == 1
    assert final["message_id"] == next(m for (c, m) in fake.messages if c == 80)
    assert len(records(webhook, ConversationKey(platform="telegram", channel="80",
                                                user="80"))) == 2


def test_webhook_group_without_mention_is_ignored_and_reply_to_bot_is_answered(
        webhook: Stack, webhook_fake: FakeTelegram) -> None:
    fake = webhook_fake
    chat = tg.group_chat(-100300)
    ignored = tg.update(fake.next_update_id(), tg.message("just chatting", chat))
    assert post(webhook, ignored).status_code == 200
    answered = tg.update(fake.next_update_id(),
                         tg.message("and you?", chat, reply_to=tg.bot_message(chat)))
    assert post(webhook, answered).status_code == 200
    wait_for_final_edit(fake, webhook, answered["update_id"], -100300)
    sent = fake.calls_of("sendMessage", chat_id=-100300)
    assert len(sent) == 1 and "message_thread_id" not in sent[0].params


def test_the_bot_token_is_never_logged(polling: Stack, webhook: Stack) -> None:
    for stack, names in ((polling, ["worker-w1", "telegram"]), (webhook, ["worker-w1", "web"])):
        for name in names:
            assert stack.log(name), name
            assert TOKEN not in stack.log(name), name
