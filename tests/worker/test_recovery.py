"""No stranded message, no wedged worker: the sweeper, the watchdog and the retry's nudge.

The sweeper reads real kombu messages, so these tests queue tasks with a real Celery app on the
embedded Valkey; the watchdog's clock is short.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import fakeredis
import pytest
import redis
from celery import Celery

from assistant import turns
from assistant.dispatch import Dispatcher
from assistant.envelope import ConversationKey, Inbound, Reply, utcnow
from assistant.stream import Publisher
from tests.auxil.fake_celery import QUEUE, FakeCelery, fake_backend
from worker import sweeper, watchdog

TASK = "assistant.answer_conversation"


@pytest.fixture
def client(redis_server: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(f"{redis_server}/14")
    connection.flushdb()
    yield connection
    connection.close()


@pytest.fixture
def app(redis_server: str) -> Celery:
    celery = Celery("recovery-test", broker=f"{redis_server}/14")
    celery.conf.task_default_queue = QUEUE
    return celery


def waiting(client: redis.Redis, age_seconds: float = 60.0) -> Inbound:
    """A message pending for ``age_seconds`` in a conversation of its own."""
    message = Inbound(conversation=ConversationKey(platform="web", channel=uuid.uuid4().hex),
                      user_id="u1", text="hello", dedupe_id=uuid.uuid4().hex,
                      received_at=utcnow() - timedelta(seconds=age_seconds))
    turns.submit(client, message)
    return message


def ids(found: list[ConversationKey]) -> set[str]:
    return {c.redis_id for c in found}


def test_a_pending_message_with_no_task_is_stranded(client: redis.Redis, app: Celery) -> None:
    lost = waiting(client)
    queued = waiting(client)
    app.send_task(TASK, args=[queued.conversation.model_dump_json()])
    young = waiting(client, age_seconds=1)
    running = waiting(client)
    client.set(turns.lock_key(running.conversation), "someone")
    assert ids(sweeper.stranded(client, QUEUE)) == {lost.conversation.redis_id}
    assert young and running


def test_a_delivered_unacknowledged_task_is_not_stranded(client: redis.Redis,
                                                         app: Celery) -> None:
    """A worker's task in kombu's ``unacked`` hash (running, or waiting out a retry's
    countdown) still names the conversation."""
    held = waiting(client)
    app.send_task(TASK, args=[held.conversation.model_dump_json()])
    raw = client.rpop(QUEUE)  # what kombu's consumer does, then it notes the delivery:
    assert raw is not None
    client.hset(sweeper.UNACKED_KEY, "tag-1", json.dumps([json.loads(raw), "", QUEUE]))
    assert sweeper.stranded(client, QUEUE) == []
    client.hdel(sweeper.UNACKED_KEY, "tag-1")  # acked without requeue: the message is lost
    assert ids(sweeper.stranded(client, QUEUE)) == {held.conversation.redis_id}


def test_a_delivery_from_before_redis_restarted_does_not_count(client: redis.Redis,
                                                              app: Celery) -> None:
    """A Valkey killed mid-turn comes back from its append-only file with the task still in
    ``unacked``; its consumer's connection died with the old server, so nobody will run or
    ack it and kombu would restore it only after the visibility timeout. Such an entry (its
    delivery older than the server's start) must not hide the message from the sweeper."""
    ghost, live = waiting(client), waiting(client)
    started = sweeper.server_started_at(client)
    assert started <= time.time() + 1  # the server's clock, not ours: allow a little skew
    for tag, message, delivered_at in (("ghost", ghost, started - 30),
                                       ("live", live, started + 0.5)):
        app.send_task(TASK, args=[message.conversation.model_dump_json()])
        raw = client.rpop(QUEUE)
        assert raw is not None
        client.hset(sweeper.UNACKED_KEY, tag, json.dumps([json.loads(raw), "", QUEUE]))
        client.zadd(sweeper.UNACKED_INDEX_KEY, {tag: delivered_at})
    assert ids(sweeper.stranded(client, QUEUE)) == {ghost.conversation.redis_id}
    assert sweeper.is_stranded(client, ghost, QUEUE)
    assert not sweeper.is_stranded(client, live, QUEUE)


def test_a_task_in_a_nodes_own_queue_counts(client: redis.Redis, app: Celery) -> None:
    routed = waiting(client)
    app.send_task(TASK, args=[routed.conversation.model_dump_json()], queue="w1@host.dq2")
    assert sweeper.stranded(client, QUEUE) == []


def test_the_sweeper_re_enqueues_once_per_period(client: redis.Redis) -> None:
    lost = waiting(client)
    enqueued: list[ConversationKey] = []
    sweep = sweeper.Sweeper(client, QUEUE, enqueued.append, interval=30)
    assert sweep.sweep() == 1 and enqueued == [lost.conversation]
    assert sweep.sweep() == 0  # another node (or this one) swept this period already


def test_a_stalled_turn_kills_its_process_and_reports_first(client: redis.Redis) -> None:
    killed: list[bool] = []
    guard = watchdog.Watchdog(lambda: client, stall_seconds=0.3, check_every=60,
                              kill=lambda: killed.append(True), background=False)
    guard.turn_started("w1@test")
    guard.check()
    assert killed == [] and watchdog.stalled_pids(client, "w1@test", 0.3) == []
    time.sleep(0.2)
    guard.progress()
    time.sleep(0.2)
    guard.check()
    assert killed == []  # it progressed 0.2 s ago
    time.sleep(0.4)
    assert watchdog.stalled_pids(client, "w1@test", 0.3) != []  # /readyz: not ready
    guard.check()
    assert killed == [True]


def test_a_finished_turn_is_forgotten_and_so_is_a_gone_process(client: redis.Redis) -> None:
    guard = watchdog.Watchdog(lambda: client, stall_seconds=0.1, check_every=60,
                              kill=lambda: None, background=False)
    guard.turn_started("w1@test")
    guard.check()
    assert client.hlen(watchdog.progress_key("w1@test")) == 1
    guard.turn_finished()
    guard.check()
    assert client.hlen(watchdog.progress_key("w1@test")) == 0
    client.hset(watchdog.progress_key("w1@test"), "999999", "0")  # a killed process's
    watchdog.prune(client, "w1@test", frozenset({1}))
    assert client.hlen(watchdog.progress_key("w1@test")) == 0


def test_a_retried_message_that_still_waits_enqueues_its_conversation(
        fake_redis: fakeredis.FakeRedis) -> None:
    """Its first task was lost: the same-id retry brings an answer instead of a 504."""
    celery = FakeCelery(fake_redis)
    dispatcher = Dispatcher(fake_redis, fake_backend(celery))  # type: ignore[arg-type]
    message = Inbound(conversation=ConversationKey(platform="web", channel="c1"),
                      user_id="u1", text="hello", dedupe_id="web:c1:m1",
                      received_at=utcnow() - timedelta(seconds=60))
    assert dispatcher.submit(message)
    fake_redis.delete(QUEUE)  # the task is lost
    assert not dispatcher.submit(message)  # the retry
    assert fake_redis.llen(QUEUE) == 1
    fake_redis.delete(QUEUE)
    assert not dispatcher.submit(message)  # retries in a burst nudge once
    assert fake_redis.llen(QUEUE) == 0


def test_a_prompt_retry_of_a_queued_message_enqueues_nothing(
        fake_redis: fakeredis.FakeRedis) -> None:
    """Slack resends an event after 3 s: its task is still queued (or its message young)."""
    dispatcher = Dispatcher(fake_redis, fake_backend(FakeCelery(fake_redis)))  # type: ignore[arg-type]
    message = Inbound(conversation=ConversationKey(platform="web", channel="c1"),
                      user_id="u1", text="hello", dedupe_id="web:c1:m1")
    assert dispatcher.submit(message)
    fake_redis.delete(QUEUE)
    assert not dispatcher.submit(message)
    assert fake_redis.llen(QUEUE) == 0


def test_a_retry_of_an_answered_or_running_message_enqueues_nothing(
        fake_redis: fakeredis.FakeRedis) -> None:
    celery = FakeCelery(fake_redis)
    dispatcher = Dispatcher(fake_redis, fake_backend(celery))  # type: ignore[arg-type]
    old = utcnow() - timedelta(seconds=60)
    running = Inbound(conversation=ConversationKey(platform="web", channel="c1"),
                      user_id="u1", text="hello", dedupe_id="web:c1:m1", received_at=old)
    answered = Inbound(conversation=ConversationKey(platform="web", channel="c2"),
                       user_id="u1", text="hello", dedupe_id="web:c2:m1", received_at=old)
    for message in (running, answered):
        dispatcher.submit(message)
    fake_redis.delete(QUEUE)
    fake_redis.set(turns.lock_key(running.conversation), "worker")
    Publisher(fake_redis, answered.conversation, [answered.message_id]).done(Reply(
        message_id="r", conversation=answered.conversation, in_reply_to=(answered.message_id,),
        text="hi"))
    assert not dispatcher.submit(running) and not dispatcher.submit(answered)
    assert fake_redis.llen(QUEUE) == 0


def test_the_main_process_kills_a_frozen_pool_process_once_its_report_stays_stale(
        client: redis.Redis) -> None:
    """A stopped process cannot kill itself; a paused Redis must not get a live one killed."""
    from worker.recovery import STALE_CONFIRM_SECONDS, Recovery

    killed: list[int] = []
    recovery = Recovery(client, "w1@test", lambda: frozenset({101, 102}),
                        sweeper.Sweeper(client, QUEUE, lambda _: None), stall_seconds=30,
                        kill=killed.append)
    now = time.time()
    client.hset(watchdog.progress_key("w1@test"),
                mapping={"101": f"{now - 60:.3f}", "102": f"{now - 1:.3f}"})
    assert recovery.recycle_stalled(frozenset({101, 102}), now) == []  # first seen stale
    # 102 reports again (it was only Redis that paused); 101 stays frozen.
    assert recovery.recycle_stalled(frozenset({101, 102}), now + STALE_CONFIRM_SECONDS) == [101]
    assert killed == [101]
    # A report that moved (the process caught up after a pause) restarts the wait.
    client.hset(watchdog.progress_key("w1@test"), "102", f"{now - 45:.3f}")
    later = now + STALE_CONFIRM_SECONDS + 1
    assert recovery.recycle_stalled(frozenset({102}), later) == []
    client.hset(watchdog.progress_key("w1@test"), "102", f"{now - 40:.3f}")
    assert recovery.recycle_stalled(frozenset({102}), later + STALE_CONFIRM_SECONDS) == []


def test_the_watchdog_thread_recycles_a_stuck_turn_by_itself(client: redis.Redis) -> None:
    killed = threading.Event()
    guard = watchdog.Watchdog(lambda: client, stall_seconds=0.3, check_every=0.05,
                              kill=killed.set)
    guard.turn_started("w2@test")
    try:
        assert killed.wait(timeout=10)
    finally:
        guard.turn_finished()


def test_a_consumer_that_stopped_fetching_is_noticed_and_only_then(client: redis.Redis) -> None:
    """Celery's Redis consumer can come back from a broker restart and never fetch again
    (celery#8030): a task waits while a pool process is free and nothing arrives."""
    from worker.recovery import ConsumerWatch

    free = [1]
    watch = ConsumerWatch(client, lambda: [QUEUE, "w1@test.dq2"], lambda: free[0],
                          stuck_after=30)
    assert not watch.stuck(now=0)  # nothing waits
    client.rpush("w1@test.dq2", "a task for this node")
    assert not watch.stuck(now=1)  # the clock starts
    assert not watch.stuck(now=20)
    watch.on_received()  # the consumer fetched something: it works
    assert not watch.stuck(now=31)
    assert not watch.stuck(now=40)
    free[0] = 0  # every pool process busy: a waiting task is normal
    assert not watch.stuck(now=100)
    free[0] = 1
    assert not watch.stuck(now=101)
    assert watch.stuck(now=131)  # 30 s waiting, a free process, nothing fetched
    client.delete("w1@test.dq2")
    assert not watch.stuck(now=132)


def test_recovery_restarts_the_node_when_its_consumer_is_stuck(client: redis.Redis) -> None:
    from worker.recovery import ConsumerWatch, Recovery

    class Stuck(ConsumerWatch):
        def stuck(self, now: float | None = None) -> bool:
            return True

    restarted = threading.Event()
    recovery = Recovery(client, "w1@test", lambda: frozenset(),
                        sweeper.Sweeper(client, QUEUE, lambda _: None), stall_seconds=30,
                        consumer=Stuck(client, lambda: [], lambda: 1),
                        restart=restarted.set)
    recovery.start()
    try:
        assert restarted.wait(10)
    finally:
        recovery.stop()


def test_turns_of_one_process_are_watched_one_by_one(client: redis.Redis) -> None:
    """ASSISTANT_BATCH_SLOTS > 1: one process runs a turn per Celery thread. Each reports its
    own progress; one that stalls recycles the process even while the others progress."""
    killed: list[bool] = []
    guard = watchdog.Watchdog(lambda: client, stall_seconds=0.3, check_every=60,
                              kill=lambda: killed.append(True), background=False)
    key = watchdog.progress_key("w1@test")
    started = threading.Barrier(3)
    finish = threading.Event()

    def turn(progressing: bool) -> None:
        guard.turn_started("w1@test")
        started.wait()
        while not finish.wait(0.05):
            if progressing:
                guard.progress()
        guard.turn_finished()

    threads = [threading.Thread(target=turn, args=(p,)) for p in (True, False)]
    for thread in threads:
        thread.start()
    started.wait()
    guard.check()
    fields = sorted(client.hkeys(key))
    assert len(fields) == 2 and {watchdog.pid_of(f) for f in fields} == {os.getpid()}
    time.sleep(0.5)
    assert watchdog.stalled_pids(client, "w1@test", 0.3) == [os.getpid()]
    guard.check()
    assert killed == [True]  # the stalled one, though the other one progressed
    finish.set()
    for thread in threads:
        thread.join()
    guard.check()
    assert client.hlen(key) == 0  # both finished: their fields are gone
