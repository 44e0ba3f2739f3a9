"""A throttled or queued-behind Telegram message, through the real PTB handlers and Dispatcher.

Updates go through ``Application.process_update`` (as the webhook feeds them); the Dispatcher
runs on a fake Redis with a fake Celery producer; replies go to the fake Bot API.
"""

from __future__ import annotations

import asyncio
from typing import Any

import fakeredis
import pytest
from telegram import Update

from assistant import turns
from assistant.dispatch import Dispatcher
from assistant.envelope import ConversationKey
from assistant.limits import Limits, Rate
from assistant.prompts import PromptLibrary
from assistant.settings import Settings
from integrations.telegram.bot import TelegramAdapter, build_application
from tests.auxil.fake_celery import QUEUE, FakeCelery, fake_backend
from tests.telegram import fake_telegram as tg
from tests.telegram.fake_telegram import TOKEN, FakeTelegram


def run_updates(fake: FakeTelegram, client: fakeredis.FakeRedis, limits: Limits,
                prompts: PromptLibrary, *updates: dict[str, Any]) -> None:
    settings = Settings(TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_API_URL=fake.base_url)
    dispatcher = Dispatcher(client, fake_backend(FakeCelery(client)), limits=limits)  # type: ignore[arg-type]
    application = build_application(settings, TelegramAdapter(settings, client, dispatcher,
                                                              prompts), polling=False)

    async def feed() -> None:
        async with application:
            for update in updates:
                await application.process_update(
                    Update.de_json(update, application.bot))

    asyncio.run(feed())


def pending_texts(client: fakeredis.FakeRedis, chat_id: int = 42) -> list[str]:
    conversation = ConversationKey(platform="telegram", channel=str(chat_id), user=str(chat_id))
    return [i.text for i in turns.pending(client, conversation)]


@pytest.fixture
def fake() -> Any:
    with FakeTelegram() as server:
        yield server


def test_a_throttled_message_gets_a_reply_and_is_not_queued(
        fake: FakeTelegram, fake_redis: fakeredis.FakeRedis, prompts: PromptLibrary) -> None:
    first = tg.update(1, tg.message("first", tg.private_chat()))
    second = tg.update(2, tg.message("second", tg.private_chat()))
    run_updates(fake, fake_redis, Limits(user_rate=Rate(1, 3600), prompts=prompts), prompts,
                first, second, second)  # the last: the same update again
    [notice] = fake.calls_of("sendMessage")
    assert notice.params["chat_id"] == 42
    assert notice.params["text"] == ("You're sending messages faster than I can answer — "
                                     "try again in 60 minutes.")
    assert pending_texts(fake_redis) == ["first"] and fake_redis.llen(QUEUE) == 1


def test_a_throttled_message_in_a_forum_topic_is_answered_in_the_topic(
        fake: FakeTelegram, fake_redis: fakeredis.FakeRedis, prompts: PromptLibrary) -> None:
    chat = tg.group_chat(forum=True)
    updates = [tg.update(i, tg.message(f"@{tg.BOT_USERNAME} hi {i}", chat, thread_id=7))
               for i in (1, 2)]
    run_updates(fake, fake_redis, Limits(channel_rate=Rate(1, 60), prompts=prompts), prompts,
                *updates)
    [notice] = fake.calls_of("sendMessage")
    assert notice.params["message_thread_id"] == 7
    assert notice.params["text"].startswith("You're sending messages faster")


def test_a_busy_queue_tells_the_user_their_place(fake: FakeTelegram,
                                                 fake_redis: fakeredis.FakeRedis,
                                                 prompts: PromptLibrary) -> None:
    updates = [tg.update(i, tg.message(f"message {i}", tg.private_chat())) for i in (1, 2)]
    run_updates(fake, fake_redis, Limits(max_queue_depth=1, prompts=prompts), prompts,
                *updates)
    [notice] = fake.calls_of("sendMessage")
    assert "you're number 2 in line" in notice.params["text"]
    assert pending_texts(fake_redis) == ["message 1", "message 2"]
