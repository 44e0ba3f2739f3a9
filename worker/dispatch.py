"""The producer side, used by every adapter: dedupe, queue for the conversation, enqueue a task."""

from __future__ import annotations

import logging

import redis
from celery import Celery

from assistant import turns
from assistant.envelope import Inbound
from assistant.errors import QueueUnavailable

log = logging.getLogger(__name__)

ANSWER_TASK = "assistant.answer_conversation"


class Dispatcher:
    """Accepts inbound messages for the workers; never waits for the model."""

    def __init__(self, client: redis.Redis, celery_app: Celery) -> None:
        self.client = client
        self.celery_app = celery_app

    def submit(self, inbound: Inbound) -> bool:
        """Queue ``inbound``; False if its dedupe id was already accepted (a platform retry).

        Raises ``QueueUnavailable`` when Redis does not answer; then nothing was queued.
        """
        try:
            if not turns.submit(self.client, inbound):
                return False
        except redis.RedisError as exc:
            raise QueueUnavailable(f"Redis is unavailable: {exc}") from exc
        try:
            self.celery_app.send_task(
                ANSWER_TASK,
                args=[inbound.conversation.model_dump_json()],
                retry=True,
                retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2},
            )
        except Exception as exc:  # kombu raises OperationalError and friends
            self._undo(inbound)
            raise QueueUnavailable(f"could not enqueue the message: {exc}") from exc
        return True

    def _undo(self, inbound: Inbound) -> None:
        """Take back a half-queued message so the platform's retry is accepted later."""
        try:
            self.client.lrem(turns.pending_key(inbound.conversation), 1,
                             inbound.model_dump_json())
            self.client.delete(turns.dedupe_key(inbound.dedupe_id))
        except redis.RedisError:
            log.warning("could not take back message %s", inbound.message_id, exc_info=True)
