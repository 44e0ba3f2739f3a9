"""No stranded message: re-enqueue conversations whose pending messages have no task.

A message waits in its conversation's pending list (``assistant.turns``) until a turn stores
its reply; a Celery task naming the conversation is what makes a worker look. Faults can leave
the message with no task at all (issue 16): a task rejected without requeue because Celery could
not publish its retry while Redis was away, a task acked after its hard time limit, a queue lost
with a Redis that restarted without its append-only file. The message then waits forever, and a
retried request with the same id waits for a reply that never comes.

``stranded`` finds conversations with a pending message older than ``STRANDED_AFTER_SECONDS``,
whose lock nobody holds, and that no task names: neither queued (the shared queue, every
node's own queue) nor delivered and unacknowledged (kombu's ``unacked`` hash, which also holds
retries waiting out their countdown; a dead node's entries come back after the visibility
timeout). An ``unacked`` entry delivered before Redis' current start does not count: every
connection died with the old server, so no consumer will ack or run it, and kombu would
restore it only after the visibility timeout (300 s by default; a Valkey killed mid-turn and
restarted from its append-only file left the retried request waiting for it, issue 16).
``Sweeper`` re-enqueues them, called from every worker node's main process
(``worker.recovery``); one node sweeps per period (``SET NX``). A duplicate task is harmless:
it takes the conversation's lock and finds nothing left to answer.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

import redis

from assistant import keys, turns
from assistant.envelope import ConversationKey, Inbound, utcnow
from worker.affinity import DIRECT_SUFFIX

log = logging.getLogger(__name__)

SWEEP_EVERY_SECONDS = 10.0
# Older than the gap between queueing a message and sending its task (milliseconds), and
# than a worker's pop of the task and its note in ``unacked`` (one round trip).
STRANDED_AFTER_SECONDS = 15.0
SWEEP_LOCK_KEY = keys.SWEEPER
UNACKED_KEY = "unacked"  # kombu's Redis transport (Channel.unacked_key)
UNACKED_INDEX_KEY = "unacked_index"  # delivery tag → when it was delivered (unix seconds)


def server_started_at(client: redis.Redis) -> float | None:
    """When this Redis server started, in unix seconds on its own clock (rounded up: a
    delivery in its first second may count as older, which costs one harmless duplicate);
    None where ``INFO`` or ``TIME`` is refused (some managed services rename them)."""
    try:
        seconds, micros = client.time()
        info: dict[str, Any] = client.info("server")
        uptime = int(info["uptime_in_seconds"])
    except (redis.ResponseError, KeyError, ValueError):
        return None
    return float(seconds) + float(micros) / 1e6 - uptime


def task_conversation(message: bytes | str | dict[str, Any]) -> str | None:
    """The conversation id a kombu message's ``answer_conversation`` task names (None: not
    such a task)."""
    try:
        payload: dict[str, Any] = message if isinstance(message, dict) else json.loads(message)
        body = payload["body"]
        if payload.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return ConversationKey.model_validate_json(args[0]).redis_id
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None


def tasked_conversations(client: redis.Redis, queues: Iterable[str]) -> set[str]:
    """Conversations some task names: queued in ``queues``, or delivered and not acked since
    this Redis server started."""
    named: set[str] = set()
    for queue in queues:
        for raw in client.lrange(queue, 0, -1):
            found = task_conversation(raw)
            if found:
                named.add(found)
    started = server_started_at(client)
    delivered: dict[Any, float] = {}
    if started is not None:
        scored: list[tuple[Any, float]] = client.zrangebyscore(  # type: ignore[assignment]
            UNACKED_INDEX_KEY, "-inf", "+inf", withscores=True)
        delivered = dict(scored)
    ghosts = 0
    for tag, entry in client.hgetall(UNACKED_KEY).items():
        if started is not None and delivered.get(tag, started) < started:
            ghosts += 1  # delivered on a connection that died with the previous server
            continue
        try:
            message = json.loads(entry)[0]  # [message, exchange, routing key]
        except (ValueError, IndexError, TypeError):
            continue
        found = task_conversation(message)
        if found:
            named.add(found)
    if ghosts:
        log.info("%d unacknowledged deliveries predate Redis' restart: not counted as tasks",
                 ghosts)
    return named


def task_queues(client: redis.Redis, shared_queue: str) -> list[str]:
    """The shared queue and every node's own queue (``<node>.dq2``)."""
    queues = [shared_queue]
    for key in client.scan_iter(match=f"*{DIRECT_SUFFIX}", count=500, _type="list"):
        queues.append(key.decode() if isinstance(key, bytes) else str(key))
    return queues


def is_stranded(client: redis.Redis, message: Inbound, shared_queue: str,
                older_than: float = STRANDED_AFTER_SECONDS) -> bool:
    """Whether ``message`` waited longer than ``older_than`` in its conversation's pending
    list with no turn running and no task naming the conversation (a same-id retry asks)."""
    if (utcnow() - message.received_at).total_seconds() < older_than:
        return False
    if client.exists(turns.lock_key(message.conversation)):
        return False
    if not any(i.message_id == message.message_id
               for i in turns.pending(client, message.conversation)):
        return False
    named = tasked_conversations(client, task_queues(client, shared_queue))
    return message.conversation.redis_id not in named


def stranded(client: redis.Redis, shared_queue: str,
             older_than: float = STRANDED_AFTER_SECONDS) -> list[ConversationKey]:
    """Conversations with a message pending longer than ``older_than`` and no task."""
    candidates: list[tuple[str, ConversationKey]] = []
    for key in client.scan_iter(match=turns.PENDING_PATTERN, count=500):
        raw = client.lindex(key, 0)
        if raw is None:
            continue
        try:
            oldest = Inbound.model_validate_json(raw)
        except ValueError:
            continue
        if (utcnow() - oldest.received_at).total_seconds() < older_than:
            continue
        if client.exists(turns.lock_key(oldest.conversation)):
            continue  # a turn runs now
        candidates.append((oldest.conversation.redis_id, oldest.conversation))
    if not candidates:
        return []
    named = tasked_conversations(client, task_queues(client, shared_queue))
    return [conversation for redis_id, conversation in candidates if redis_id not in named]


class Sweeper:
    """Re-enqueues stranded conversations through ``enqueue``; called every ``interval``
    seconds by each worker node's main process (``worker.recovery``), done by one of them."""

    def __init__(self, client: redis.Redis, shared_queue: str,
                 enqueue: Callable[[ConversationKey], None],
                 interval: float = SWEEP_EVERY_SECONDS,
                 older_than: float = STRANDED_AFTER_SECONDS) -> None:
        self.client = client
        self.shared_queue = shared_queue
        self.enqueue = enqueue
        self.interval = interval
        self.older_than = older_than

    def sweep(self) -> int:
        """Re-enqueue what is stranded now (if no other node swept this period)."""
        if not self.client.set(SWEEP_LOCK_KEY, "1", nx=True, px=int(self.interval * 900)):
            return 0
        found = stranded(self.client, self.shared_queue, self.older_than)
        for conversation in found:
            log.warning("conversation %s has pending messages and no task: re-enqueued",
                        conversation.redis_id)
            self.enqueue(conversation)
        return len(found)
