"""Conversation-affine routing: send a conversation's turn back to the worker holding its state.

Each worker node (one Celery node of N pool processes, each with its own ``Llama``, all sharing
the host's KV state directory, ``worker.kvcache``) also consumes its own queue (Celery's
``worker_direct``: ``<node>.dq2``). After a node answered a conversation it records
``affinity:<conv> = <node>``. The dispatcher sends the next turn to that node's queue when the
node is alive (its heartbeat key exists), has a pool process free (fewer running turns than
the pool size its heartbeat records) and has nothing queued; otherwise to the shared queue,
where any worker takes it.

A node that dies loses only speed, never a message: the message itself waits in the
conversation's pending list (``assistant.turns``), and every live node's heartbeat thread moves
whatever sits in a dead node's queue to the shared queue, where any worker answers it — also
messages kombu restores there after the visibility timeout.

Keys (prefix ``assistant:``): ``affinity:<conv>`` (1 day), ``worker:<node>:alive`` = the pool
size (``ALIVE_TTL_SECONDS``, renewed every ``HEARTBEAT_SECONDS``, which re-reads the size after
``pool_grow``/``pool_shrink`` or autoscaling), ``worker:<node>:busy`` (sorted set: a running
turn, ``<pid>:<thread>`` → deadline, Redis' clock; an entry past its deadline no longer counts,
and the heartbeat drops those of processes gone from the pool), ``workers`` (sorted set:
node → last heartbeat, for the sweep).

Capacity counts turns, not processes: a prefork node runs one turn per pool process, a node
with ASSISTANT_BATCH_SLOTS = N runs N turns in one process (Celery's thread pool, worker/app.py),
and its heartbeat records N.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from celery.utils.nodenames import worker_direct

from assistant import keys
from assistant.envelope import ConversationKey
from worker.watchdog import pid_of, turn_field

log = logging.getLogger(__name__)

PREFIX = keys.PREFIX
WORKERS_KEY = keys.WORKERS
HEARTBEAT_SECONDS = 2.0
ALIVE_TTL_SECONDS = 6
BUSY_TTL_SECONDS = 300  # a busy entry left by a killed process expires by itself
AFFINITY_TTL_SECONDS = 24 * 3600

# One round trip: the node for this conversation, if it is alive, has a pool process without a
# turn, and has nothing queued. Deadlines are Redis' clock: hosts' clocks may differ. The node is
# read inside the script, so it spells keys.worker_alive/worker_busy itself (test_affinity
# covers that the two agree).
ROUTE_SCRIPT = """
local node = redis.call('GET', KEYS[1])
if not node then return false end
local base = ARGV[1] .. ':worker:' .. node
local capacity = tonumber(redis.call('GET', base .. ':alive'))
if not capacity then return false end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if redis.call('ZCOUNT', base .. ':busy', '(' .. tostring(now), '+inf') >= capacity then
  return false
end
if redis.call('LLEN', node .. ARGV[2]) > 0 then return false end
return node
"""
# A pool process starts a turn: its entry, deadline now + TTL; entries past theirs go.
START_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tostring(now))
redis.call('ZADD', KEYS[1], tostring(now + tonumber(ARGV[2])), ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
"""
DIRECT_SUFFIX = worker_direct("x").name[1:]  # Celery names a node's queue "<node>.dq2"


affinity_key = keys.affinity
alive_key = keys.worker_alive
busy_key = keys.worker_busy


def direct_queue(node: str) -> str:
    """The Redis list holding the tasks sent to ``node`` alone."""
    return f"{node}{DIRECT_SUFFIX}"


class Router:
    """The dispatcher's side: which worker node, if any, should answer this conversation."""

    def __init__(self, client: redis.Redis) -> None:
        self._route = client.register_script(ROUTE_SCRIPT)

    def node_for(self, conversation: ConversationKey) -> str | None:
        node = self._route(keys=[affinity_key(conversation.redis_id)],
                           args=[PREFIX, DIRECT_SUFFIX])
        if node is None:
            return None
        return node.decode() if isinstance(node, bytes) else str(node)


