"""Conversation-affine routing on a fake Redis and a real one: where a turn goes (a node with a
free pool process), and dead nodes' queues."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import fakeredis
import pytest
import redis

from assistant.dispatch import Dispatcher
from assistant.envelope import ConversationKey, Inbound
from worker import affinity
from worker.affinity import (
    Heartbeat,
    PoolSize,
    Router,
    direct_queue,
    pool_size,
    turn_finished,
    turn_started,
)
from worker.backend import CeleryBackend

CONVERSATION = ConversationKey(platform="web", channel="c1")
SHARED = "assistant.turns"


class RecordingCelery:
    """Records where ``send_task`` would have sent each task."""

    def __init__(self) -> None:
        self.conf = SimpleNamespace(task_default_queue=SHARED)
        self.sent: list[dict[str, Any]] = []

    def send_task(self, name: str, args: list[Any], **options: Any) -> None:
        self.sent.append(options)


def alive(client: redis.Redis, node: str, processes: int = 1,
          pids: frozenset[int] | None = None) -> Heartbeat:
    heartbeat = Heartbeat(client, node, SHARED, forget_after_seconds=60,
                          pool=lambda: PoolSize(processes, pids))
    heartbeat.beat()
    return heartbeat


def test_direct_queues_are_celerys_worker_direct_queues() -> None:
    assert direct_queue("w1@host") == "w1@host.dq2"


def test_a_conversation_goes_back_to_its_idle_live_node(fake_redis: fakeredis.FakeRedis) -> None:
    router = Router(fake_redis)
    assert router.node_for(CONVERSATION) is None  # never answered: shared queue
    alive(fake_redis, "w1@h")
    turn_started(fake_redis, "w1@h", 101)
    turn_finished(fake_redis, "w1@h", 101, CONVERSATION.redis_id)
    assert router.node_for(CONVERSATION) == "w1@h"


def test_a_busy_node_or_one_with_a_queue_is_skipped(fake_redis: fakeredis.FakeRedis) -> None:
    router = Router(fake_redis)
    alive(fake_redis, "w1@h")
    turn_finished(fake_redis, "w1@h", 101, CONVERSATION.redis_id)
    turn_started(fake_redis, "w1@h", 101)  # another conversation's turn
    assert router.node_for(CONVERSATION) is None
    turn_finished(fake_redis, "w1@h", 101, None)  # answered nothing: moves no mapping
    assert router.node_for(CONVERSATION) == "w1@h"
    fake_redis.lpush(direct_queue("w1@h"), "queued")
    assert router.node_for(CONVERSATION) is None


def test_a_dead_node_is_skipped(fake_redis: fakeredis.FakeRedis) -> None:
    router = Router(fake_redis)
    heartbeat = alive(fake_redis, "w1@h")
    turn_finished(fake_redis, "w1@h", 101, CONVERSATION.redis_id)
    heartbeat.stop()
    assert router.node_for(CONVERSATION) is None


def test_the_dispatcher_sends_to_the_nodes_queue_or_the_shared_one(
    fake_redis: fakeredis.FakeRedis,
) -> None:
    celery = RecordingCelery()
    backend = CeleryBackend(celery, fake_redis)  # type: ignore[arg-type]
    dispatcher = Dispatcher(fake_redis, backend)

    def submit(dedupe: str) -> dict[str, Any]:
        assert dispatcher.submit(Inbound(dedupe_id=dedupe, user_id="u", text="hi",
                                         conversation=CONVERSATION))
        return celery.sent[-1]

    assert "queue" not in submit("m1")
    alive(fake_redis, "w1@h")
    turn_finished(fake_redis, "w1@h", 101, CONVERSATION.redis_id)
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
    # One entry per running turn: its process and its thread (a process may run several).
    assert fake_redis.zrange(affinity.busy_key("w1@h"), 0, -1) == [
        f"{os.getpid()}:{threading.get_ident()}".encode()]
    receivers.task_postrun(sender=task, args=args, retval=0, state="SUCCESS")
    assert fake_redis.zcard(affinity.busy_key("w1@h")) == 0
    assert fake_redis.get(affinity.affinity_key(CONVERSATION.redis_id)) is None
    receivers.task_postrun(sender=task, args=args, retval=1, state="SUCCESS")
    assert fake_redis.get(affinity.affinity_key(CONVERSATION.redis_id)) == b"w1@h"
    other = SimpleNamespace(name="other", request=SimpleNamespace(hostname="w1@h"))
    receivers.task_prerun(sender=other, args=args)
    assert fake_redis.zcard(affinity.busy_key("w1@h")) == 0


# -- capacity: a node of N pool processes, on a real Redis (its clock, its Lua) --------------
@pytest.fixture
def real_redis() -> Iterator[redis.Redis]:
    """Database 15 of the Redis at 127.0.0.1:6379; only this test's keys are removed."""
    client = redis.Redis(host="127.0.0.1", port=6379, db=15, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    yield client
    client.close()


@pytest.fixture
def node(real_redis: redis.Redis) -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:8]}@h"
    yield name
    real_redis.delete(affinity.alive_key(name), affinity.busy_key(name), direct_queue(name),
                      affinity.affinity_key(CONVERSATION.redis_id))
    real_redis.zrem(affinity.WORKERS_KEY, name)


