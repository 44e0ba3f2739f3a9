"""Token events over real Redis pub/sub: coalesced by the worker, deduped by the listener."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import redis
import redis.asyncio as aioredis

from assistant.envelope import Reply
from assistant.stream import Listener, Publisher, channel, stored_reply
from tests.auxil.factories import conversation


def reply_for(message_id: str, text: str) -> Reply:
    return Reply(message_id="r-" + message_id, conversation=conversation(),
                 in_reply_to=(message_id,), text=text)


def test_the_first_piece_goes_at_once_and_later_ones_are_coalesced(redis_server: str) -> None:
    client = redis.Redis.from_url(f"{redis_server}/15")
    message_id = uuid.uuid4().hex
    subscriber = client.pubsub(ignore_subscribe_messages=True)
    subscriber.subscribe(channel(conversation(), message_id))
    publisher = Publisher(client, conversation(), [message_id], coalesce_seconds=60)
    for index, piece in enumerate(["a", "b", "c", "d"]):
        publisher.token(index, piece)
    final = reply_for(message_id, "abcd")
    publisher.done(final)
    events: list[dict[str, object]] = []
    deadline = time.monotonic() + 5
    while len(events) < 3 and time.monotonic() < deadline:
        message = subscriber.get_message(timeout=0.2)
        if message is not None:
            events.append(json.loads(message["data"]))
    subscriber.close()
    assert events[0] == {"type": "token", "index": 0, "pieces": ["a"]}
    assert events[1] == {"type": "token", "index": 1, "pieces": ["b", "c", "d"]}
    assert events[2]["type"] == "done" and events[2]["reply"]["text"] == "abcd"
    assert stored_reply(client, conversation(), message_id) == final
    client.close()


def test_a_rerun_is_passed_on_once_even_when_grouped_differently(redis_server: str) -> None:
    """The listener passes each piece index once: a crashed run, then its rerun."""
    url = f"{redis_server}/15"
    message_id = uuid.uuid4().hex
    client = redis.Redis.from_url(url)

    async def listen() -> list[str]:
        aclient = aioredis.Redis.from_url(url)
        texts: list[str] = []
        async with Listener(aclient, conversation(), message_id) as listener:
            ready.set()
            async for event in listener.events(timeout=10):
                texts.append(event.reply.text if event.reply else event.text)
        await aclient.aclose()
        return texts

    def publish() -> None:
        first_run = Publisher(client, conversation(), [message_id], coalesce_seconds=60)
        for index, piece in enumerate(["Once", " upon"]):
            first_run.token(index, piece)
        first_run.flush()  # ... and the worker dies here
        rerun = Publisher(client, conversation(), [message_id], coalesce_seconds=0)
        for index, piece in enumerate(["Once", " upon", " a", " time"]):
            rerun.token(index, piece)
        rerun.done(reply_for(message_id, "Once upon a time"))

    async def main() -> list[str]:
        task = asyncio.create_task(listen())
        await ready.wait()
        await asyncio.to_thread(publish)
        return await task

    ready = asyncio.Event()
    try:
        texts = asyncio.run(main())
    finally:
        client.close()
    assert texts == ["Once", " upon", " a", " time", "Once upon a time"]