def turn_started(client: redis.Redis, node: str, turn: str) -> None:
    """``node`` runs a turn (``watchdog.turn_field``: its process and thread): one place fewer
    free."""
    client.register_script(START_SCRIPT)(keys=[busy_key(node)], args=[turn, BUSY_TTL_SECONDS])


def turn_finished(client: redis.Redis, node: str, turn: str,
                  conversation_id: str | None) -> None:
    """The turn's place is free again; with ``conversation_id``, the node holds that
    conversation (its state is in the host's shared store, whichever process takes it)."""
    pipe = client.pipeline(transaction=False)
    pipe.zrem(busy_key(node), turn)
    if conversation_id is not None:
        pipe.set(affinity_key(conversation_id), node, ex=AFFINITY_TTL_SECONDS)
    pipe.execute()


def move_queue(client: redis.Redis, source: str, target: str) -> int:
    """Move every message of list ``source`` to the consuming end of ``target``, in order.

    kombu pushes on the left and pops on the right; taking the newest from the left and
    pushing it on the right leaves the oldest message first in line, ahead of newer ones.
    """
    moved = 0
    while client.lmove(source, target, "LEFT", "RIGHT") is not None:
        moved += 1
    return moved


@dataclass(frozen=True)
class PoolSize:
    """A node's pool now: how many processes, and their pids when the pool says."""

    processes: int
    pids: frozenset[int] | None = None


def pool_size(pool: Any) -> PoolSize:
    """Read Celery's pool: how many turns it runs at once and in which processes. Prefork:
    ``num_processes`` follows ``pool_grow``/``pool_shrink`` and autoscaling, and
    ``info["processes"]`` lists the live children's pids. The thread pool: ``num_processes``
    is its thread count (``limit``), and every turn runs in this very process."""
    try:
        processes = int(pool.num_processes)
    except (AttributeError, TypeError, ValueError):
        processes = 1
    try:
        info = pool.info
        listed = info.get("processes")
        pids = frozenset(int(pid) for pid in listed) if isinstance(listed, list) else None
        if pids is None and "threads" in info:
            pids = frozenset({os.getpid()})
    except Exception:  # noqa: BLE001 - a pool without the list: no pruning by pid
        pids = None
    return PoolSize(max(processes, 0), pids)


