"""The producer side, used by every adapter: dedupe, fairness, queue, enqueue a task."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis
from celery import Celery
from celery.utils.nodenames import worker_direct

from assistant import keys, turns
from assistant import limits as fairness
from assistant.envelope import Inbound
from assistant.errors import Overloaded, QueueUnavailable, Throttled
from assistant.limits import Limits
from assistant.stream import stored_reply
from worker.affinity import Router
from worker.sweeper import is_stranded

log = logging.getLogger(__name__)

ANSWER_TASK = keys.ANSWER_TASK
# What an overloaded queue tells clients (Retry-After): about a turn's time on a busy worker.
OVERLOADED_RETRY_SECONDS = 30
NUDGE_EVERY_SECONDS = 10


nudge_key = keys.nudged


@dataclass(frozen=True)
class Submitted:
    """What became of a message: truthy when it was queued now (False: a duplicate)."""

    accepted: bool
    # Set when the queue was deeper than ASSISTANT_MAX_QUEUE_DEPTH: the message waits in line,
    # and ``notice`` is what to tell the user ("busy, you are Nth in line").
    queue_position: int | None = None
    notice: str | None = None

    def __bool__(self) -> bool:
        return self.accepted


class Dispatcher:
    """Accepts inbound messages for the workers; never waits for the model.

    ``limits`` (``Limits.from_settings(settings)`` at the entry points) defaults to none.
    A conversation's turn goes to the worker node holding its model state when that node is
    alive and idle (``worker.affinity``), otherwise to the shared queue.
    """

    def __init__(self, client: redis.Redis, celery_app: Celery,
                 limits: Limits | None = None) -> None:
        self.client = client
        self.celery_app = celery_app
        self.limits = limits or Limits()
        self.router = Router(client)

    def submit(self, inbound: Inbound) -> Submitted:
        """Queue ``inbound``; not accepted if its dedupe id was already accepted (a retry).

        Order: a duplicate is recognised first (never refused nor charged twice), then the
        queue past its hard depth raises ``Overloaded`` and the limits raise ``Throttled``
        (nothing queued), then the message is queued.
        Raises ``QueueUnavailable`` when Redis does not answer; then nothing was queued.
        """
        try:
            if self.limits.refuses or self.limits.hard_queue_depth:
                if self.client.exists(turns.dedupe_key(inbound.dedupe_id)):
                    self._nudge_if_stranded(inbound)
                    return Submitted(False)
                self._check_overload()
            if self.limits.refuses:
                self._check_limits(inbound)
            if not turns.submit(self.client, inbound):
                self._nudge_if_stranded(inbound)
                return Submitted(False)
        except redis.RedisError as exc:
            raise QueueUnavailable(f"Redis is unavailable: {exc}") from exc
        node = self._affine_node(inbound)
        try:
            self.celery_app.send_task(
                ANSWER_TASK,
                args=[inbound.conversation.model_dump_json()],
                retry=True,
                retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2},
                **({"queue": worker_direct(node)} if node else {}),
            )
        except Exception as exc:  # kombu raises OperationalError and friends
            self._undo(inbound)
            raise QueueUnavailable(f"could not enqueue the message: {exc}") from exc
        position = self._queue_position()
        if position is None:
            return Submitted(True)
        log.info("queue is busy: message %s is number %d in line", inbound.message_id, position)
        return Submitted(True, position, self.limits.busy_notice(position))

    def _nudge_if_stranded(self, retried: Inbound) -> None:
        """A retry of a message that waits with no turn running and no task naming its
        conversation (issue 16: a task rejected while Redis was away, or acked after its time
        limit): enqueue a task for it now rather than let the retry wait for nothing. At most
        once per ``NUDGE_EVERY_SECONDS`` per conversation; a task too many finds nothing."""
        conversation = retried.conversation
        original_id = turns.original_message_id(self.client, retried.dedupe_id)
        if original_id is None or stored_reply(self.client, conversation,
                                               original_id) is not None:
            return
        original = next((i for i in turns.pending(self.client, conversation)
                         if i.message_id == original_id), None)
        if original is None or not is_stranded(self.client, original,
                                               self.celery_app.conf.task_default_queue):
            return
        if not self.client.set(nudge_key(conversation), "1", nx=True, ex=NUDGE_EVERY_SECONDS):
            return
        log.warning("message %s was sent again and waits with no task: enqueued its "
                    "conversation again", original_id)
        try:
            self.celery_app.send_task(ANSWER_TASK, args=[conversation.model_dump_json()])
        except Exception:  # kombu's errors: the sweeper (worker/sweeper.py) will see it
            log.warning("could not enqueue conversation %s again", conversation.redis_id,
                        exc_info=True)

    def _affine_node(self, inbound: Inbound) -> str | None:
        """The node that answered this conversation last, if it can take the turn now."""
        try:
            return self.router.node_for(inbound.conversation)
        except redis.RedisError:
            log.warning("could not look up the conversation's worker", exc_info=True)
            return None

    def _check_limits(self, inbound: Inbound) -> None:
        try:
            fairness.check(self.client, self.limits, inbound)
        except Throttled as exc:
            # Tell the user once per platform message: a twin event or retry is refused quietly.
            exc.repeated = not self.client.set(fairness.refused_key(inbound.dedupe_id), "1",
                                               nx=True, ex=fairness.REFUSED_TTL_SECONDS)
            log.info("message %s refused (%s); retry in %d s", inbound.message_id,
                     type(exc).__name__, exc.retry_after_seconds)
            raise

    def _check_overload(self) -> None:
        """Refuse new messages (503 + Retry-After) past ``ASSISTANT_HARD_QUEUE_DEPTH``: a
        queue that grows without end only makes every reply time out (issue 15)."""
        if not self.limits.hard_queue_depth:
            return
        depth = int(self.client.llen(self.celery_app.conf.task_default_queue))
        if depth >= self.limits.hard_queue_depth:
            log.warning("queue depth %d is at its hard limit %d: refusing new messages",
                        depth, self.limits.hard_queue_depth)
            raise Overloaded(OVERLOADED_RETRY_SECONDS,
                             "The assistant is overloaded; try again in a minute.")

    def _queue_position(self) -> int | None:
        """Our place in line when more than ``max_queue_depth`` tasks wait before ours.

        The Celery queue is a Redis list on the broker (the same Redis): new tasks are pushed
        at one end and taken from the other, so its length right after ours is our place.
        """
        if self.limits.max_queue_depth is None:
            return None
        try:
            depth = int(self.client.llen(self.celery_app.conf.task_default_queue))
        except redis.RedisError:
            log.warning("could not read the queue depth", exc_info=True)
            return None
        return depth if depth > self.limits.max_queue_depth else None

    def _undo(self, inbound: Inbound) -> None:
        """Take back a half-queued message so the platform's retry is accepted later."""
        try:
            self.client.lrem(turns.pending_key(inbound.conversation), 1,
                             inbound.model_dump_json())
            self.client.delete(turns.dedupe_key(inbound.dedupe_id))
        except redis.RedisError:
            log.warning("could not take back message %s", inbound.message_id, exc_info=True)
