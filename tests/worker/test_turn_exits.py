"""Every exit from a turn frees the engine and the conversation lock (issue 16, cause 1).

The real llama.cpp engine, in this process, with a Redis whose PUBLISH fails mid-stream as a
Valkey paused under load does: the turn fails, and the next turn in the same process answers
at once instead of waiting forever on the engine's lock.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis

from assistant import turns
from assistant.conversation import Outcome, Runtime, answer_pending
from assistant.pipeline import TurnConfig
from assistant.prompts import PromptLibrary
from assistant.stream import Publisher, stored_reply
from tests.auxil.factories import inbound
from worker.llama import LlamaEngine


@pytest.fixture(scope="module")
def engine(model_path: Path) -> LlamaEngine:
    return LlamaEngine(model_path, context_size=1024, threads=2, threads_batch=2)


def test_a_publisher_that_raises_mid_stream_frees_the_engine_and_the_lock(
        engine: LlamaEngine, prompts: PromptLibrary, fake_redis: fakeredis.FakeRedis,
        monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = Runtime(client=fake_redis, engine=engine, prompts=prompts,
                      config=TurnConfig(max_tokens=24, temperature=0.7),
                      retention_seconds=3600, max_deliveries=3, senders={},
                      stream_interval_seconds=0.0)
    message = inbound("Tell me a story about a knight.")
    turns.submit(fake_redis, message)
    flush = Publisher.flush
    calls = {"n": 0}

    def failing_flush(self: Publisher, *args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 3:  # a few tokens in: Redis times out
            raise redis.TimeoutError("Timeout reading from socket")
        flush(self, *args, **kwargs)

    monkeypatch.setattr(Publisher, "flush", failing_flush)
    with pytest.raises(redis.TimeoutError) as failed:
        answer_pending(runtime, message.conversation)
    # Celery's retry keeps the exception (and its traceback's frames) alive: so do we.
    assert failed.value is not None
    assert fake_redis.get(turns.lock_key(message.conversation)) is None
    assert stored_reply(fake_redis, message.conversation, message.message_id) is None

    outcome: list[Outcome] = []
    rerun = threading.Thread(target=lambda: outcome.append(
        answer_pending(runtime, message.conversation)), daemon=True)
    rerun.start()
    rerun.join(timeout=60)
    assert not rerun.is_alive(), "the next turn waited on the engine the failed turn held"
    assert outcome == [Outcome(turns=1)]
    reply = stored_reply(fake_redis, message.conversation, message.message_id)
    assert reply is not None and reply.text
    assert turns.pending(fake_redis, message.conversation) == []
