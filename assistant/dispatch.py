"""The producer side, used by every edge: dedupe, fairness, queue, ask a worker.

The workers are reached through an ``assistant.backend.Backend`` (Celery in
``worker/backend.py``), injected by the process that builds the dispatcher: this module
imports no Celery and no ``worker`` module.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis

from assistant import keys, turns
from assistant import limits as fairness
from assistant.backend import Backend, load_backend, redis_url
from assistant.envelope import Inbound
from assistant.errors import Overloaded, QueueUnavailable, Throttled
from assistant.limits import Limits
from assistant.prompts import PromptLibrary
from assistant.redis_client import connect
from assistant.settings import Settings
from assistant.stream import stored_reply

log = logging.getLogger(__name__)

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
    alive and idle (``Backend.node_for``), otherwise to the shared queue.
    """

    def __init__(self, client: redis.Redis, backend: Backend,
                 limits: Limits | None = None) -> None:
        self.client = client
        self.backend = backend
        self.limits = limits or Limits()

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
            self.backend.enqueue_turn(inbound.conversation, node=node)
        except Exception as exc:  # the broker's errors (kombu's OperationalError and friends)
            self._undo(inbound)
            raise QueueUnavailable(f"could not enqueue the message: {exc}") from exc
        position = self._queue_position()
        if position is None:
            return Submitted(True)
        log.info("queue is busy: message %s is number %d in line", inbound.message_id, position)
        return Submitted(True, position, self.limits.busy_notice(position))

    def claim(self, dedupe_id: str, message_id: str) -> bool:
        """A platform event the edge answers itself (a command, a sticker) is seen once, like
        a queued message: True the first time its dedupe id comes, False for a redelivery.
        Raises ``QueueUnavailable`` when Redis does not answer."""
        try:
            return bool(self.client.set(turns.dedupe_key(dedupe_id), message_id, nx=True,
                                        ex=turns.DEDUPE_TTL_SECONDS))
        except redis.RedisError as exc:
            raise QueueUnavailable(f"Redis is unavailable: {exc}") from exc

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
        if original is None or not self.backend.is_stranded(original):
            return
        if not self.client.set(nudge_key(conversation), "1", nx=True, ex=NUDGE_EVERY_SECONDS):
            return
        log.warning("message %s was sent again and waits with no task: enqueued its "
                    "conversation again", original_id)
        try:
            self.backend.enqueue_turn(conversation, retry=False)
        except Exception:  # the broker's errors: the workers' sweeper will see it
            log.warning("could not enqueue conversation %s again", conversation.redis_id,
                        exc_info=True)

    def _affine_node(self, inbound: Inbound) -> str | None:
        """The node that answered this conversation last, if it can take the turn now."""
        try:
            return self.backend.node_for(inbound.conversation)
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
        depth = int(self.client.llen(self.backend.queue_name))
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
            depth = int(self.client.llen(self.backend.queue_name))
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


# An edge fails fast when Redis is down: the API answers 503 at once and a platform handler
# logs it, instead of hanging.
EDGE_REDIS_TIMEOUTS = {"socket_connect_timeout": 2.0, "socket_timeout": 5.0}


def connect_edge(settings: Settings) -> redis.Redis:
    """An edge process's Redis client (``ConfigError`` when ``REDIS_URL`` is not set)."""
    return connect(redis_url(settings), master_name=settings.redis_sentinel_master,
                   **EDGE_REDIS_TIMEOUTS)


def edge_dispatcher(settings: Settings, client: redis.Redis,
                    prompts: PromptLibrary | None = None) -> Dispatcher:
    """The dispatcher of an edge process: the registered backend, the settings' limits."""
    return Dispatcher(client, load_backend(settings, client),
                      limits=Limits.from_settings(settings, prompts))