def test_a_node_takes_turns_until_every_pool_process_runs_one(real_redis: redis.Redis,
                                                                node: str) -> None:
    router = Router(real_redis)
    alive(real_redis, node, processes=2)
    turn_finished(real_redis, node, 101, CONVERSATION.redis_id)
    turn_started(real_redis, node, 101)
    assert router.node_for(CONVERSATION) == node  # one of two processes is free
    turn_started(real_redis, node, 102)
    assert router.node_for(CONVERSATION) is None  # both run a turn
    turn_finished(real_redis, node, 102, None)
    assert router.node_for(CONVERSATION) == node
    real_redis.lpush(direct_queue(node), "queued")
    assert router.node_for(CONVERSATION) is None  # free, but a turn waits in its queue


def test_the_heartbeat_rereads_the_pool_size(real_redis: redis.Redis, node: str) -> None:
    router = Router(real_redis)
    size = {"processes": 1}
    heartbeat = Heartbeat(real_redis, node, SHARED, forget_after_seconds=60,
                          pool=lambda: PoolSize(size["processes"]))
    heartbeat.beat()
    turn_finished(real_redis, node, 101, CONVERSATION.redis_id)
    turn_started(real_redis, node, 101)
    assert router.node_for(CONVERSATION) is None
    size["processes"] = 2  # pool_grow
    heartbeat.beat()
    assert real_redis.get(affinity.alive_key(node)) == b"2"
    assert router.node_for(CONVERSATION) == node
    size["processes"] = 1  # pool_shrink
    heartbeat.beat()
    assert router.node_for(CONVERSATION) is None


def test_a_killed_processs_busy_entry_expires_or_goes_with_the_pool(
    real_redis: redis.Redis, node: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    router = Router(real_redis)
    alive(real_redis, node, processes=1)
    turn_finished(real_redis, node, 101, CONVERSATION.redis_id)
    monkeypatch.setattr(affinity, "BUSY_TTL_SECONDS", 1)
    turn_started(real_redis, node, 101)  # then killed: never finishes
    assert router.node_for(CONVERSATION) is None
    time.sleep(1.1)
    assert router.node_for(CONVERSATION) == node  # its deadline passed
    monkeypatch.setattr(affinity, "BUSY_TTL_SECONDS", 300)
    turn_started(real_redis, node, 101)
    assert router.node_for(CONVERSATION) is None
    alive(real_redis, node, processes=1, pids=frozenset({102}))  # Celery replaced the child
    assert real_redis.zcard(affinity.busy_key(node)) == 0
    assert router.node_for(CONVERSATION) == node


def test_the_pool_size_is_read_from_celerys_pool() -> None:
    pool = SimpleNamespace(num_processes=3, info={"processes": [11, 12, 13]})
    assert pool_size(pool) == PoolSize(3, frozenset({11, 12, 13}))
    assert pool_size(SimpleNamespace(num_processes=2, info={})) == PoolSize(2, None)
    assert pool_size(object()) == PoolSize(1, None)


def test_capacity_counts_turns_not_processes(fake_redis: fakeredis.FakeRedis) -> None:
    """A node with 4 batch slots is one process on Celery's thread pool: its heartbeat records
    4, each running turn has its own busy entry (process and thread), and the node takes
    another conversation's turn until 4 run."""
    router = Router(fake_redis)
    alive(fake_redis, "w1@h", processes=4, pids=frozenset({500}))
    turn_finished(fake_redis, "w1@h", "500:1", CONVERSATION.redis_id)
    for thread in range(1, 4):
        turn_started(fake_redis, "w1@h", f"500:{thread}")
        assert router.node_for(CONVERSATION) == "w1@h"
    turn_started(fake_redis, "w1@h", "500:4")
    assert router.node_for(CONVERSATION) is None  # four turns in one process: full
    turn_finished(fake_redis, "w1@h", "500:2", None)
    assert router.node_for(CONVERSATION) == "w1@h"
    # The process is gone (killed): the next heartbeat frees all its turns' places at once.
    alive(fake_redis, "w1@h", processes=4, pids=frozenset({501}))
    assert fake_redis.zcard("assistant:worker:w1@h:busy") == 0


def test_the_thread_pools_size_is_its_threads(fake_redis: fakeredis.FakeRedis) -> None:
    from celery.concurrency.thread import TaskPool

    pool = TaskPool(limit=4)
    try:
        size = pool_size(pool)
        assert size.processes == 4 and size.pids == frozenset({os.getpid()})
    finally:
        pool.on_stop()
