"""Shared state of the web process, and FastAPI dependencies as ``Annotated`` aliases."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

import anyio
import redis
import redis.asyncio as aioredis
from fastapi import Depends, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from assistant import keys
from assistant.backend import Backend
from assistant.cancel import CANCEL_TTL_SECONDS, cancel_key, waiting_key
from assistant.dispatch import Dispatcher
from assistant.envelope import ConversationKey, Inbound, Reply
from assistant.errors import QueueUnavailable, Throttled
from assistant.settings import Settings
from assistant.stream import Listener, PubSubPool

log = logging.getLogger(__name__)

CLIENT_CLOSED_REQUEST = 499
# How often a non-streaming request looks whether its client is still connected.
DISCONNECT_POLL_SECONDS = 0.5

# The message's place in line, sent when the queue is past ASSISTANT_MAX_QUEUE_DEPTH.
QUEUE_POSITION_HEADER = "X-Queue-Position"
# A client told "too many open streams" may try again after this many seconds.
OPEN_STREAMS_RETRY_SECONDS = 5

# Reserve one of an identity's open-stream slots, all in one step: drop the slots whose
# deadline passed (a web process that died never released them), then add ours if there is
# room. KEYS[1]: the set; ARGV: now, our deadline, our token, the cap. Returns 1 if reserved.
_RESERVE_STREAM = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('EXPIREAT', KEYS[1], math.ceil(tonumber(ARGV[2])))
return 1
"""


_Release = Callable[[], Awaitable[None]]


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
    backend: Backend
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

    def listener(self, conversation: ConversationKey, message_id: str) -> Listener:
        if self.pubsubs is None:
            self.pubsubs = PubSubPool(self.aclient)
        return Listener(self.aclient, conversation, message_id, self.pubsubs)

    async def open_stream(self, inbound: Inbound) -> tuple[Listener, int | None]:
        """Subscribe to the reply, *then* queue the message; the caller closes the listener.

        Also returns the message's place in line when the queue is busy (else None).
        Raises ``Throttled`` when the sender already waits for ``ASSISTANT_MAX_OPEN_STREAMS``
        replies (each waiting request holds a connection and a pub/sub subscription).
        """
        release = await self._reserve_stream(inbound)
        listener = self.listener(inbound.conversation, inbound.message_id)
        listener.on_close = release
        try:
            await listener.__aenter__()
            queued = await self.submit(inbound)
            if queued.message_id != inbound.message_id:
                # A retry: wait for the first copy's reply, in the same conversation.
                listener.on_close = None
                await listener.__aexit__(None, None, None)
                listener = self.listener(inbound.conversation, queued.message_id)
                listener.on_close = release
                await listener.__aenter__()
            await self._count_waiting(listener, +1)
        except BaseException:
            await listener.__aexit__(None, None, None)
            raise
        return listener, queued.position

    async def _count_waiting(self, listener: Listener, change: int) -> int | None:
        """Add ``change`` to the clients waiting for ``listener``'s message; the new count
        (None: not known, Redis failed)."""
        key = waiting_key(listener.conversation, listener.message_id)
        try:
            async with self.aclient.pipeline(transaction=True) as pipe:
                pipe.incrby(key, change)
                pipe.expire(key, CANCEL_TTL_SECONDS)
                count, _ = await pipe.execute()
        except redis.RedisError:
            log.warning("could not count the clients of message %s", listener.message_id,
                        exc_info=True)
            return None
        return int(count)

    async def _reserve_stream(self, inbound: Inbound) -> _Release:
        """Take one of the sender's open-stream slots; returns what gives it back."""
        key = keys.open_streams(inbound.conversation.platform, inbound.user_id)
        token = uuid.uuid4().hex
        now = time.time()
        deadline = now + self.settings.reply_timeout + 60
        try:
            reserved = await self.aclient.eval(
                _RESERVE_STREAM, 1, key, repr(now), repr(deadline), token,
                self.settings.max_open_streams)
        except redis.RedisError as exc:
            raise QueueUnavailable(f"Redis is unavailable: {exc}") from exc
        if not int(reserved):
            raise Throttled(OPEN_STREAMS_RETRY_SECONDS,
                            f"Too many replies in progress for you (at most "
                            f"{self.settings.max_open_streams}): wait for one to finish.")

        async def release() -> None:
            try:
                await self.aclient.zrem(key, token)
            except redis.RedisError:
                pass  # the slot expires at its deadline

        return release

    async def ask(self, inbound: Inbound, request: Request | None = None
                  ) -> tuple[Reply, int | None]:
        """Queue a message and wait for its whole reply (the non-streaming APIs).

        With ``request``, a client that disconnects while it waits gives the message up: the
        worker stops generating its reply (assistant/cancel.py).
        """
        listener, position = await self.open_stream(inbound)
        gone = False
        try:
            waiting = asyncio.ensure_future(listener.wait(self.settings.reply_timeout))
            try:
                while request is not None:
                    finished, _ = await asyncio.wait({waiting},
                                                     timeout=DISCONNECT_POLL_SECONDS)
                    if finished:
                        break
                    if await request.is_disconnected():
                        gone = True
                        break
                if not gone:
                    return await waiting, position
            finally:
                if not waiting.done():
                    waiting.cancel()
            # nginx's "client closed request": nobody reads it, but the access log shows it.
            raise HTTPException(status_code=CLIENT_CLOSED_REQUEST,
                                detail="the client disconnected before its reply")
        finally:
            await self.end_stream(listener, client_gone=gone)

    async def end_stream(self, listener: Listener, client_gone: bool) -> None:
        """Close ``listener``; when its client went away before the reply, give the message
        up, so the worker stops generating it (only web and API replies are ever cancelled).

        Shielded: it runs when the request was cancelled by the client's disconnect.
        """
        with anyio.CancelScope(shield=True):
            left = await self._count_waiting(listener, -1)
            # Given up only when no other client (a same-id retry) still waits for it.
            if client_gone and left is not None and left <= 0:
                try:
                    await self.aclient.set(cancel_key(listener.conversation,
                                                      listener.message_id),
                                           "1", ex=CANCEL_TTL_SECONDS)
                except redis.RedisError:
                    log.warning("could not cancel message %s", listener.message_id,
                                exc_info=True)
            await listener.__aexit__(None, None, None)



def get_state(request: Request) -> WebState:
    state: WebState = request.app.state.web
    return state


State = Annotated[WebState, Depends(get_state)]
