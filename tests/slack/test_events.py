"""Signed requests to POST /slack/events through the real bolt app (mounted as the web does).

The dispatcher is replaced by ``turns.submit`` on a fake Redis (the dedupe and pending list the
real ``Dispatcher`` uses, without Celery); auth.test goes to the fake Slack Web API.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import fakeredis
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from assistant import turns
from assistant.envelope import ConversationKey, Inbound
from assistant.errors import QueueUnavailable
from assistant.memory import RedisConversationHistory
from assistant.settings import Settings
from assistant.store import shared_store
from assistant.store.archive import Archive, ArchivedMessage
from integrations.slack import http
from tests.slack.fake_slack import BOT_USER_ID, FakeSlack, event_body, sign

SECRET = "test-secret"


class Submitter:
    def __init__(self, client: fakeredis.FakeRedis) -> None:
        self.client = client
        self.accepted: list[Inbound] = []
        self.broken = False

    def submit(self, inbound: Inbound) -> bool:
        if self.broken:
            raise QueueUnavailable("Redis is unavailable")
        if turns.submit(self.client, inbound):
            self.accepted.append(inbound)
            return True
        return False


@pytest.fixture
def settings(fake_slack: FakeSlack, tmp_path: Path) -> Settings:
    return Settings(SLACK_BOT_TOKEN="xoxb-test", SLACK_SIGNING_SECRET=SECRET,
                    SLACK_API_URL=fake_slack.api_url,
                    DATABASE_URL=f"sqlite:///{tmp_path / 'assistant.db'}")


@pytest.fixture
def submitter(fake_redis: fakeredis.FakeRedis) -> Submitter:
    return Submitter(fake_redis)


@pytest.fixture
def web(settings: Settings, submitter: Submitter,
        fake_redis: fakeredis.FakeRedis) -> Iterator[TestClient]:
    app = FastAPI()
    http.mount(app, settings, fake_redis, submitter)  # type: ignore[arg-type]
    with TestClient(app) as client:
        yield client


def post(web: TestClient, payload: dict[str, Any], timestamp: int | None = None,
         secret: str = SECRET, headers: dict[str, str] | None = None) -> Any:
    body = json.dumps(payload).encode()
    return web.post(http.EVENTS_PATH, content=body,
                    headers=sign(secret, body, timestamp) | (headers or {}))


def command(web: TestClient, text: str, channel: str = "D1") -> Any:
    body = urlencode({"command": "/assistant", "text": text, "team_id": "T1", "user_id": "U1",
                      "channel_id": channel, "response_url": "http://127.0.0.1:1/hook",
                      "trigger_id": "1.2.3"}).encode()
    headers = sign(SECRET, body) | {"Content-Type": "application/x-www-form-urlencoded"}
    return web.post(http.EVENTS_PATH, content=body, headers=headers)


def mention(ts: str = "100.000001", **extra: Any) -> dict[str, Any]:
    return {"type": "app_mention", "user": "U1", "text": f"<@{BOT_USER_ID}> hello", "ts": ts,
            "channel": "C1", "event_ts": ts} | extra


def in_thread(ts: str, thread_ts: str = "100.000001", **extra: Any) -> dict[str, Any]:
    return {"type": "message", "channel_type": "channel", "user": "U2", "text": "and then?",
            "ts": ts, "thread_ts": thread_ts, "channel": "C1", "event_ts": ts} | extra


def test_url_verification_is_answered(web: TestClient) -> None:
    response = post(web, {"type": "url_verification", "challenge": "abc123", "token": "x"})
    assert response.status_code == 200
    assert response.json() == {"challenge": "abc123"}


@pytest.mark.parametrize(("secret", "age"), [("wrong-secret", 0), (SECRET, 301)])
def test_a_bad_signature_or_an_old_timestamp_is_refused(web: TestClient, submitter: Submitter,
                                                        secret: str, age: int) -> None:
    response = post(web, event_body(mention(), "Ev1"), timestamp=int(time.time()) - age,
                    secret=secret)
    assert response.status_code == 401
    assert submitter.accepted == []


def test_a_mention_is_queued_once_despite_slack_retries(web: TestClient,
                                                        submitter: Submitter) -> None:
    assert post(web, event_body(mention(), "Ev1")).status_code == 200
    assert post(web, event_body(mention(), "Ev1"), headers={"X-Slack-Retry-Num": "1",
                "X-Slack-Retry-Reason": "http_timeout"}).status_code == 200
    [inbound] = submitter.accepted
    assert inbound.text == "hello"
    assert inbound.reply_to == {"team": "T1", "channel": "C1", "thread_ts": "100.000001"}


def test_the_thread_is_followed_without_a_mention_after_one(web: TestClient,
                                                            submitter: Submitter) -> None:
    post(web, event_body(in_thread("100.000002"), "Ev0"))
    assert submitter.accepted == []  # not part of the thread yet
    post(web, event_body(mention(), "Ev1"))
    post(web, event_body(in_thread("100.000003"), "Ev2"))
    assert [i.text for i in submitter.accepted] == ["hello", "and then?"]
    assert len({i.conversation for i in submitter.accepted}) == 1


def test_a_mention_inside_a_known_thread_is_answered_once(web: TestClient,
                                                          submitter: Submitter) -> None:
    post(web, event_body(mention(), "Ev1"))
    twin = {"text": f"<@{BOT_USER_ID}> again", "thread_ts": "100.000001"}
    post(web, event_body(in_thread("100.000004", **twin), "Ev3"))
    post(web, event_body(mention("100.000004", **twin), "Ev4"))
    assert [i.text for i in submitter.accepted] == ["hello", "again"]


@pytest.mark.parametrize("extra", [
    {"bot_id": "B2", "subtype": "bot_message"},
    {"user": BOT_USER_ID},
    {"subtype": "message_changed"},
    {"subtype": "channel_join"},
])
def test_bots_ourselves_edits_and_joins_are_ignored(web: TestClient, submitter: Submitter,
                                                    fake_slack: FakeSlack,
                                                    extra: dict[str, Any]) -> None:
    post(web, event_body(mention(), "Ev1"))
    response = post(web, event_body(in_thread("100.000005", **extra), "Ev5"))
    assert response.status_code == 200
    assert len(submitter.accepted) == 1
    assert {c.method for c in fake_slack.calls} == {"auth.test"}  # nothing posted


def test_a_dm_is_always_answered(web: TestClient, submitter: Submitter) -> None:
    dm = {"type": "message", "channel_type": "im", "user": "U1", "text": "hey", "ts": "5.1",
          "channel": "D1"}
    post(web, event_body(dm, "Ev6"))
    [inbound] = submitter.accepted
    assert inbound.conversation.user == "U1"


def test_when_redis_is_down_slack_gets_an_error_and_retries(web: TestClient,
                                                            submitter: Submitter) -> None:
    submitter.broken = True
    assert post(web, event_body(mention(), "Ev1")).status_code == 500
    submitter.broken = False
    assert post(web, event_body(mention(), "Ev1"),
                headers={"X-Slack-Retry-Num": "1"}).status_code == 200
    assert len(submitter.accepted) == 1


def test_slash_command_help_is_ephemeral(web: TestClient) -> None:
    response = command(web, "help")
    assert response.status_code == 200
    body = response.json()
    assert body["response_type"] == "ephemeral" and "/assistant reset" in body["text"]


def test_slash_command_reset_clears_the_dm(web: TestClient,
                                           fake_redis: fakeredis.FakeRedis) -> None:
    dm = ConversationKey(platform="slack", workspace="T1", channel="D1", user="U1")
    history = RedisConversationHistory(fake_redis, dm, 3600)
    from assistant.envelope import ChatMessage

    history.append([ChatMessage(role="user", text="remember me", user_id="U1")])
    assert history.records()
    assert "starts over" in command(web, "reset").json()["text"]
    assert history.records() == []
    assert "thread" in command(web, "reset", channel="C1").json()["text"]


def test_slash_command_forget_deletes_the_users_memory(web: TestClient, settings: Settings,
                                                       fake_redis: fakeredis.FakeRedis) -> None:
    dm = ConversationKey(platform="slack", workspace="T1", channel="D1", user="U1")
    history = RedisConversationHistory(fake_redis, dm, 3600)
    from assistant.envelope import ChatMessage

    history.append([ChatMessage(role="user", text="remember me", user_id="U1")])
    archive = Archive(shared_store(settings.sql_url))
    archive.record_turn(dm, [ArchivedMessage(message_id="m1", role="user", text="remember me",
                                             user_id="U1")])
    assert archive.get(dm.redis_id) is not None
    answer = command(web, "forget").json()
    assert answer["response_type"] == "ephemeral" and "deleted" in answer["text"]
    assert history.records() == []
    assert archive.get(dm.redis_id) is None  # the archive forgets too, not only the memory
