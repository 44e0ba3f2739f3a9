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

Turns are watched one by one: with ASSISTANT_BATCH_SLOTS > 1 a process runs several at once,
one per Celery thread (worker/app.py, ``batching_pool``). Each reports under its own field,
``<pid>:<thread id>`` (``turn_field``; readers take the pid before the colon, ``pid_of``), and
any one of them stalled recycles the process: they share one engine, which is what stalls.
With the thread pool there is no parent to fork a replacement: the node exits, its process
manager starts it again, and its unacknowledged messages come back after the visibility
timeout (docs/scaling.md, "Continuous batching").

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


def turn_field(pid: int, turn: int) -> str:
    """A running turn's field in the progress hash (and in affinity's busy set): its process
    and its thread, since one process may run several turns at once."""
    return f"{pid}:{turn}"


def pid_of(field: bytes | str) -> int:
    """The process of a progress (or busy) entry: ``<pid>:<turn>``, or a bare ``<pid>``."""
    text = field.decode() if isinstance(field, bytes) else field
    return int(text.split(":", 1)[0])


def stalled_pids(client: redis.Redis, node: str, stall_seconds: float,
                 now: float | None = None) -> list[int]:
    """The pool processes of ``node`` with a running turn that made no progress for too long."""
    now = time.time() if now is None else now
    entries: dict[bytes, bytes] = client.hgetall(progress_key(node))  # type: ignore[assignment]
    return sorted({pid_of(field) for field, last in entries.items()
                   if now - float(last) > stall_seconds})


def prune(client: redis.Redis, node: str, live_pids: frozenset[int]) -> None:
    """Forget entries of pool processes that are gone (killed, recycled)."""
    entries: list[bytes] = client.hkeys(progress_key(node))  # type: ignore[assignment]
    gone = [field for field in entries if pid_of(field) not in live_pids]
    if gone:
        client.hdel(progress_key(node), *gone)


class Watchdog:
    """One per pool process (built lazily in it, after the fork); watches each of its running
    turns, told apart by the thread that runs it."""

    def __init__(self, connect_client: Callable[[], redis.Redis], stall_seconds: float,
                 check_every: float = CHECK_EVERY_SECONDS,
                 kill: Callable[[], None] | None = None, background: bool = True) -> None:
        self.connect_client = connect_client
        self.stall_seconds = stall_seconds
        self.check_every = check_every
        self.kill = kill or (lambda: os.kill(os.getpid(), signal.SIGKILL))
        self.node: str | None = None
        self._turns: dict[int, float] = {}  # thread id of a running turn → its last progress
        self._reported: set[int] = set()  # turns with a field in Redis now
        self._guard = threading.Lock()
        self.background = background  # False: the caller calls ``check`` (tests)
        self._client: redis.Redis | None = None
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    @property
    def busy(self) -> bool:
        return bool(self._turns)

    def turn_started(self, node: str) -> None:
        """The calling thread starts a turn."""
        self.node = node
        with self._guard:
            self._turns[threading.get_ident()] = time.monotonic()
            if self._thread is None and self.background:
                self._thread = threading.Thread(target=self._run, name="turn-watchdog",
                                                daemon=True)
                self._thread.start()
        self._wake.set()  # report the new turn at once

    def progress(self) -> None:
        """The calling thread's turn progressed (no I/O: called per generated piece)."""
        turn = threading.get_ident()
        if turn in self._turns:
            self._turns[turn] = time.monotonic()

    def turn_finished(self) -> None:
        with self._guard:
            self._turns.pop(threading.get_ident(), None)
        self._wake.set()

    def check(self) -> None:
        """One look: kill the process when a turn is past the stall, else report each running
        turn's progress (and clear the fields of finished ones)."""
        now = time.monotonic()
        with self._guard:
            running = dict(self._turns)
        for last in running.values():
            idle = now - last
            if idle > self.stall_seconds:
                log.error("turn made no progress for %.0f s (limit %g s): recycling this "
                          "worker process; its message(s) run again", idle,
                          self.stall_seconds)
                self.kill()
                return
        wall = time.time()
        self._report({turn: wall - (now - last) for turn, last in running.items()})

    def _report(self, running: dict[int, float]) -> None:
        if self.node is None:
            return
        pid = os.getpid()
        finished = self._reported - running.keys()
        try:
            if self._client is None:
                self._client = self.connect_client()
            key = progress_key(self.node)
            with self._client.pipeline(transaction=False) as pipe:
                if finished:
                    pipe.hdel(key, *(turn_field(pid, turn) for turn in finished))
                if running:
                    pipe.hset(key, mapping={turn_field(pid, turn): f"{last:.3f}"
                                            for turn, last in running.items()})
                    pipe.expire(key, max(60, int(self.stall_seconds * 4)))
                pipe.execute()
            self._reported = set(running)
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
