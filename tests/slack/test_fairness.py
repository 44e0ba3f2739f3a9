"""A throttled or queued-behind Slack message, through the real bolt app and Dispatcher.

Events are signed and posted to /slack/events as Slack does; the Dispatcher runs on a fake
Redis with a fake Celery producer, and the user's notice goes to the fake Slack Web API.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from assistant import turns
from assistant.dispatch import Dispatcher
from assistant.envelope import ConversationKey
from assistant.limits import Limits, Rate
from assistant.prompts import PromptLibrary
from assistant.settings import Settings
from integrations.slack import http
from tests.auxil.fake_celery import QUEUE, FakeCelery, fake_backend
from tests.slack.fake_slack import FakeSlack, event_body
from tests.slack.test_events import SECRET, mention, post


def web_with(fake_slack: FakeSlack, fake_redis: fakeredis.FakeRedis, limits: Limits
             ) -> TestClient:
    settings = Settings(SLACK_BOT_TOKEN="xoxb-test", SLACK_SIGNING_SECRET=SECRET,
                        SLACK_API_URL=fake_slack.api_url)
    dispatcher = Dispatcher(fake_redis, fake_backend(FakeCelery(fake_redis)),  # type: ignore[arg-type]
                            limits=limits)
    app = FastAPI()
    http.mount(app, settings, fake_redis, dispatcher)
    return TestClient(app)


@pytest.fixture
def limited(fake_slack: FakeSlack, fake_redis: fakeredis.FakeRedis,
            prompts: PromptLibrary) -> Iterator[TestClient]:
    with web_with(fake_slack, fake_redis, Limits(user_rate=Rate(1, 60), prompts=prompts)
                  ) as client:
        yield client


def dm(ts: str, text: str = "hello") -> dict[str, Any]:
    return {"type": "message", "channel_type": "im", "user": "U1", "text": text, "ts": ts,
            "channel": "D1", "event_ts": ts}


def dm_pending(fake_redis: fakeredis.FakeRedis) -> list[str]:
    conversation = ConversationKey(platform="slack", workspace="T1", channel="D1", user="U1")
    return [i.text for i in turns.pending(fake_redis, conversation)]


def test_a_throttled_message_gets_an_ephemeral_notice_and_is_not_queued(
        limited: TestClient, fake_slack: FakeSlack, fake_redis: fakeredis.FakeRedis) -> None:
    assert post(limited, event_body(dm("1.000001", "first"), "Ev1")).status_code == 200
    response = post(limited, event_body(dm("1.000002", "second"), "Ev2"))
    assert response.status_code == 200  # acked: Slack must not deliver it again
    [notice] = fake_slack.calls_of("chat.postEphemeral")
    assert notice.args["channel"] == "D1" and notice.args["user"] == "U1"
    assert notice.args["text"].startswith("You're sending messages faster than I can answer")
    assert notice.args["text"].endswith("try again in 1 minute.")
    assert dm_pending(fake_redis) == ["first"] and fake_redis.llen(QUEUE) == 1
    # Slack's retry of the refused event is refused again, without a second notice.
    post(limited, event_body(dm("1.000002", "second"), "Ev2"),
         headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})
    assert len(fake_slack.calls_of("chat.postEphemeral")) == 1
    assert fake_slack.calls_of("chat.postMessage") == []


def test_a_mention_refused_in_a_channel_is_told_in_its_thread(
        limited: TestClient, fake_slack: FakeSlack) -> None:
    post(limited, event_body(mention("100.000001"), "Ev1"))
    post(limited, event_body(mention("100.000002"), "Ev2"))
    [notice] = fake_slack.calls_of("chat.postEphemeral")
    assert notice.args["channel"] == "C1" and notice.args["thread_ts"] == "100.000002"


def test_a_busy_queue_tells_the_user_their_place(fake_slack: FakeSlack,
                                                 fake_redis: fakeredis.FakeRedis,
                                                 prompts: PromptLibrary) -> None:
    with web_with(fake_slack, fake_redis, Limits(max_queue_depth=1, prompts=prompts)) as web:
        post(web, event_body(dm("1.000001", "first"), "Ev1"))
        assert fake_slack.calls_of("chat.postEphemeral") == []
        post(web, event_body(dm("1.000002", "second"), "Ev2"))
    [notice] = fake_slack.calls_of("chat.postEphemeral")
    assert "you're number 2 in line" in notice.args["text"]
    assert dm_pending(fake_redis) == ["first", "second"]  # queued all the same
