"""A worker node's main process keeps the deployment recoverable (issue 16).

Started on Celery's ``worker_ready``, one daemon thread:

- every ``SWEEP_EVERY_SECONDS``, re-enqueues conversations whose pending messages have no task
  (``worker.sweeper``; one node per period does it);
- every ``PRUNE_EVERY_SECONDS``, forgets the progress entries (``worker.watchdog``) of pool
  processes that are gone, so a recycled process does not keep the node "not ready", and
  kills a pool process whose turn made no progress for ``ASSISTANT_STALL_SECONDS`` (one that
  is frozen cannot recycle itself);
- notices a consumer that stopped taking tasks (``ConsumerWatch``): Celery's Redis consumer
  can reconnect after a broker restart and never fetch again (celery/celery#8030, #9054,
  #10205), while the node looks alive to every outside check. A task that waits in the node's
  queues ``CONSUMER_STUCK_SECONDS`` while the node has a free pool process and received
  nothing is that case: the node shuts down (warm, then hard) so its process manager starts a
  fresh one (``assistant up``, compose and systemd restart it).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from celery import Celery, signals

from assistant.envelope import ConversationKey
from worker import sweeper, watchdog
from worker.affinity import direct_queue, pool_size

log = logging.getLogger(__name__)

PRUNE_EVERY_SECONDS = 2.0
# A pool process' report must stay stale this much longer before its process is killed.
STALE_CONFIRM_SECONDS = 5.0
# A consumer with a free pool process fetches a waiting task within one round trip; this
# long without it is a consumer that stopped (above the sweeper's 15 s + 10 s period, so a
# re-enqueued task counts too).
CONSUMER_STUCK_SECONDS = 30.0
EXIT_CONSUMER_STUCK = 75  # EX_TEMPFAIL: restart me
HARD_EXIT_AFTER_SECONDS = 30.0


class ConsumerWatch:
    """Whether the node's consumer stopped fetching: tasks wait in its queues, a pool process
    is free, and no task arrived for ``stuck_after`` seconds (see the module's docstring)."""

    def __init__(self, client: redis.Redis, queues: Callable[[], list[str]],
                 free_slots: Callable[[], int | None],
                 stuck_after: float = CONSUMER_STUCK_SECONDS) -> None:
        self.client = client
        self.queues = queues
        self.free_slots = free_slots
        self.stuck_after = stuck_after
        self.received = 0  # bumped by Celery's task_received, in this (the main) process
        self._seen = 0
        self._since: float | None = None

    def on_received(self, **_: Any) -> None:
        self.received += 1

    def stuck(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        waiting = sum(int(self.client.llen(queue)) for queue in self.queues())
        free = self.free_slots()
        if not waiting or not free or self.received != self._seen:
            self._seen, self._since = self.received, None
            return False
        if self._since is None:
            self._since = now
        return now - self._since >= self.stuck_after


def restart_node(code: int = EXIT_CONSUMER_STUCK,
                 hard_after: float = HARD_EXIT_AFTER_SECONDS) -> None:
    """Shut this node down warm with status ``code``, as Celery's own SIGTERM handler does
    (it sets ``celery.worker.state.should_stop``, which the consumer's loop checks and turns
    into ``WorkerShutdown(code)``, the status `celery worker` exits with); leave hard with the
    same status if that has not happened after ``hard_after`` seconds (a wedged loop)."""
    from celery.worker import state

    timer = threading.Timer(hard_after, os._exit, args=(code,))
    timer.daemon = True
    timer.start()
    state.should_stop = code


class Recovery:
    def __init__(self, client: redis.Redis, node: str, pool: Callable[[], frozenset[int] | None],
                 sweep: sweeper.Sweeper, stall_seconds: float,
                 kill: Callable[[int], None] = lambda pid: os.kill(pid, signal.SIGKILL),
                 consumer: ConsumerWatch | None = None,
                 restart: Callable[[], None] = restart_node) -> None:
        self.consumer = consumer
        self.restart = restart
        self.client = client
        self.node = node
        self.pool = pool
        self.sweeper = sweep
        self.stall_seconds = stall_seconds
        self.kill = kill
        # a turn's progress field → (its reported last progress, when we first saw it that
        # stale); a process may run several turns (watchdog.turn_field)
        self._stale: dict[bytes, tuple[float, float]] = {}
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, name="recovery", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        rounds_per_sweep = max(1, round(self.sweeper.interval / PRUNE_EVERY_SECONDS))
        rounds = 0
        while not self._stop.wait(PRUNE_EVERY_SECONDS):
            rounds += 1
            try:
                pids = self.pool()
                if pids is not None:
                    watchdog.prune(self.client, self.node, pids)
                    self.recycle_stalled(pids)
                if rounds % rounds_per_sweep == 0:
                    self.sweeper.sweep()
                if self.consumer is not None and self.consumer.stuck():
                    log.error("node %s: tasks waited %.0f s with a pool process free and none "
                              "was fetched: the consumer stopped (a known Celery fault after "
                              "a broker reconnect); shutting down so it is restarted",
                              self.node, self.consumer.stuck_after)
                    self._stop.set()
                    self.restart()
            except Exception:  # noqa: BLE001 - Redis away, a broker error: next round
                log.warning("recovery round failed; trying again", exc_info=True)


    def recycle_stalled(self, pids: frozenset[int], now: float | None = None) -> list[int]:
        """Kill the pool processes whose turn reported no progress for the stall limit.

        The pool process' own watchdog does this too, but it cannot when the whole process is
        frozen (stopped, or stuck holding the GIL): Celery then replaces the process and puts
        its message back at once (``task_reject_on_worker_lost``). A report that stays the
        same for ``STALE_CONFIRM_SECONDS`` more is required, so a Redis that paused (the
        reports could not be written meanwhile) does not get a working process killed.
        """
        now = time.time() if now is None else now
        entries: dict[bytes, bytes] = self.client.hgetall(  # type: ignore[assignment]
            watchdog.progress_key(self.node))
        killed: list[int] = []
        stale_now = {}
        for field, raw_last in entries.items():
            pid, last = watchdog.pid_of(field), float(raw_last)
            if pid not in pids or now - last <= self.stall_seconds:
                continue
            seen_last, since = self._stale.get(field, (last, now))
            if seen_last != last:
                since = now
            stale_now[field] = (last, since)
            if now - since >= STALE_CONFIRM_SECONDS and pid not in killed:
                log.error("pool process %d made no progress for %.0f s (limit %.0f s): "
                          "killed; its message runs again", pid, now - last,
                          self.stall_seconds)
                try:
                    self.kill(pid)
                except ProcessLookupError:
                    pass
                killed.append(pid)
                stale_now.pop(field)
        self._stale = stale_now
        return killed


def restore_unacknowledged(app: Celery) -> int:
    """Put every delivered and unacknowledged message back at the head of its queue, with
    kombu's own restore; returns how many. Only for a worker that knows it is the only one
    on its Redis (``ASSISTANT_SOLE_WORKER``): elsewhere they may be another node's turns."""
    with app.connection_for_write() as connection:
        channel: Any = connection.default_channel
        tags = channel.client.hkeys(channel.unacked_key)
        for tag in tags:
            channel.qos.restore_by_tag(tag)
    return len(tags)


def connect_signals(app: Celery, connect_client: Callable[[], redis.Redis], task_name: str,
                    shared_queue: str, stall_seconds: float, sole_worker: bool = False,
                    consumer_stuck_seconds: float = CONSUMER_STUCK_SECONDS) -> None:
    """Start ``Recovery`` in the node's main process once it is ready (``worker/app.py``);
    with ``sole_worker``, first restore what a dead predecessor left unacknowledged."""
    running: list[Recovery] = []

    def on_init(**_: Any) -> None:
        try:
            restored = restore_unacknowledged(app)
        except Exception:  # noqa: BLE001 - Redis not up yet: the visibility timeout will do
            log.warning("could not restore unacknowledged messages", exc_info=True)
            return
        if restored:
            # worker_init runs before Celery sets up logging: print is what shows.
            print(f"restored {restored} message(s) a previous worker left unacknowledged",
                  flush=True)

    def enqueue(conversation: ConversationKey) -> None:
        app.send_task(task_name, args=[conversation.model_dump_json()], queue=shared_queue)

    def on_ready(sender: Any = None, **_: Any) -> None:
        node = getattr(sender, "hostname", None)
        if not node:
            return
        pool = getattr(sender, "pool", None)
        client = connect_client()
        consumer = None
        if pool is not None:
            def free_slots() -> int:
                from celery.worker import state  # the consumer's own bookkeeping

                return pool_size(pool).processes - len(state.reserved_requests)

            consumer = ConsumerWatch(client, lambda: [shared_queue, direct_queue(str(node))],
                                     free_slots, consumer_stuck_seconds)
            signals.task_received.connect(consumer.on_received, weak=False)
        recovery = Recovery(client, str(node),
                            (lambda: pool_size(pool).pids) if pool is not None else lambda: None,
                            sweeper.Sweeper(client, shared_queue, enqueue), stall_seconds,
                            consumer=consumer)
        recovery.start()
        running.append(recovery)

    def on_shutdown(**_: Any) -> None:
        for recovery in running:
            recovery.stop()

    if sole_worker:
        signals.worker_init.connect(on_init, weak=False)
    signals.worker_ready.connect(on_ready, weak=False)
    signals.worker_shutdown.connect(on_shutdown, weak=False)
