"""convert.py: which updates concern the bot, their conversation keys, HTML, splitting."""

from __future__ import annotations

from typing import Any

from telegram import Update

from assistant.envelope import ConversationKey
from integrations.telegram.convert import (
    BotIdentity,
    dedupe_id,
    message_id_for,
    split_text,
    telegram_length,
    to_html,
    to_inbound,
)
from tests.telegram import fake_telegram as tg
from tests.telegram.fake_telegram import html_error

BOT = BotIdentity(id=tg.BOT_ID, username=tg.BOT_USERNAME)


def convert(body: dict[str, Any], kind: str = "message", update_id: int = 7) -> Any:
    return to_inbound(Update.de_json(tg.update(update_id, body, kind), None), BOT)


def test_a_private_text_is_answered_in_that_chat_keyed_by_user() -> None:
    inbound = convert(tg.message("Hello there", tg.private_chat(42), tg.user(42)))
    assert inbound is not None
    assert inbound.conversation == ConversationKey(platform="telegram", channel="42", user="42")
    assert inbound.text == "Hello there"
    assert inbound.user_id == "42"
    assert inbound.dedupe_id == f"telegram:{tg.BOT_ID}:7"
    assert inbound.message_id == message_id_for(dedupe_id(BOT, 7))
    assert inbound.reply_to == {"chat_id": 42, "message_thread_id": None,
                                "reply_to_message_id": None}


def test_the_same_update_gives_the_same_message_id() -> None:
    body = tg.message("Hi", tg.private_chat())
    assert convert(body).message_id == convert(body).message_id
    assert convert(body, update_id=8).message_id != convert(body).message_id


def test_a_group_message_without_mention_is_ignored() -> None:
    assert convert(tg.message("hello everyone", tg.group_chat())) is None
    assert convert(tg.message("ask @someone_else", tg.group_chat())) is None


def test_a_group_mention_is_answered_without_the_mention_and_without_user_key() -> None:
    body = tg.message("@assistant_bot what is 2+2?", tg.group_chat(-100123))
    inbound = convert(body)
    assert inbound is not None
    assert inbound.text == "what is 2+2?"
    assert inbound.conversation == ConversationKey(platform="telegram", channel="-100123")
    assert inbound.reply_to == {"chat_id": -100123, "message_thread_id": None,
                                "reply_to_message_id": body["message_id"]}


def test_a_text_mention_of_the_bot_user_counts() -> None:
    body = tg.message("Assistant, hi", tg.group_chat(), entities=[
        {"type": "text_mention", "offset": 0, "length": 9, "user": tg.BOT_USER}])
    assert convert(body) is not None


def test_a_reply_to_the_bot_in_a_group_is_answered() -> None:
    chat = tg.group_chat()
    assert convert(tg.message("and why?", chat, reply_to=tg.bot_message(chat))) is not None
    other = tg.message("no", chat, tg.user(7))
    assert convert(tg.message("and why?", chat, reply_to=other)) is None


def test_each_forum_topic_is_its_own_conversation() -> None:
    chat = tg.group_chat(-100555, forum=True)
    first = convert(tg.message("@assistant_bot hi", chat, thread_id=11))
    second = convert(tg.message("@assistant_bot hi", chat, thread_id=12))
    general = convert(tg.message("@assistant_bot hi", chat))
    assert first.conversation.thread == "11" and second.conversation.thread == "12"
    assert general.conversation.thread is None
    assert first.reply_to["message_thread_id"] == 11


def test_in_a_forum_the_topic_creation_message_is_not_a_reply_to_the_bot() -> None:
    chat = tg.group_chat(-100555, forum=True)
    created = {**tg.bot_message(chat, "topic"), "forum_topic_created": {
        "name": "Topic", "icon_color": 7322096}}
    del created["text"]
    assert convert(tg.message("chatting", chat, thread_id=5, reply_to=created)) is None


def test_private_memory_never_shares_a_key_with_a_group() -> None:
    private = convert(tg.message("hi", tg.private_chat(42), tg.user(42)))
    group = convert(tg.message("@assistant_bot hi", tg.group_chat(-100123), tg.user(42)))
    assert private.conversation.redis_id != group.conversation.redis_id


def test_edited_messages_non_text_and_bots_are_ignored() -> None:
    chat = tg.private_chat()
    assert convert(tg.message("fixed", chat), kind="edited_message") is None
    assert convert(tg.message(None, chat, sticker=None)) is None
    bot_sender = {"id": 99, "is_bot": True, "first_name": "Other"}
    assert convert(tg.message("@assistant_bot hi", tg.group_chat(), bot_sender)) is None


def test_html_escapes_everything_that_is_not_markdown() -> None:
    rendered = to_html("Use <b>tags</b> & <script>alert(1)</script> **bold** `a<b>`")
    assert rendered == ("Use &lt;b&gt;tags&lt;/b&gt; &amp; &lt;script&gt;alert(1)&lt;/script&gt;"
                        " <b>bold</b> <code>a&lt;b&gt;</code>")
    assert html_error(rendered) is None


def test_html_renders_markdown_and_always_parses() -> None:
    samples = [
        "**bold** and *italic* and _under_ and ~~gone~~",
        "```python\nif a < b and c > d:\n    print('&')\n```\ndone",
        "[a link](https://example.com/a_b_?x=1&y=2) and snake_case_names",
        "**a *b** c*", "***", "* list\n* items", "2*3*4 and a_b_c", "`unclosed and **open",
    ]
    for sample in samples:
        assert html_error(to_html(sample)) is None, (sample, to_html(sample))
    assert to_html("[x](https://e.com/?a=1&b=2)") == (
        'x (<a href="https://e.com/?a=1&amp;b=2">https://e.com/?a=1&amp;b=2</a>)')
    assert "<pre>" in to_html(samples[1]) and "&lt; b" in to_html(samples[1])


def test_split_keeps_short_text_whole_and_cuts_long_text_at_boundaries() -> None:
    assert split_text("short") == ["short"]
    paragraphs = "\n\n".join(f"Paragraph {n}. " + "word " * 150 for n in range(12))
    pieces = split_text(paragraphs)
    assert len(pieces) > 1
    assert all(telegram_length(p) <= 4096 for p in pieces)
    assert all(p.startswith("Paragraph") for p in pieces)
    assert " ".join(" ".join(pieces).split()) == " ".join(paragraphs.split())


def test_split_counts_utf16_units_and_cuts_unbroken_text() -> None:
    emoji = "😀" * 3000  # 6000 UTF-16 units
    pieces = split_text(emoji)
    assert [telegram_length(p) for p in pieces] == [4096, 1904]
    assert "".join(pieces) == emoji
    assert "".join(split_text("x" * 9000)) == "x" * 9000
