"""Shared fixtures: a fake Redis and a fake engine for unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest

from assistant.conversation import Runtime
from assistant.engine import FakeEngine
from assistant.pipeline import TurnConfig
from assistant.prompts import PromptLibrary


@pytest.fixture
def fake_redis() -> Iterator[fakeredis.FakeRedis]:
    client = fakeredis.FakeRedis()
    yield client
    client.close()


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture(scope="session")
def prompts() -> PromptLibrary:
    return PromptLibrary.load()


@pytest.fixture
def runtime(fake_redis: fakeredis.FakeRedis, engine: FakeEngine,
            prompts: PromptLibrary) -> Runtime:
    return Runtime(client=fake_redis, engine=engine, prompts=prompts,
                   config=TurnConfig(max_tokens=64, temperature=0.0),
                   retention_seconds=3600, max_deliveries=3, senders={})