class Heartbeat:
    """A node's liveness signal with its pool size, and the sweep that rescues dead nodes'
    queued messages.

    Runs as a daemon thread in the Celery node's main process (started on ``worker_ready``).
    """

    def __init__(self, client: redis.Redis, node: str, shared_queue: str,
                 forget_after_seconds: float, pool: Callable[[], PoolSize] | None = None,
                 interval: float = HEARTBEAT_SECONDS, alive_ttl: int = ALIVE_TTL_SECONDS) -> None:
        self.client = client
        self.node = node
        self.shared_queue = shared_queue
        self.forget_after_seconds = forget_after_seconds  # > the visibility timeout
        self.pool = pool or (lambda: PoolSize(1))
        self.interval = interval
        self.alive_ttl = alive_ttl
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.client.delete(busy_key(self.node))  # a restarted node is idle
        self.beat()
        self._thread = threading.Thread(target=self._run, name="affinity-heartbeat",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Say at once that this node is gone, so new turns go to the shared queue."""
        self._stop.set()
        try:
            self.client.delete(alive_key(self.node))
        except redis.RedisError:
            log.warning("could not clear the heartbeat of %s", self.node, exc_info=True)

    def beat(self) -> None:
        pool = self.pool()
        pipe = self.client.pipeline(transaction=False)
        pipe.set(alive_key(self.node), pool.processes, ex=self.alive_ttl)
        pipe.zadd(WORKERS_KEY, {self.node: time.time()})
        pipe.execute()
        if pool.pids is not None:
            # A pool process killed during a turn frees its place now, not after the TTL.
            running: list[bytes] = self.client.zrange(  # type: ignore[assignment]
                busy_key(self.node), 0, -1)
            gone = [turn for turn in running if pid_of(turn) not in pool.pids]
            if gone:
                self.client.zrem(busy_key(self.node), *gone)

    def sweep(self) -> int:
        """Move messages queued for dead nodes to the shared queue; returns how many."""
        moved = 0
        now = time.time()
        entries: list[tuple[bytes, float]] = self.client.zrange(  # type: ignore[assignment]
            WORKERS_KEY, 0, -1, withscores=True)
        for raw, last_seen in entries:
            node = raw.decode()
            if node == self.node or self.client.exists(alive_key(node)):
                continue
            queue = direct_queue(node)
            count = move_queue(self.client, queue, self.shared_queue)
            if count:
                log.warning("worker %s is gone: %d queued turn(s) moved to %s", node, count,
                            self.shared_queue)
                moved += count
            # kombu may still restore its unacked messages there until the visibility timeout.
            if now - last_seen > self.forget_after_seconds and not self.client.llen(queue):
                self.client.zrem(WORKERS_KEY, node)
        return moved

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
                self.sweep()
            except redis.RedisError:
                log.warning("affinity heartbeat failed; retrying", exc_info=True)


def this_turn() -> str:
    """The running turn's busy entry: Celery's signals run in the turn's own thread."""
    return turn_field(os.getpid(), threading.get_ident())


def conversation_of(args: Any) -> str | None:
    """The conversation id from ``answer_conversation``'s arguments (its JSON key)."""
    try:
        return ConversationKey.model_validate_json(args[0]).redis_id
    except (IndexError, TypeError, ValueError):
        return None


class _Signals:
    """Celery signal receivers: the heartbeat in the node's main process, busy entries and the
    conversation → node mapping in the pool process that ran the turn."""

    def __init__(self, connect_client: Any, task_name: str, shared_queue: str,
                 forget_after_seconds: float) -> None:
        self.connect_client = connect_client
        self.task_name = task_name
        self.shared_queue = shared_queue
        self.forget_after_seconds = forget_after_seconds
        self.heartbeat: Heartbeat | None = None
        self._client: redis.Redis | None = None
        self._pid = 0

    def client(self) -> redis.Redis:
        if self._client is None or self._pid != os.getpid():  # a pool child: its own socket
            self._client = self.connect_client()
            self._pid = os.getpid()
        return self._client

    def worker_ready(self, sender: Any = None, **_: Any) -> None:
        node = getattr(sender, "hostname", None)
        if not node:
            return
        pool = getattr(sender, "pool", None)  # the consumer's: its size changes at runtime
        self.heartbeat = Heartbeat(self.client(), node, self.shared_queue,
                                   self.forget_after_seconds,
                                   pool=(lambda: pool_size(pool)) if pool is not None else None)
        self.heartbeat.start()

    def worker_shutdown(self, **_: Any) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()

    def task_prerun(self, sender: Any = None, args: Any = None, **_: Any) -> None:
        node, conversation = self._turn(sender, args)
        if node and conversation:
            try:
                turn_started(self.client(), node, this_turn())
            except redis.RedisError:
                log.warning("could not mark %s busy", node, exc_info=True)

    def task_postrun(self, sender: Any = None, args: Any = None, retval: Any = None,
                     state: str | None = None, **_: Any) -> None:
        node, conversation = self._turn(sender, args)
        if not node:
            return
        answered = state == "SUCCESS" and isinstance(retval, int) and retval > 0
        try:
            turn_finished(self.client(), node, this_turn(),
                          conversation if answered else None)
        except redis.RedisError:
            log.warning("could not record where %s was answered", conversation, exc_info=True)

    def _turn(self, task: Any, args: Any) -> tuple[str | None, str | None]:
        if task is None or getattr(task, "name", None) != self.task_name:
            return None, None
        node = getattr(task.request, "hostname", None)
        return (str(node) if node else None), conversation_of(args)


def connect_signals(connect_client: Any, task_name: str, shared_queue: str,
                    forget_after_seconds: float) -> None:
    """Wire routing into Celery's signals (``worker/app.py``, when ``ASSISTANT_AFFINITY``)."""
    from celery import signals

    receivers = _Signals(connect_client, task_name, shared_queue, forget_after_seconds)
    signals.worker_ready.connect(receivers.worker_ready, weak=False)
    signals.worker_shutdown.connect(receivers.worker_shutdown, weak=False)
    signals.task_prerun.connect(receivers.task_prerun, weak=False)
    signals.task_postrun.connect(receivers.task_postrun, weak=False)
