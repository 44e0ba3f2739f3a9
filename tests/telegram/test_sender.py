"""The worker's Telegram sender against the fake Bot API (real PTB Bot, fake Redis)."""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest

from assistant.delivery import platform_message
from assistant.envelope import ConversationKey, Inbound, Reply
from assistant.settings import Settings
from integrations.telegram import sender as sender_module
from integrations.telegram.sender import BotRunner, TelegramSender
from tests.telegram.fake_telegram import TOKEN, FakeTelegram


@pytest.fixture
def fake() -> Iterator[FakeTelegram]:
    with FakeTelegram() as server:
        yield server


@pytest.fixture
def runner(fake: FakeTelegram) -> Iterator[BotRunner]:
    settings = Settings(TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_API_URL=fake.base_url)
    bot_runner = BotRunner(settings)
    yield bot_runner
    bot_runner.close()


@pytest.fixture
def sender(runner: BotRunner, fake_redis: fakeredis.FakeRedis) -> TelegramSender:
    return TelegramSender(runner, fake_redis)


def inbound(chat_id: int = 42, thread: int | None = None, reply_to: int | None = None
            ) -> Inbound:
    conversation = (ConversationKey(platform="telegram", channel=str(chat_id), user=str(chat_id))
                    if chat_id > 0 else
                    ConversationKey(platform="telegram", channel=str(chat_id),
                                    thread=str(thread) if thread else None))
    return Inbound(dedupe_id=f"t:{chat_id}:{thread}", conversation=conversation, user_id="42",
                   text="hi", reply_to={"chat_id": chat_id, "message_thread_id": thread,
                                        "reply_to_message_id": reply_to})


def reply(source: Inbound, text: str, finish_reason: str = "stop") -> Reply:
    return Reply(message_id="r1", conversation=source.conversation,
                 in_reply_to=(source.message_id,), text=text, reply_to=source.reply_to,
                 finish_reason=finish_reason)  # type: ignore[arg-type]


def test_open_types_posts_a_placeholder_then_edits_it(sender: TelegramSender,
                                                      fake: FakeTelegram) -> None:
    source = inbound()
    stream = sender.open(source, "r1")
    placeholder = fake.wait_for("sendMessage", chat_id=42)[0]
    fake.wait_for("sendChatAction", chat_id=42, action="typing")
    stream.update("Hello")
    fake.wait_for("editMessageText", text="Hello")
    stream.finish(reply(source, "Hello **world** <script>"))
    stream.close()
    final = fake.calls_of("editMessageText")[-1].params
    assert final["text"] == "Hello <b>world</b> &lt;script&gt;"
    assert final["parse_mode"] == "HTML"
    assert len(fake.calls_of("sendMessage")) == 1
    message_id = fake.messages[(42, 1000)]["message_id"]
    assert final["message_id"] == message_id
    assert placeholder.params["text"] == "…"


def test_streaming_edits_are_throttled(sender: TelegramSender, fake: FakeTelegram) -> None:
    source = inbound()
    stream = sender.open(source, "r1")
    fake.wait_for("sendMessage")
    for n in range(1, 40):
        stream.update("word " * n)
    stream.finish(reply(source, "final"))
    stream.close()
    edits = fake.calls_of("editMessageText")
    assert edits[-1].params["text"] == "final"
    # The first edit goes out at once, the next after the 1 s private-chat interval at most.
    assert len(edits) <= 3


def test_a_group_reply_goes_to_the_topic_as_a_reply(sender: TelegramSender,
                                                   fake: FakeTelegram) -> None:
    source = inbound(-100777, thread=9, reply_to=55)
    stream = sender.open(source, "r1")
    stream.finish(reply(source, "ok"))
    stream.close()
    sent = fake.calls_of("sendMessage")[0].params
    assert sent["chat_id"] == -100777 and sent["message_thread_id"] == 9
    assert sent["reply_parameters"]["message_id"] == 55
    assert fake.calls_of("sendChatAction")[0].params["message_thread_id"] == 9


