"""Attack: well-formed Telegram updates with what the Bot API could send, and some it should
not (a sender missing, entities out of range, dates past year 9999, edited messages, channel
posts, stickers, commands for other bots, topics, 20,000-character texts, control tokens of
the chat templates), posted to the webhook with its secret, as Telegram would. What must
hold: every update is acknowledged with 200 (any other status makes Telegram deliver it again
and again), neither the web server nor the worker logs a traceback, and the bot still
answers an ordinary message afterwards. In long polling, one update python-telegram-bot cannot
read must not stop the bot (it used to ask for the same batch forever) nor put users' text
in the log.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.auxil.stack import Stack
from tests.security.test_hostile_openai_requests import TEXTS
from tests.telegram import fake_telegram as tg
from tests.telegram.fake_telegram import TOKEN, FakeTelegram
from tests.telegram.test_end_to_end import (  # noqa: F401  (fixtures used by name)
    SECRET,
    polling,
    polling_fake,
    post,
    wait_for_reply,
    webhook_fake,
)

pytestmark = pytest.mark.integration

UPDATES = 100
SEED = 5


@pytest.fixture(scope="module")
def hooked(redis_server: str, model_path: Path,
           webhook_fake: FakeTelegram) -> Iterator[Stack]:  # noqa: F811
    fake = webhook_fake
    from tests.conftest import _running_stack

    yield from _running_stack(redis_server, model_path, "telegram-hostile",
                              telegram_webhook=True, TELEGRAM_BOT_TOKEN=TOKEN,
                              TELEGRAM_API_URL=fake.base_url, TELEGRAM_WEBHOOK_SECRET=SECRET,
                              ASSISTANT_MAX_TOKENS="8")


def hostile(rng: random.Random, update: dict[str, Any]) -> dict[str, Any]:
    message = update["message"]
    choice = rng.randrange(12)
    if choice == 0:
        update["edited_message"] = update.pop("message")
    elif choice == 1:
        update["channel_post"] = update.pop("message")
    elif choice == 2:
        message.pop("from")
    elif choice == 3:
        message["entities"] = [{"type": rng.choice(["bot_command", "mention", "text_mention"]),
                                "offset": rng.choice([5, 10**6, -1]),
                                "length": rng.choice([0, 10**6])}]
    elif choice == 4:
        message["reply_to_message"] = {
            "message_id": 1, "date": 0, "chat": message["chat"], "text": rng.choice(TEXTS),
            "from": {"id": tg.BOT_ID, "is_bot": True, "first_name": "b",
                     "username": tg.BOT_USERNAME}}
    elif choice == 5:
        message["caption"] = message.pop("text") or "x"
    elif choice == 6:
        message.pop("text")
        message["sticker"] = {"file_id": "x", "file_unique_id": "y", "width": 1, "height": 1,
                              "is_animated": False, "is_video": False, "type": "regular"}
    elif choice == 7:
        message["text"] = "/" + rng.choice(["start", "forget", "start@other_bot", "x" * 300,
                                            f"help@{tg.BOT_USERNAME}"])
    elif choice == 8:
        message["message_thread_id"] = rng.choice([-5, 2**40])
        message["is_topic_message"] = True
    elif choice == 9:
        message["text"] = "x" * rng.choice([4096, 20_000])
    elif choice == 10:
        message["date"] = rng.choice([-1, 2**40])  # 2**40: year 36812, a 500 before
    else:
        message["from"] = {"id": rng.choice([0, 2**53, tg.BOT_ID]), "is_bot": True,
                           "first_name": ""}
    return update


def test_hostile_updates_are_acknowledged_and_break_nothing(
        hooked: Stack, webhook_fake: FakeTelegram) -> None:  # noqa: F811
    fake = webhook_fake
    rng = random.Random(SEED)
    starts = {name: len(hooked.log(name)) for name in ("web", "worker-w1")}
    for _ in range(UPDATES):
        chat = rng.choice([601, 602, 603])
        update = tg.update(fake.next_update_id(),
                           tg.message(rng.choice(TEXTS) or "hello", tg.private_chat(chat),
                                      tg.user(chat)))
        update = hostile(rng, update)
        response = post(hooked, update)
        assert response.status_code == 200, (update, response.text[:300])
    ordinary = tg.update(fake.next_update_id(),
                         tg.message("Hello, are you there?", tg.private_chat(604), tg.user(604)))
    assert post(hooked, ordinary).status_code == 200
    assert wait_for_reply(hooked, ordinary["update_id"]).text
    time.sleep(1)  # the last replies' logs
    for name, start in starts.items():
        log = hooked.log(name)[start:]
        for sign in ("Traceback", "WorkerLostError"):
            assert sign not in log, f"{name}: {log[log.find(sign) - 300:][:3000]}"


def test_polling_skips_an_update_it_cannot_read_and_answers_the_next(
        polling: Stack, polling_fake: FakeTelegram) -> None:  # noqa: F811
    start = len(polling.log("telegram"))
    secret_text = "my unreadable secret 8x7q"
    unreadable = tg.update(polling_fake.next_update_id(),
                           tg.message(secret_text, tg.private_chat(701), tg.user(701)))
    unreadable["message"]["date"] = 2**40  # year 36812: python-telegram-bot's ValueError
    polling_fake.queue_update(unreadable)
    ordinary = tg.update(polling_fake.next_update_id(),
                         tg.message("Hello there", tg.private_chat(702), tg.user(702)))
    polling_fake.queue_update(ordinary)
    assert wait_for_reply(polling, ordinary["update_id"], timeout=60).text
    log = polling.log("telegram")[start:]
    assert log.count("could not be read") == 1, log[-3000:]
    assert secret_text not in log
