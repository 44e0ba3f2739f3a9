"""No wedged worker: a turn that stops making progress is seen, and its process recycled.

Issue 16 found a pool process that waited forever on its engine's lock while its main process
still answered Celery's pings, so ``/readyz`` said 200 and every later message timed out. A ping
proves the node's main process runs, not that its pool processes get anywhere. So each pool
process keeps a ``Watchdog``:

- the turn tells it when it starts and ends and, per generated piece, that it progressed
  (``assistant.conversation.Runtime.on_progress``: a time stamp, no I/O);
- a daemon thread looks every ``CHECK_EVERY_SECONDS``; it reports the last progress of a
  running turn to Redis (``worker:<node>:progress``, pid → Unix time), which ``/readyz`` reads:
  a node whose turn made no progress for ``ASSISTANT_STALL_SECONDS`` is not ready;
- past that stall the thread kills its own process (SIGKILL). Celery's main process forks a
  replacement, and the message, not acknowledged (``task_reject_on_worker_lost``), runs again.

It decides before it talks to Redis, and talks with a short socket timeout, so a Redis that
hangs cannot keep it from recycling the process. Celery's hard ``time_limit``
(``ASSISTANT_TURN_TIME_LIMIT``) stays as the backstop for a process whose threads cannot run.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable

import redis

from assistant import keys

log = logging.getLogger(__name__)

CHECK_EVERY_SECONDS = 2.0
REDIS_TIMEOUT_SECONDS = 2.0


progress_key = keys.worker_progress


def stalled_pids(client: redis.Redis, node: str, stall_seconds: float,
                 now: float | None = None) -> list[int]:
    """The pool processes of ``node`` whose running turn made no progress for too long."""
    now = time.time() if now is None else now
    entries: dict[bytes, bytes] = client.hgetall(progress_key(node))  # type: ignore[assignment]
    return sorted(int(pid) for pid, last in entries.items()
                  if now - float(last) > stall_seconds)


def prune(client: redis.Redis, node: str, live_pids: frozenset[int]) -> None:
    """Forget entries of pool processes that are gone (killed, recycled)."""
    entries: list[bytes] = client.hkeys(progress_key(node))  # type: ignore[assignment]
    gone = [pid for pid in entries if int(pid) not in live_pids]
    if gone:
        client.hdel(progress_key(node), *gone)


class Watchdog:
    """One per pool process (built lazily in it, after the fork)."""

    def __init__(self, connect_client: Callable[[], redis.Redis], stall_seconds: float,
                 check_every: float = CHECK_EVERY_SECONDS,
                 kill: Callable[[], None] | None = None, background: bool = True) -> None:
        self.connect_client = connect_client
        self.stall_seconds = stall_seconds
        self.check_every = check_every
        self.kill = kill or (lambda: os.kill(os.getpid(), signal.SIGKILL))
        self.node: str | None = None
        self.busy = False
        self.last_progress = time.monotonic()
        self.background = background  # False: the caller calls ``check`` (tests)
        self._client: redis.Redis | None = None
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    def turn_started(self, node: str) -> None:
        self.node = node
        self.last_progress = time.monotonic()
        self.busy = True
        if self._thread is None and self.background:
            self._thread = threading.Thread(target=self._run, name="turn-watchdog",
                                            daemon=True)
            self._thread.start()
        self._wake.set()  # report the new turn at once

    def progress(self) -> None:
        self.last_progress = time.monotonic()

    def turn_finished(self) -> None:
        self.busy = False
        self._wake.set()

    def check(self) -> None:
        """One look: kill the process past the stall, else report (or clear) its progress."""
        if self.busy:
            idle = time.monotonic() - self.last_progress
            if idle > self.stall_seconds:
                log.error("turn made no progress for %.0f s (limit %g s): recycling this "
                          "worker process; its message runs again", idle, self.stall_seconds)
                self.kill()
                return
            self._report(time.time() - idle)
        else:
            self._report(None)

    def _report(self, last: float | None) -> None:
        if self.node is None:
            return
        try:
            if self._client is None:
                self._client = self.connect_client()
            key, pid = progress_key(self.node), str(os.getpid())
            if last is None:
                self._client.hdel(key, pid)
            else:
                with self._client.pipeline(transaction=False) as pipe:
                    pipe.hset(key, pid, f"{last:.3f}")
                    pipe.expire(key, max(60, int(self.stall_seconds * 4)))
                    pipe.execute()
        except redis.RedisError:
            log.debug("could not report turn progress", exc_info=True)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.check_every)
            self._wake.clear()
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the watchdog must outlive any one look
                log.exception("watchdog check failed")
