"""A worker node's main process keeps the deployment recoverable (issue 16).

Started on Celery's ``worker_ready``, one daemon thread:

- every ``SWEEP_EVERY_SECONDS``, re-enqueues conversations whose pending messages have no task
  (``worker.sweeper``; one node per period does it);
- every ``PRUNE_EVERY_SECONDS``, forgets the progress entries (``worker.watchdog``) of pool
  processes that are gone, so a recycled process does not keep the node "not ready", and
  kills a pool process whose turn made no progress for ``ASSISTANT_STALL_SECONDS`` (one that
  is frozen cannot recycle itself).
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
from worker.affinity import pool_size

log = logging.getLogger(__name__)

PRUNE_EVERY_SECONDS = 2.0
# A pool process' report must stay stale this much longer before its process is killed.
STALE_CONFIRM_SECONDS = 5.0


class Recovery:
    def __init__(self, client: redis.Redis, node: str, pool: Callable[[], frozenset[int] | None],
                 sweep: sweeper.Sweeper, stall_seconds: float,
                 kill: Callable[[int], None] = lambda pid: os.kill(pid, signal.SIGKILL)
                 ) -> None:
        self.client = client
        self.node = node
        self.pool = pool
        self.sweeper = sweep
        self.stall_seconds = stall_seconds
        self.kill = kill
        # pid → (its reported last progress, when we first saw it that stale)
        self._stale: dict[int, tuple[float, float]] = {}
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
        killed = []
        stale_now = {}
        for raw_pid, raw_last in entries.items():
            pid, last = int(raw_pid), float(raw_last)
            if pid not in pids or now - last <= self.stall_seconds:
                continue
            seen_last, since = self._stale.get(pid, (last, now))
            if seen_last != last:
                since = now
            stale_now[pid] = (last, since)
            if now - since >= STALE_CONFIRM_SECONDS:
                log.error("pool process %d made no progress for %.0f s (limit %.0f s): "
                          "killed; its message runs again", pid, now - last,
                          self.stall_seconds)
                try:
                    self.kill(pid)
                except ProcessLookupError:
                    pass
                killed.append(pid)
                stale_now.pop(pid)
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
                    shared_queue: str, stall_seconds: float, sole_worker: bool = False) -> None:
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
            # worker_init runs before Celery sets up logging (NOTES.md): print is what shows.
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
        recovery = Recovery(client, str(node),
                            (lambda: pool_size(pool).pids) if pool is not None else lambda: None,
                            sweeper.Sweeper(client, shared_queue, enqueue), stall_seconds)
        recovery.start()
        running.append(recovery)

    def on_shutdown(**_: Any) -> None:
        for recovery in running:
            recovery.stop()

    if sole_worker:
        signals.worker_init.connect(on_init, weak=False)
    signals.worker_ready.connect(on_ready, weak=False)
    signals.worker_shutdown.connect(on_shutdown, weak=False)
