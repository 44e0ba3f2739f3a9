"""SlackSender against the fake Slack Web API: placeholder, throttled edits, final text.

The real model cannot be made to write ``<!channel>``, so escaping of model output is checked
here, by driving the sender that the worker uses with such a reply.
"""

from __future__ import annotations

import time

import fakeredis
import pytest
from slack_sdk import WebClient

from assistant.delivery import platform_message
from assistant.envelope import ConversationKey, Inbound, Reply
from integrations.slack.sender import SlackRateLimited, SlackSender
from tests.slack.fake_slack import FakeSlack

CONVERSATION = ConversationKey(platform="slack", workspace="T1", channel="C1", thread="111.1")


def inbound() -> Inbound:
    return Inbound(dedupe_id="slack:T1:C1:111.1", conversation=CONVERSATION, user_id="U1",
                   text="hi", reply_to={"team": "T1", "channel": "C1", "thread_ts": "111.1"})


def reply(text: str, **extra: object) -> Reply:
    return Reply(message_id="r1", conversation=CONVERSATION, in_reply_to=("m1",), text=text,
                 reply_to=inbound().reply_to, **extra)


@pytest.fixture
def sender(fake_slack: FakeSlack, fake_redis: fakeredis.FakeRedis) -> SlackSender:
    web = WebClient(token="xoxb-test", base_url=fake_slack.api_url)
    return SlackSender(web, fake_redis, interval=0.3, max_wait=5)


def test_placeholder_then_throttled_edits_then_the_whole_answer(
        sender: SlackSender, fake_slack: FakeSlack, fake_redis: fakeredis.FakeRedis) -> None:
    stream = sender.open(inbound(), "r1")
    [placeholder] = fake_slack.calls_of("chat.postMessage")
    assert placeholder.args["thread_ts"] == "111.1" and placeholder.args["channel"] == "C1"
    ts = platform_message(fake_redis, "r1")
    assert ts is not None and ts.startswith("C1:")
    text = ""
    for word in ["**Hello**", " there,", " friend", "."] * 5:
        text += word
        stream.update(text)
        time.sleep(0.05)
    stream.finish(reply(text))
    stream.close()
    edits = fake_slack.calls_of("chat.update")
    assert edits and all(e.args["ts"] == ts.split(":", 1)[1] for e in edits)
    assert edits[-1].args["text"] == text.replace("**", "*")
    gaps = [b.at - a.at for a, b in zip(edits, edits[1:], strict=False)]
    assert all(gap >= 0.28 for gap in gaps), gaps
    assert len(fake_slack.calls_of("chat.postMessage")) == 1


def test_model_output_cannot_ping_the_channel(sender: SlackSender,
                                              fake_slack: FakeSlack) -> None:
    stream = sender.open(inbound(), "r1")
    stream.finish(reply("<!channel> hi"))
    stream.close()
    assert fake_slack.calls_of("chat.update")[-1].args["text"] == "&lt;!channel&gt; hi"


def test_a_long_answer_is_split_into_messages_in_the_thread(sender: SlackSender,
                                                            fake_slack: FakeSlack) -> None:
    long_text = "\n\n".join(f"Paragraph {i}. " + "words " * 150 for i in range(12))
    stream = sender.open(inbound(), "r1")
    stream.finish(reply(long_text))
    stream.close()
    posts = fake_slack.calls_of("chat.postMessage")
    assert len(posts) >= 3  # the placeholder plus at least two more pieces
    assert all(p.args["thread_ts"] == "111.1" for p in posts)
    shown = [fake_slack.calls_of("chat.update")[-1].args["text"]] + [
        p.args["text"] for p in posts[1:]]
    assert all(len(piece) <= 4000 for piece in shown)
    assert " ".join(" ".join(shown).split()) == " ".join(long_text.split())

    # A retried finish (e.g. after a crash) edits the same messages instead of reposting.
    again = sender.open(inbound(), "r1")
    again.finish(reply(long_text))
    again.close()
    assert len(fake_slack.calls_of("chat.postMessage")) == len(posts)


def test_a_rate_limited_final_edit_is_waited_out(sender: SlackSender,
                                                 fake_slack: FakeSlack) -> None:
    stream = sender.open(inbound(), "r1")
    fake_slack.rate_limit("chat.update", times=2)
    stream.finish(reply("done"))
    stream.close()
    updates = fake_slack.calls_of("chat.update")
    assert len(updates) == 3 and updates[-1].args["text"] == "done"
    assert updates[-1].at - updates[0].at >= 1.9  # two Retry-After: 1 waited out


def test_a_rate_limit_longer_than_the_cap_raises_for_a_later_retry(
        fake_slack: FakeSlack, fake_redis: fakeredis.FakeRedis) -> None:
    web = WebClient(token="xoxb-test", base_url=fake_slack.api_url)
    sender = SlackSender(web, fake_redis, interval=0.1, max_wait=0.5)
    stream = sender.open(inbound(), "r1")
    fake_slack.rate_limit("chat.update", times=1)
    with pytest.raises(SlackRateLimited):
        stream.finish(reply("done"))
    stream.close()
    retried = sender.open(inbound(), "r1")  # what Celery's retry does: same message, no repost
    retried.finish(reply("done"))
    retried.close()
    assert len(fake_slack.calls_of("chat.postMessage")) == 1
    assert fake_slack.calls_of("chat.update")[-1].args["text"] == "done"


def test_an_error_reply_is_a_short_friendly_message(sender: SlackSender,
                                                    fake_slack: FakeSlack) -> None:
    stream = sender.open(inbound(), "r1")
    stream.finish(reply("", finish_reason="error"))
    stream.close()
    assert "Sorry" in fake_slack.calls_of("chat.update")[-1].args["text"]


def test_without_a_placeholder_finish_posts_the_answer(sender: SlackSender,
                                                       fake_slack: FakeSlack) -> None:
    fake_slack.rate_limit("chat.postMessage", times=1)
    stream = sender.open(inbound(), "r1")  # the placeholder fails: logged, not raised
    stream.update("partial")
    stream.finish(reply("final"))
    stream.close()
    posts = fake_slack.calls_of("chat.postMessage")
    assert posts[-1].args["text"] == "final" and not fake_slack.calls_of("chat.update")
