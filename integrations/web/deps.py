"""Shared state of the web process, and FastAPI dependencies as ``Annotated`` aliases."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import redis
import redis.asyncio as aioredis
from celery import Celery
from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from assistant.envelope import Inbound, Reply
from assistant.errors import QueueUnavailable
from assistant.settings import Settings
from assistant.stream import Listener, PubSubPool
from worker.dispatch import Dispatcher

# The message's place in line, sent when the queue is past ASSISTANT_MAX_QUEUE_DEPTH.
QUEUE_POSITION_HEADER = "X-Queue-Position"


@dataclass(frozen=True)
class Queued:
    """A queued message: the id whose reply to wait for, and its place in a busy queue."""

    message_id: str
    position: int | None = None


@dataclass
class WebState:
    settings: Settings
    client: redis.Redis
    aclient: aioredis.Redis
    celery_app: Celery
    dispatcher: Dispatcher
    # Pub/sub connections reused across requests (assistant.stream.PubSubPool); built lazily.
    pubsubs: PubSubPool | None = None

    async def submit(self, inbound: Inbound) -> Queued:
        """Queue the message; returns the message id whose reply to wait for.

        A retried request (same dedupe id) waits for the first copy's reply instead.
        Raises ``Throttled`` when a fairness limit refuses it.
        """
        submitted = await run_in_threadpool(self.dispatcher.submit, inbound)
        if submitted:
            return Queued(inbound.message_id, submitted.queue_position)
        from assistant.turns import original_message_id

        try:
            original = await run_in_threadpool(original_message_id, self.client,
                                               inbound.dedupe_id)
        except redis.RedisError as exc:
            raise QueueUnavailable(str(exc)) from exc
        return Queued(original or inbound.message_id)

    def listener(self, message_id: str) -> Listener:
        if self.pubsubs is None:
            self.pubsubs = PubSubPool(self.aclient)
        return Listener(self.aclient, message_id, self.pubsubs)

    async def open_stream(self, inbound: Inbound) -> tuple[Listener, int | None]:
        """Subscribe to the reply, *then* queue the message; the caller closes the listener.

        Also returns the message's place in line when the queue is busy (else None).
        """
        listener = self.listener(inbound.message_id)
        await listener.__aenter__()
        try:
            queued = await self.submit(inbound)
            if queued.message_id != inbound.message_id:
                await listener.__aexit__(None, None, None)
                listener = self.listener(queued.message_id)
                await listener.__aenter__()
        except BaseException:
            await listener.__aexit__(None, None, None)
            raise
        return listener, queued.position

    async def ask(self, inbound: Inbound) -> tuple[Reply, int | None]:
        """Queue a message and wait for its whole reply (the non-streaming APIs)."""
        listener, position = await self.open_stream(inbound)
        try:
            return await listener.wait(self.settings.reply_timeout), position
        finally:
            await listener.__aexit__(None, None, None)


def get_state(request: Request) -> WebState:
    state: WebState = request.app.state.web
    return state


State = Annotated[WebState, Depends(get_state)]
