"""Tokens and finished replies over Redis pub/sub, keyed by the inbound message id.

The worker publishes ``token`` events (with their index, so a rerun after a crash can be
de-duplicated by the listener) and one ``done`` event. The finished reply is also stored under
its inbound message id before ``done`` is published, so a listener that subscribed late, or a
retried request, still finds it.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis

from assistant.envelope import Reply
from assistant.errors import QueueUnavailable, ReplyTimeout

PREFIX = "assistant"
REPLY_TTL_SECONDS = 86400


def channel(message_id: str) -> str:
    return f"{PREFIX}:stream:{message_id}"


def reply_key(message_id: str) -> str:
    return f"{PREFIX}:reply:{message_id}"


# Token events are coalesced: the first piece goes out at once (time to first token), later
# ones at most every this many seconds (ASSISTANT_STREAM_INTERVAL_MS). One PUBLISH per token
# cost ~10 % of decode speed on 2 cores, since the worker, Redis, the web process and the
# client all wake per token; see docs/benchmarks.md.
COALESCE_SECONDS = 0.1


class Publisher:
    """The worker's side: publish tokens and store + announce finished replies."""

    def __init__(self, client: redis.Redis, message_ids: list[str] | tuple[str, ...],
                 coalesce_seconds: float = COALESCE_SECONDS) -> None:
        self.client = client
        self.message_ids = tuple(message_ids)
        self.coalesce_seconds = coalesce_seconds
        self._pending: list[str] = []
        self._pending_from = 0
        self._last_sent: float | None = None

    def _publish(self, event: dict[str, Any]) -> None:
        payload = json.dumps(event)
        pipe = self.client.pipeline(transaction=False)
        for message_id in self.message_ids:
            pipe.publish(channel(message_id), payload)
        pipe.execute()

    def token(self, index: int, text: str) -> None:
        """Queue piece number ``index``; send what is queued when it is time."""
        if not self._pending:
            self._pending_from = index
        self._pending.append(text)
        now = time.monotonic()
        if self._last_sent is None or now - self._last_sent >= self.coalesce_seconds:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        """Send the queued pieces as one event (``index`` is the first piece's number)."""
        if self._pending:
            self._publish({"type": "token", "index": self._pending_from,
                           "pieces": self._pending})
            self._pending = []
        self._last_sent = time.monotonic() if now is None else now

    def done(self, reply: Reply) -> None:
        self.flush()
        body = reply.model_dump_json()
        pipe = self.client.pipeline(transaction=True)
        for message_id in self.message_ids:
            pipe.set(reply_key(message_id), body, ex=REPLY_TTL_SECONDS)
        pipe.execute()
        self._publish({"type": "done", "reply": json.loads(body)})


def stored_reply(client: redis.Redis, message_id: str) -> Reply | None:
    raw = client.get(reply_key(message_id))
    return Reply.model_validate_json(raw) if raw else None


@dataclass(frozen=True)
class StreamEvent:
    kind: str  # "token" or "done"
    text: str = ""
    reply: Reply | None = None


class Listener:
    """The edge's side: subscribe *before* enqueueing, then iterate events until ``done``.

    Async (redis.asyncio) so a web process can hold thousands of waiting requests.
    """

    def __init__(self, client: aioredis.Redis, message_id: str) -> None:
        self.client = client
        self.message_id = message_id
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)

    async def __aenter__(self) -> Listener:
        try:
            await self.pubsub.subscribe(channel(self.message_id))
        except redis.RedisError as exc:
            await self.pubsub.aclose()  # type: ignore[no-untyped-call]
            raise QueueUnavailable(f"Redis is unavailable: {exc}") from exc
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self.pubsub.aclose()  # type: ignore[no-untyped-call]
        except redis.RedisError:
            pass

    async def events(self, timeout: float) -> AsyncIterator[StreamEvent]:
        """Tokens in order (each index once, across reruns), then the final reply.

        Raises ``ReplyTimeout`` if no ``done`` arrives within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        next_index = 0
        try:
            # Covers a reply finished before we subscribed (a retried request).
            raw = await self.client.get(reply_key(self.message_id))
        except redis.RedisError as exc:
            raise QueueUnavailable(f"Redis is unavailable: {exc}") from exc
        if raw:
            yield StreamEvent("done", reply=Reply.model_validate_json(raw))
            return
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ReplyTimeout(f"no reply within {timeout:g} s")
            try:
                message = await self.pubsub.get_message(timeout=min(remaining, 1.0))
            except redis.RedisError as exc:
                raise QueueUnavailable(f"Redis is unavailable: {exc}") from exc
            if message is None or message.get("type") != "message":
                continue
            event = json.loads(message["data"])
            if event["type"] == "token":
                # A rerun after a crash replays the same pieces, maybe grouped differently:
                # pass on each piece index once, in order.
                first = event["index"]
                fresh = event["pieces"][next_index - first:] if first <= next_index else []
                if fresh:
                    next_index += len(fresh)
                    yield StreamEvent("token", text="".join(fresh))
            elif event["type"] == "done":
                yield StreamEvent("done", reply=Reply.model_validate(event["reply"]))
                return

    async def wait(self, timeout: float) -> Reply:
        async for event in self.events(timeout):
            if event.reply is not None:
                return event.reply
        raise ReplyTimeout(f"no reply within {timeout:g} s")  # pragma: no cover
