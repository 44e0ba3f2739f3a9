"""Tokens and finished replies over Redis pub/sub, keyed by conversation and message id.

The worker publishes ``token`` events (with their character offset in the reply, so a rerun
after a crash is de-duplicated by the listener) and one ``done`` event. The finished reply is
also stored under its inbound message id before ``done`` is published, so a listener that
subscribed late, or a retried request, still finds it. Both are named by the conversation and
the server's message id (``assistant.keys``), and a listener drops a reply of any other
conversation: a client can neither read nor plant another conversation's reply
(docs/security.md).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis

from assistant import keys
from assistant.envelope import ConversationKey, Reply
from assistant.errors import QueueUnavailable, ReplyTimeout

REPLY_TTL_SECONDS = keys.REPLY_TTL_SECONDS
channel = keys.stream
reply_key = keys.reply


# Token events are coalesced: the first piece goes out at once (time to first token), later
# ones at most every this many seconds (ASSISTANT_STREAM_INTERVAL_MS). One PUBLISH per token
# cost ~10 % of decode speed on 2 cores, since the worker, Redis, the web process and the
# client all wake per token; see docs/benchmarks.md.
COALESCE_SECONDS = 0.1


class Publisher:
    """The worker's side: publish tokens and store + announce finished replies.

    Token events carry ``offset``, the position of their first character in the reply's
    shown text: a run-independent position, so a listener resumes exactly where a rerun
    catches up with it, however the gate or the clock grouped the pieces (issue 16). The
    shown text is kept a prefix of the stored reply (which is stripped): leading whitespace
    is dropped and trailing whitespace held back until more text follows, and ``done`` first
    sends whatever of the reply was not shown yet, so the joined tokens equal the reply.
    """

    def __init__(self, client: redis.Redis, conversation: ConversationKey,
                 message_ids: list[str] | tuple[str, ...],
                 coalesce_seconds: float = COALESCE_SECONDS, strip: bool = True) -> None:
        self.client = client
        # False for a raw completion (the legacy /v1/completions), whose reply keeps its
        # spacing as written: every piece is shown as it comes.
        self.strip = strip
        self.conversation = conversation
        self.message_ids = tuple(message_ids)
        self.coalesce_seconds = coalesce_seconds
        self.shown = ""  # every character queued or sent so far, in order
        self._held = ""  # trailing whitespace not shown yet
        self._pending: list[str] = []
        self._pending_from = 0
        self._last_sent: float | None = None

    def _publish(self, event: dict[str, Any], pipe: Any = None) -> None:
        """Publish to every message's channel; onto ``pipe`` (not executed) when given."""
        payload = json.dumps(event)
        own = pipe is None
        if own:
            pipe = self.client.pipeline(transaction=False)
        for message_id in self.message_ids:
            pipe.publish(channel(self.conversation, message_id), payload)
        if own:
            pipe.execute()

    def _queue(self, text: str) -> None:
        if not text:
            return
        if not self._pending:
            self._pending_from = len(self.shown)
        self._pending.append(text)
        self.shown += text

    def token(self, text: str) -> None:
        """Queue the next piece of the reply; send what is queued when it is time."""
        if not self.strip:
            self._queue(text)
        else:
            if not self.shown:
                text = (self._held + text).lstrip()
                self._held = ""
            body = (self._held + text).rstrip()
            self._held = (self._held + text)[len(body):]
            self._queue(body)
        now = time.monotonic()
        if self._last_sent is None or now - self._last_sent >= self.coalesce_seconds:
            self.flush(now)

    def flush(self, now: float | None = None, pipe: Any = None) -> None:
        """Send the queued text as one event (``offset``: its first character's position)."""
        if self._pending:
            self._publish({"type": "token", "offset": self._pending_from,
                           "text": "".join(self._pending)}, pipe)
            self._pending = []
        self._last_sent = time.monotonic() if now is None else now

    def done(self, reply: Reply) -> None:
        """The rest of the reply's text, then store the reply, then publish ``done``: one
        round trip.

        MULTI/EXEC runs the commands in this order, so the reply is stored before ``done``
        is announced, and the last tokens arrive before it. When the shown text is not a
        prefix of the reply (a mask changed text already shown), nothing more is streamed:
        the final reply replaces the shown text in every client that can.
        """
        # An error reply (the dead-letter apology) is no part of an answer: only ``done``; a
        # reply of another conversation is never streamed (listeners drop its ``done`` too).
        if (reply.finish_reason != "error" and own_reply(reply, self.conversation) is not None
                and reply.text.startswith(self.shown)):
            self._queue(reply.text[len(self.shown):])
        body = reply.model_dump_json()
        pipe = self.client.pipeline(transaction=True)
        self.flush(pipe=pipe)
        for message_id in self.message_ids:
            pipe.set(reply_key(self.conversation, message_id), body, ex=REPLY_TTL_SECONDS)
        self._publish({"type": "done", "reply": json.loads(body)}, pipe)
        pipe.execute()


def stored_reply(client: redis.Redis, conversation: ConversationKey, message_id: str
                 ) -> Reply | None:
    """The reply stored for a message of this conversation; never another conversation's."""
    raw = client.get(reply_key(conversation, message_id))
    return own_reply(Reply.model_validate_json(raw), conversation) if raw else None


def own_reply(reply: Reply, conversation: ConversationKey) -> Reply | None:
    """``reply`` if it belongs to ``conversation``, else None (a second lock on the keys)."""
    return reply if reply.conversation == conversation else None


