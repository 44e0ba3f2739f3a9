"""Conversation-affine routing on a fake Redis: where a turn goes, and dead nodes' queues."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import fakeredis

from assistant.envelope import ConversationKey, Inbound
from worker import affinity
from worker.affinity import Heartbeat, Router, direct_queue, turn_finished, turn_started
from worker.dispatch import Dispatcher

CONVERSATION = ConversationKey(platform="web", channel="c1")
SHARED = "assistant.turns"


class RecordingCelery:
    """Records where ``send_task`` would have sent each task."""

    def __init__(self) -> None:
        self.conf = SimpleNamespace(task_default_queue=SHARED)
        self.sent: list[dict[str, Any]] = []

    def send_task(self, name: str, args: list[Any], **options: Any) -> None:
        self.sent.append(options)


def alive(client: fakeredis.FakeRedis, node: str) -> Heartbeat:
    heartbeat = Heartbeat(client, node, SHARED, forget_after_seconds=60)
    heartbeat.beat()
    return heartbeat


def test_direct_queues_are_celerys_worker_direct_queues() -> None:
    assert direct_queue("w1@host") == "w1@host.dq2"


def test_a_conversation_goes_back_to_its_idle_live_node(fake_redis: fakeredis.FakeRedis) -> None:
    router = Router(fake_redis)
    assert router.node_for(CONVERSATION) is None  # never answered: shared queue
    alive(fake_redis, "w1@h")
    turn_started(fake_redis, "w1@h", CONVERSATION.redis_id)
    turn_finished(fake_redis, "w1@h", CONVERSATION.redis_id)
    assert router.node_for(CONVERSATION) == "w1@h"


def test_a_busy_node_or_one_with_a_queue_is_skipped(fake_redis: fakeredis.FakeRedis) -> None:
    router = Router(fake_redis)
    alive(fake_redis, "w1@h")
    turn_finished(fake_redis, "w1@h", CONVERSATION.redis_id)
    turn_started(fake_redis, "w1@h", "another-conversation")
    assert router.node_for(CONVERSATION) is None
    turn_finished(fake_redis, "w1@h", None)  # a turn that answered nothing moves no mapping
    assert router.node_for(CONVERSATION) == "w1@h"
    fake_redis.lpush(direct_queue("w1@h"), "queued")
    assert router.node_for(CONVERSATION) is None


def test_a_dead_node_is_skipped(fake_redis: fakeredis.FakeRedis) -> None:
    router = Router(fake_redis)
    heartbeat = alive(fake_redis, "w1@h")
    turn_finished(fake_redis, "w1@h", CONVERSATION.redis_id)
    heartbeat.stop()
    assert router.node_for(CONVERSATION) is None


def test_the_dispatcher_sends_to_the_nodes_queue_or_the_shared_one(
    fake_redis: fakeredis.FakeRedis,
) -> None:
    celery = RecordingCelery()
    dispatcher = Dispatcher(fake_redis, celery)  # type: ignore[arg-type]

    def submit(dedupe: str) -> dict[str, Any]:
        assert dispatcher.submit(Inbound(dedupe_id=dedupe, user_id="u", text="hi",
                                         conversation=CONVERSATION))
        return celery.sent[-1]

    assert "queue" not in submit("m1")
    alive(fake_redis, "w1@h")
    turn_finished(fake_redis, "w1@h", CONVERSATION.redis_id)
    assert submit("m2")["queue"].name == "w1@h.dq2"


def test_a_dead_nodes_queue_is_moved_to_the_shared_queue_oldest_first(
    fake_redis: fakeredis.FakeRedis,
) -> None:
    dead = alive(fake_redis, "dead@h")
    survivor = alive(fake_redis, "live@h")
    for message in ("old", "new"):  # kombu pushes left, pops right
        fake_redis.lpush(direct_queue("dead@h"), message)
    fake_redis.lpush(SHARED, "waiting")
    assert survivor.sweep() == 0  # alive: left alone
    dead.stop()
    assert survivor.sweep() == 2
    assert fake_redis.llen(direct_queue("dead@h")) == 0
    consumed = [fake_redis.rpop(SHARED) for _ in range(3)]
    assert consumed == [b"old", b"new", b"waiting"]
    assert fake_redis.zscore(affinity.WORKERS_KEY, "dead@h") is not None  # kept a while


def test_a_long_dead_node_with_an_empty_queue_is_forgotten(
    fake_redis: fakeredis.FakeRedis,
) -> None:
    survivor = alive(fake_redis, "live@h")
    fake_redis.zadd(affinity.WORKERS_KEY, {"gone@h": time.time() - 3600})
    survivor.sweep()
    assert fake_redis.zscore(affinity.WORKERS_KEY, "gone@h") is None
    assert fake_redis.zscore(affinity.WORKERS_KEY, "live@h") is not None


def test_the_task_signals_record_busy_and_where_a_conversation_was_answered(
    fake_redis: fakeredis.FakeRedis,
) -> None:
    receivers = affinity._Signals(lambda: fake_redis, "assistant.answer_conversation", SHARED,
                                  60)
    task = SimpleNamespace(name="assistant.answer_conversation",
                           request=SimpleNamespace(hostname="w1@h"))
    args = [CONVERSATION.model_dump_json()]
    receivers.task_prerun(sender=task, args=args)
    assert fake_redis.get(affinity.busy_key("w1@h")) == CONVERSATION.redis_id.encode()
    receivers.task_postrun(sender=task, args=args, retval=0, state="SUCCESS")
    assert fake_redis.get(affinity.busy_key("w1@h")) is None
    assert fake_redis.get(affinity.affinity_key(CONVERSATION.redis_id)) is None
    receivers.task_postrun(sender=task, args=args, retval=1, state="SUCCESS")
    assert fake_redis.get(affinity.affinity_key(CONVERSATION.redis_id)) == b"w1@h"
    other = SimpleNamespace(name="other", request=SimpleNamespace(hostname="w1@h"))
    receivers.task_prerun(sender=other, args=args)
    assert fake_redis.get(affinity.busy_key("w1@h")) is None