def test_a_rerun_edits_the_message_the_first_run_posted(sender: TelegramSender,
                                                        fake: FakeTelegram,
                                                        fake_redis: fakeredis.FakeRedis) -> None:
    source = inbound()
    first = sender.open(source, "r1")
    first.close()  # the worker died before finishing
    assert platform_message(fake_redis, "r1") == "42:1000"
    second = sender.open(source, "r1")
    second.finish(reply(source, "the answer"))
    second.close()
    assert len(fake.calls_of("sendMessage")) == 1
    assert fake.messages[(42, 1000)]["text"] == "the answer"


def test_a_429_on_the_final_edit_is_waited_out(sender: TelegramSender,
                                               fake: FakeTelegram) -> None:
    source = inbound()
    stream = sender.open(source, "r1")
    fake.fail_next("editMessageText", times=1, retry_after=1)
    stream.finish(reply(source, "late but here"))
    stream.close()
    edits = fake.calls_of("editMessageText")
    assert [e.params["text"] for e in edits] == ["late but here", "late but here"]
    assert edits[1].at - edits[0].at >= 0.9
    assert fake.messages[(42, 1000)]["text"] == "late but here"


def test_a_429_beyond_the_cap_raises_so_celery_retries(sender: TelegramSender,
                                                      fake: FakeTelegram,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from telegram.error import RetryAfter

    monkeypatch.setattr(sender_module, "MAX_RETRY_WAIT_SECONDS", 0.5)
    source = inbound()
    stream = sender.open(source, "r1")
    fake.fail_next("editMessageText", times=1, retry_after=5)
    with pytest.raises(RetryAfter):
        stream.finish(reply(source, "text"))
    stream.close()


def test_rejected_entities_fall_back_to_plain_text(sender: TelegramSender,
                                                   fake: FakeTelegram) -> None:
    source = inbound()
    stream = sender.open(source, "r1")
    fake.fail_next("editMessageText", times=1, description="Bad Request: can't parse entities")
    stream.finish(reply(source, "**bold**"))
    stream.close()
    last = fake.calls_of("editMessageText")[-1].params
    assert last["text"] == "**bold**" and "parse_mode" not in last


def test_a_long_reply_is_split_over_several_messages(sender: TelegramSender,
                                                     fake: FakeTelegram,
                                                     fake_redis: fakeredis.FakeRedis) -> None:
    source = inbound(-100777, thread=3)
    text = "\n\n".join(f"Part {n}: " + "lorem ipsum " * 200 for n in range(5))  # 5 x 2.4k
    stream = sender.open(source, "r1")
    stream.finish(reply(source, text))
    stream.close()
    sent = fake.calls_of("sendMessage")
    assert len(sent) == 5  # the placeholder (edited to part 0), then parts 1-4
    assert all(c.params["message_thread_id"] == 3 for c in sent)
    shown = [fake.messages[(-100777, 1000)]["text"]] + [c.params["text"] for c in sent[1:]]
    assert " ".join(" ".join(shown).split()) == " ".join(text.split())
    # A retried finish edits the pieces it already posted instead of posting them again.
    again = sender.open(source, "r1")
    again.finish(reply(source, text))
    again.close()
    assert len(fake.calls_of("sendMessage")) == 5


def test_an_error_reply_is_sent_as_plain_text(sender: TelegramSender,
                                              fake: FakeTelegram) -> None:
    source = inbound()
    stream = sender.open(source, "r1")
    stream.finish(reply(source, "Sorry, something went wrong <oops>", "error"))
    stream.close()
    last = fake.calls_of("editMessageText")[-1].params
    assert last["text"] == "Sorry, something went wrong <oops>" and "parse_mode" not in last


def test_without_a_placeholder_the_final_text_is_sent(sender: TelegramSender,
                                                     fake: FakeTelegram) -> None:
    source = inbound()
    fake.fail_next("sendMessage", times=1, description="Bad Request: chat not found")
    stream = sender.open(source, "r1")
    stream.finish(reply(source, "here"))
    stream.close()
    assert fake.calls_of("sendMessage")[-1].params["text"] == "here"