@dataclass(frozen=True)
class StreamEvent:
    kind: str  # "token" or "done"
    text: str = ""
    reply: Reply | None = None


class PubSubPool:
    """Idle pub/sub connections of one web process, handed from one ``Listener`` to the next.

    A fresh connection per request cost a TCP connect, HELLO and two CLIENT SETINFO, then a
    close, in the web process and in Redis (bench/load.py, docs/benchmarks.md "Load"). A
    listener that ended cleanly unsubscribes and gives its connection back instead; one that
    failed or was interrupted mid-read closes it. Listeners drop messages of other channels,
    so a late message for a connection's previous subscriber is never mistaken for ours.
    """

    def __init__(self, client: aioredis.Redis, max_idle: int = 256) -> None:
        self.client = client
        self.max_idle = max_idle
        self._idle: list[Any] = []

    def take(self) -> tuple[Any, bool]:
        """A pub/sub object, and whether it was used before."""
        if self._idle:
            return self._idle.pop(), True
        return self.client.pubsub(ignore_subscribe_messages=True), False

    async def give_back(self, pubsub: Any, channel_name: str) -> None:
        if len(self._idle) >= self.max_idle:
            await pubsub.aclose()
            return
        try:
            await pubsub.unsubscribe(channel_name)
        except redis.RedisError:
            await pubsub.aclose()
            return
        self._idle.append(pubsub)


class Listener:
    """The edge's side: subscribe *before* enqueueing, then iterate events until ``done``.

    Async (redis.asyncio) so a web process can hold thousands of waiting requests. With a
    ``pool``, the pub/sub connection comes from it and goes back to it when done.
    """

    def __init__(self, client: aioredis.Redis, conversation: ConversationKey, message_id: str,
                 pool: PubSubPool | None = None) -> None:
        self.client = client
        self.conversation = conversation
        self.message_id = message_id
        self.channel = channel(conversation, message_id)
        self.pool = pool
        self.pubsub: Any = None
        self._reusable = False
        self._closed = False
        # Called once when the listener closes (the web gives back an open-stream slot).
        self.on_close: Callable[[], Awaitable[None]] | None = None

    async def __aenter__(self) -> Listener:
        reused = False
        if self.pool is not None:
            self.pubsub, reused = self.pool.take()
        else:
            self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            await self.pubsub.subscribe(self.channel)
        except redis.RedisError as exc:
            await self._discard()
            if not reused:
                raise QueueUnavailable(f"Redis is unavailable: {exc}") from exc
            # An idle connection may have died (Redis restarted): try once with a fresh one.
            self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await self.pubsub.subscribe(self.channel)
            except redis.RedisError as exc2:
                await self._discard()
                raise QueueUnavailable(f"Redis is unavailable: {exc2}") from exc2
        self._reusable = True
        return self

    async def _discard(self) -> None:
        try:
            await self.pubsub.aclose()
        except redis.RedisError:
            pass

    async def __aexit__(self, *exc_info: object) -> None:
        on_close, self.on_close = self.on_close, None
        try:
            if self._closed or self.pubsub is None:
                return
            self._closed = True
            if self.pool is not None and self._reusable:
                await self.pool.give_back(self.pubsub, self.channel)
            else:
                await self._discard()
        finally:
            if on_close is not None:
                await on_close()

    async def events(self, timeout: float) -> AsyncIterator[StreamEvent]:
        """Tokens in order (each character once, across reruns), then the final reply.

        Raises ``ReplyTimeout`` if no ``done`` arrives within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        received = 0  # characters of the reply passed on so far
        try:
            # Covers a reply finished before we subscribed (a retried request).
            raw = await self.client.get(reply_key(self.conversation, self.message_id))
        except redis.RedisError as exc:
            raise QueueUnavailable(f"Redis is unavailable: {exc}") from exc
        stored = own_reply(Reply.model_validate_json(raw), self.conversation) if raw else None
        if stored is not None:
            yield StreamEvent("done", reply=stored)
            return
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ReplyTimeout(f"no reply within {timeout:g} s")
            self._reusable = False  # until the read returns: a cancelled read spoils it
            try:
                message = await self.pubsub.get_message(timeout=min(remaining, 1.0))
            except redis.RedisError as exc:
                raise QueueUnavailable(f"Redis is unavailable: {exc}") from exc
            self._reusable = True
            if message is None or message.get("type") != "message":
                continue
            if message.get("channel") not in (self.channel, self.channel.encode()):
                continue  # a pooled connection's previous subscriber's late message
            event = json.loads(message["data"])
            if event["type"] == "token":
                # A rerun after a crash replays the same text, maybe cut in other places:
                # pass on each character once, in order. An event past what we have (we
                # subscribed late) is skipped: ``done`` brings the whole reply.
                offset, text = int(event["offset"]), str(event["text"])
                fresh = text[received - offset:] if offset <= received else ""
                if fresh:
                    received += len(fresh)
                    yield StreamEvent("token", text=fresh)
            elif event["type"] == "done":
                done = own_reply(Reply.model_validate(event["reply"]), self.conversation)
                if done is None:
                    continue
                yield StreamEvent("done", reply=done)
                return

    async def wait(self, timeout: float) -> Reply:
        async for event in self.events(timeout):
            if event.reply is not None:
                return event.reply
        raise ReplyTimeout(f"no reply within {timeout:g} s")  # pragma: no cover
