"""The pure translation functions: events → Inbound, Markdown → mrkdwn, long text → pieces."""

from __future__ import annotations

from typing import Any

import pytest

from integrations.slack.convert import (
    dedupe_id_for,
    message_id_for,
    preview,
    split_message,
    to_inbound,
    to_mrkdwn,
)
from tests.slack.fake_slack import BOT_USER_ID, event_body


def mention(**extra: Any) -> dict[str, Any]:
    event = {"type": "app_mention", "user": "U1", "text": f"<@{BOT_USER_ID}> hi there",
             "ts": "1712345678.000100", "channel": "C1", "event_ts": "1712345678.000100"}
    return event | extra


def test_a_mention_starts_a_thread_at_its_own_ts() -> None:
    inbound = to_inbound(event_body(mention(), "Ev1"), BOT_USER_ID)
    assert inbound is not None
    assert inbound.text == "hi there"
    assert inbound.conversation.model_dump() == {
        "platform": "slack", "workspace": "T1", "channel": "C1",
        "thread": "1712345678.000100", "user": None}
    assert inbound.reply_to == {"team": "T1", "channel": "C1", "thread_ts": "1712345678.000100"}
    assert inbound.dedupe_id == dedupe_id_for("T1", "C1", "1712345678.000100")
    assert inbound.message_id == message_id_for(inbound.dedupe_id)


def test_a_mention_inside_a_thread_belongs_to_that_thread() -> None:
    inbound = to_inbound(event_body(mention(thread_ts="1700000000.000001"), "Ev1"), BOT_USER_ID)
    assert inbound is not None
    assert inbound.conversation.thread == "1700000000.000001"
    assert inbound.reply_to["thread_ts"] == "1700000000.000001"


def test_the_message_twin_of_a_mention_gets_the_same_ids() -> None:
    as_mention = to_inbound(event_body(mention(thread_ts="1700.1"), "Ev1"), BOT_USER_ID)
    as_message = to_inbound(event_body(mention(type="message", thread_ts="1700.1",
                                               channel_type="channel"), "Ev2"), BOT_USER_ID)
    assert as_mention is not None and as_message is not None
    assert as_mention.dedupe_id == as_message.dedupe_id
    assert as_mention.message_id == as_message.message_id


def test_a_dm_is_keyed_by_user_and_replied_at_top_level() -> None:
    event = {"type": "message", "channel_type": "im", "user": "U1", "text": "hello",
             "ts": "1.000002", "channel": "D1"}
    inbound = to_inbound(event_body(event, "Ev3"), BOT_USER_ID)
    assert inbound is not None
    assert inbound.conversation.user == "U1" and inbound.conversation.thread is None
    assert inbound.reply_to == {"team": "T1", "channel": "D1", "thread_ts": None}


@pytest.mark.parametrize("extra", [
    {"bot_id": "B2"},                                   # another bot
    {"subtype": "bot_message", "bot_id": "B2"},
    {"subtype": "message_changed"},
    {"subtype": "message_deleted"},
    {"subtype": "channel_join"},
    {"user": BOT_USER_ID},                              # ourselves
    {"text": "   "},
    {"text": 5},                                        # other types: each was a 500
    {"user": ["U1"]},
    {"channel_type": "channel", "channel": "C1",        # past the conversation key's ids
     "thread_ts": "x" * 500},
    {"channel": "D1\n" + "x" * 300},
])
def test_non_messages_never_trigger_a_reply(extra: dict[str, Any]) -> None:
    event = {"type": "message", "channel_type": "im", "user": "U1", "text": "hello",
             "ts": "1.000002", "channel": "D1"} | extra
    assert to_inbound(event_body(event, "Ev4"), BOT_USER_ID) is None


def test_top_level_channel_messages_without_a_mention_are_ignored() -> None:
    event = {"type": "message", "channel_type": "channel", "user": "U1", "text": "hello",
             "ts": "1.000002", "channel": "C1"}
    assert to_inbound(event_body(event, "Ev5"), BOT_USER_ID) is None


@pytest.mark.parametrize(("markdown", "mrkdwn"), [
    ("**bold** and __also__", "*bold* and *also*"),
    ("an *italic* word", "an _italic_ word"),
    ("~~gone~~", "~gone~"),
    ("# Title\ntext", "*Title*\ntext"),
    ("- one\n* two\n  + three", "• one\n• two\n  • three"),
    ("use `a < b && c`", "use `a &lt; b &amp;&amp; c`"),
    ("```python\nif a<b:\n    print('**x**')\n```", "```\nif a&lt;b:\n    print('**x**')\n```"),
    ("[docs](https://example.com/a?b=1&c=2)", "<https://example.com/a?b=1&amp;c=2|docs>"),
    ("[evil](javascript:alert(1))", "[evil](javascript:alert(1))"),
    ("<!channel> <!here> <@U123> <https://evil|ok>",
     "&lt;!channel&gt; &lt;!here&gt; &lt;@U123&gt; &lt;https://evil|ok&gt;"),
    ("[<!channel>](https://x.test)", "<https://x.test|&lt;!channel&gt;>"),
    ("Tom & Jerry", "Tom &amp; Jerry"),
])
def test_markdown_becomes_escaped_mrkdwn(markdown: str, mrkdwn: str) -> None:
    assert to_mrkdwn(markdown) == mrkdwn


def test_nothing_unescaped_can_reach_slack() -> None:
    hostile = "<!channel> ```<!here>``` `<@U1>` **<!everyone>** [a](https://x>y) - <b>"
    out = to_mrkdwn(hostile)
    assert "<!" not in out and "<@" not in out


def test_long_text_is_split_at_paragraphs_within_the_limit() -> None:
    text = "\n\n".join(f"paragraph {i} " + "word " * 30 for i in range(40))
    pieces = split_message(text, 500)
    assert len(pieces) > 1
    assert all(len(p) <= 500 for p in pieces)
    assert " ".join(" ".join(pieces).split()) == " ".join(text.split())


def test_a_split_never_cuts_an_entity_and_keeps_code_blocks_closed() -> None:
    text = "```\n" + "x &amp; y\n" * 200 + "```"
    pieces = split_message(text, 300)
    assert all(len(p) <= 300 for p in pieces)
    assert all(p.count("```") % 2 == 0 for p in pieces)
    unbroken = "&amp;" * 100
    assert all(p.replace("&amp;", "") == "" for p in split_message(unbroken, 64))


def test_preview_fits_one_message() -> None:
    assert len(preview("word " * 5000, 1000)) <= 1000
    assert preview("**hi**") == "*hi*"
