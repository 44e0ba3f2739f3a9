"""The dispatcher's order: a duplicate first (not charged), then the limits, then the queue."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest
import redis

from assistant import turns
from assistant.dispatch import Dispatcher, Submitted
from assistant.envelope import ConversationKey, Inbound
from assistant.errors import QueueUnavailable, RateLimited
from assistant.limits import Limits, Rate
from assistant.prompts import PromptLibrary
from tests.auxil.fake_celery import QUEUE, FakeCelery, fake_backend


def message(dedupe: str, user: str = "u1") -> Inbound:
    return Inbound(dedupe_id=dedupe, user_id=user, text="hi",
                   conversation=ConversationKey(platform="web", channel="c1"))


def pending(client: fakeredis.FakeRedis) -> list[Inbound]:
    return turns.pending(client, ConversationKey(platform="web", channel="c1"))


@pytest.fixture
def celery(fake_redis: fakeredis.FakeRedis) -> FakeCelery:
    return FakeCelery(fake_redis)


def dispatcher(client: fakeredis.FakeRedis, celery: FakeCelery, **rules: Any) -> Dispatcher:
    return Dispatcher(client, fake_backend(celery), limits=Limits(**rules))  # type: ignore[arg-type]


def test_without_limits_nothing_is_refused(fake_redis: fakeredis.FakeRedis,
                                           celery: FakeCelery) -> None:
    plain = Dispatcher(fake_redis, fake_backend(celery))  # type: ignore[arg-type]
    results = [plain.submit(message(f"d{i}")) for i in range(30)]
    assert all(results) and results[0] == Submitted(True)
    assert fake_redis.llen(QUEUE) == 30 and fake_redis.keys("assistant:rate:*") == []
    assert not plain.submit(message("d0"))  # still deduped


def test_a_duplicate_is_not_charged_nor_refused(fake_redis: fakeredis.FakeRedis,
                                                celery: FakeCelery,
                                                prompts: PromptLibrary) -> None:
    limited = dispatcher(fake_redis, celery, user_rate=Rate(1, 60), prompts=prompts)
    assert limited.submit(message("first")) == Submitted(True)
    # The bucket is empty now, but a retry of the accepted message is a duplicate, not refused.
    assert limited.submit(message("first")) == Submitted(False)
    assert len(pending(fake_redis)) == 1 and fake_redis.llen(QUEUE) == 1


def test_a_refused_message_is_not_queued(fake_redis: fakeredis.FakeRedis, celery: FakeCelery,
                                         prompts: PromptLibrary) -> None:
    limited = dispatcher(fake_redis, celery, user_rate=Rate(1, 60), prompts=prompts)
    limited.submit(message("first"))
    with pytest.raises(RateLimited) as refused:
        limited.submit(message("second"))
    assert refused.value.retry_after_seconds > 0 and not refused.value.repeated
    assert [i.dedupe_id for i in pending(fake_redis)] == ["first"]
    assert fake_redis.llen(QUEUE) == 1
    assert not fake_redis.exists(turns.dedupe_key("second"))  # a later retry can be accepted
    # The same platform message again (a Slack twin event): refused, flagged as told already.
    with pytest.raises(RateLimited) as again:
        limited.submit(message("second"))
    assert again.value.repeated
    assert limited.submit(message("other", user="u2"))  # another user is served


def test_past_the_queue_depth_the_message_is_queued_with_its_place(
        fake_redis: fakeredis.FakeRedis, celery: FakeCelery, prompts: PromptLibrary) -> None:
    busy = dispatcher(fake_redis, celery, max_queue_depth=2, prompts=prompts)
    assert busy.submit(message("a")) == Submitted(True)
    assert busy.submit(message("b")) == Submitted(True)
    third = busy.submit(message("c"))
    assert third.accepted and third.queue_position == 3
    assert third.notice == ("I'm busy right now — you're number 3 in line. "
                            "I'll answer as soon as I can.")
    assert len(pending(fake_redis)) == 3 and fake_redis.llen(QUEUE) == 3


def test_a_broker_failure_takes_the_message_back(fake_redis: fakeredis.FakeRedis,
                                                 celery: FakeCelery,
                                                 prompts: PromptLibrary) -> None:
    limited = dispatcher(fake_redis, celery, user_rate=Rate(5, 60), prompts=prompts)
    celery.broken = True
    with pytest.raises(QueueUnavailable):
        limited.submit(message("lost"))
    assert pending(fake_redis) == [] and not fake_redis.exists(turns.dedupe_key("lost"))


def test_an_event_answered_at_the_edge_is_claimed_once(fake_redis: fakeredis.FakeRedis,
                                                       celery: FakeCelery) -> None:
    """A command (Telegram's /help) is not queued, but its redelivery is seen as one: the
    same dedupe key as a queued message, so a message and a command never share an id."""
    plain = Dispatcher(fake_redis, fake_backend(celery))  # type: ignore[arg-type]
    assert plain.claim("telegram:1:42", "m42") is True
    assert plain.claim("telegram:1:42", "m42") is False
    assert not plain.submit(message("telegram:1:42"))  # the same update as a message: a twin
    assert fake_redis.llen(QUEUE) == 0


def test_claiming_with_redis_down_is_queue_unavailable(celery: FakeCelery) -> None:
    down = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    with pytest.raises(QueueUnavailable):
        Dispatcher(down, fake_backend(celery)).claim("d", "m")  # type: ignore[arg-type]
