"""The web edge of fairness, in-process: 429 with Retry-After, and the busy queue's place.

The routes run on a fake Redis with a fake Celery producer (no worker: nothing is answered,
so a stream ends with the reply timeout); the whole stack is in tests/integration.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import fakeredis
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from assistant.dispatch import Dispatcher
from assistant.limits import Limits, Rate, record_tokens, seconds_until_utc_midnight
from assistant.prompts import PromptLibrary
from assistant.settings import Settings
from integrations.web import api, errors, openai_api
from integrations.web.deps import WebState
from tests.auxil.fake_celery import QUEUE, FakeCelery, fake_backend


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


def web_app(server: fakeredis.FakeServer, limits: Limits) -> TestClient:
    client = fakeredis.FakeRedis(server=server)
    aclient = fakeredis.FakeAsyncRedis(server=server)
    celery = FakeCelery(client)
    state = WebState(settings=Settings(ASSISTANT_REPLY_TIMEOUT="1"), client=client,
                     aclient=aclient, backend=fake_backend(celery),  # type: ignore[arg-type]
                     dispatcher=Dispatcher(client, fake_backend(celery), limits=limits))  # type: ignore[arg-type]
    app = FastAPI()
    app.state.web = state
    errors.install(app)
    app.include_router(api.router)
    app.include_router(openai_api.router)
    return TestClient(app)


@pytest.fixture
def limited(server: fakeredis.FakeServer, prompts: PromptLibrary) -> Iterator[TestClient]:
    with web_app(server, Limits(user_rate=Rate(1, 60), prompts=prompts)) as client:
        yield client


def stream_events(client: TestClient, body: dict[str, Any]) -> tuple[Any, list[tuple[str, Any]]]:
    with client.stream("POST", "/api/chat", json=body | {"stream": True}) as response:
        found, kind = [], "message"
        for line in response.iter_lines():
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                found.append((kind, json.loads(line[5:])))
        return response, found


def test_a_user_past_the_rate_gets_429_with_retry_after(limited: TestClient,
                                                        server: fakeredis.FakeServer) -> None:
    first, _ = stream_events(limited, {"text": "hi", "user_id": "ada"})
    assert first.status_code == 200
    refused = limited.post("/api/chat", json={"text": "again", "user_id": "ada"})
    assert refused.status_code == 429
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    error = refused.json()["error"]
    assert error["type"] == "rate_limited" and error["code"] == 429
    assert error["message"].startswith("You're sending messages faster than I can answer")
    assert fakeredis.FakeRedis(server=server).llen(QUEUE) == 1  # the refused one not queued
    other, _ = stream_events(limited, {"text": "hi", "user_id": "bob"})
    assert other.status_code == 200


def test_the_openai_api_is_limited_per_user(limited: TestClient) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "user": "ada", "stream": True}
    with limited.stream("POST", "/v1/chat/completions", json=body) as first:
        assert first.status_code == 200
    refused = limited.post("/v1/chat/completions", json=body | {"stream": False})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0


def test_a_spent_quota_gets_429_until_midnight(server: fakeredis.FakeServer,
                                               prompts: PromptLibrary) -> None:
    record_tokens(fakeredis.FakeRedis(server=server), "web", "default", "ada", 10)
    with web_app(server, Limits(daily_tokens=10, prompts=prompts)) as client:
        refused = client.post("/api/chat", json={"text": "hi", "user_id": "ada"})
    assert refused.status_code == 429 and refused.json()["error"]["type"] == "quota_exceeded"
    expected = seconds_until_utc_midnight(datetime.now(UTC))
    assert expected - 5 <= int(refused.headers["Retry-After"]) <= expected


def test_a_busy_queue_sends_the_place_first(server: fakeredis.FakeServer,
                                            prompts: PromptLibrary) -> None:
    with web_app(server, Limits(max_queue_depth=1, prompts=prompts)) as client:
        first, events = stream_events(client, {"text": "one"})
        assert "X-Queue-Position" not in first.headers and events[0][0] != "queued"
        second, events = stream_events(client, {"text": "two"})
    assert second.headers["X-Queue-Position"] == "2"
    assert events[0] == ("queued", {"position": 2})
    assert events[-1][0] == "error"  # no worker here: the reply timeout ends the stream
