"""Attack: make Telegram fetch a link nobody clicked, or hide where a link goes (item 6).

Replies were sent with link previews on (Telegram's servers fetch the first link of a message
to draw its preview: an injected link was requested without a click) and ``[label](url)`` hid
the address behind the label. Also the final edit came 0.08 s after the last streaming edit,
faster than the per-chat pace. The real PTB Bot against the fake Bot API (tests/telegram).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest

from assistant.envelope import ConversationKey, Inbound, Reply
from assistant.settings import Settings
from integrations.telegram.convert import to_html
from integrations.telegram.sender import PRIVATE_EDIT_INTERVAL, BotRunner, TelegramSender
from tests.telegram.fake_telegram import TOKEN, FakeTelegram

INJECTED = "Your invoice is ready: [invoice.pdf](https://attacker.example/collect?u=42)"


@pytest.fixture
def fake() -> Iterator[FakeTelegram]:
    with FakeTelegram() as server:
        yield server


@pytest.fixture
def sender(fake: FakeTelegram) -> Iterator[TelegramSender]:
    runner = BotRunner(Settings(TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_API_URL=fake.base_url))
    yield TelegramSender(runner, fakeredis.FakeRedis())
    runner.close()


def source(chat_id: int = 42) -> Inbound:
    return Inbound(dedupe_id=f"t:{chat_id}", user_id=str(chat_id), text="hi",
                   conversation=ConversationKey(platform="telegram", channel=str(chat_id),
                                                user=str(chat_id)),
                   reply_to={"chat_id": chat_id, "message_thread_id": None,
                             "reply_to_message_id": None})


def preview_disabled(params: dict[str, Any]) -> bool:
    options = params.get("link_preview_options")
    if isinstance(options, str):
        options = json.loads(options)
    return bool(options and options.get("is_disabled"))


def test_links_show_their_address_and_are_never_previewed(sender: TelegramSender,
                                                          fake: FakeTelegram) -> None:
    inbound = source()
    stream = sender.open(inbound, "r-links")
    fake.wait_for("sendMessage", chat_id=42)
    stream.update("Your invoice is ready: https://attacker.example/collect?u=42")
    fake.wait_for("editMessageText", chat_id=42)
    stream.finish(Reply(message_id="r-links", conversation=inbound.conversation,
                        in_reply_to=(inbound.message_id,), text=INJECTED))
    stream.close()
    final = fake.calls_of("editMessageText", chat_id=42)[-1].params
    # The address is in the visible text, not only behind the label.
    assert "invoice.pdf (" in final["text"]
    assert ">https://attacker.example/collect?u=42</a>)" in final["text"]
    for call in fake.calls_of("sendMessage") + fake.calls_of("editMessageText"):
        if "http" in str(call.params.get("text")):
            assert preview_disabled(call.params), call.params


def test_a_long_reply_sent_in_new_messages_has_no_previews(sender: TelegramSender,
                                                           fake: FakeTelegram) -> None:
    inbound = source(43)
    stream = sender.open(inbound, "r-long")
    fake.wait_for("sendMessage", chat_id=43)
    text = (INJECTED + "\n\n") + ("word " * 1200)  # over 4096 characters: a second message
    stream.finish(Reply(message_id="r-long", conversation=inbound.conversation,
                        in_reply_to=(inbound.message_id,), text=text))
    stream.close()
    sent = fake.calls_of("sendMessage", chat_id=43)
    assert len(sent) == 2 and preview_disabled(sent[1].params)
    assert all(preview_disabled(c.params) for c in fake.calls_of("editMessageText", chat_id=43))


def test_the_final_edit_keeps_the_chats_pace(sender: TelegramSender, fake: FakeTelegram) -> None:
    inbound = source(44)
    stream = sender.open(inbound, "r-pace")
    fake.wait_for("sendMessage", chat_id=44)
    stream.update("Hello")
    fake.wait_for("editMessageText", chat_id=44)
    stream.finish(Reply(message_id="r-pace", conversation=inbound.conversation,
                        in_reply_to=(inbound.message_id,), text="Hello **there**"))
    stream.close()
    edits = fake.calls_of("editMessageText", chat_id=44)
    assert edits[-1].params["text"] == to_html("Hello **there**")
    gaps = [later.at - earlier.at for earlier, later in zip(edits, edits[1:], strict=False)]
    assert gaps and min(gaps) >= PRIVATE_EDIT_INTERVAL - 0.05, gaps
