"""Token events over real Redis pub/sub: coalesced by the worker, deduped by the listener."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable

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
    for piece in ["a", "b", "c", "d"]:
        publisher.token(piece)
    final = reply_for(message_id, "abcd")
    publisher.done(final)
    events: list[dict[str, object]] = []
    deadline = time.monotonic() + 5
    while len(events) < 3 and time.monotonic() < deadline:
        message = subscriber.get_message(timeout=0.2)
        if message is not None:
            events.append(json.loads(message["data"]))
    subscriber.close()
    assert events[0] == {"type": "token", "offset": 0, "text": "a"}
    assert events[1] == {"type": "token", "offset": 1, "text": "bcd"}
    assert events[2]["type"] == "done" and events[2]["reply"]["text"] == "abcd"
    assert stored_reply(client, conversation(), message_id) == final
    client.close()


def listen_while(url: str, message_id: str, publish: Callable[[redis.Redis], None]
                 ) -> list[str]:
    """What a listener passes on while ``publish`` runs (in a thread) against ``url``."""
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

    async def main() -> list[str]:
        task = asyncio.create_task(listen())
        await ready.wait()
        # Let the listener look for a stored reply first (it reads it instead of the stream).
        await asyncio.sleep(0.2)
        await asyncio.to_thread(publish, client)
        return await task

    ready = asyncio.Event()
    try:
        return asyncio.run(main())
    finally:
        client.close()


def test_a_rerun_is_passed_on_once_even_when_cut_in_other_places(redis_server: str) -> None:
    """The listener passes each character once: a crashed run, then its rerun whose pieces
    (the output gate releases on a clock) end in other places than the first run's."""
    message_id = uuid.uuid4().hex

    def publish(client: redis.Redis) -> None:
        first_run = Publisher(client, conversation(), [message_id], coalesce_seconds=60)
        for piece in ["Once upon a", " ti"]:
            first_run.token(piece)
        first_run.flush()  # ... and the worker dies here
        rerun = Publisher(client, conversation(), [message_id], coalesce_seconds=0)
        for piece in ["Once", " upon", " a time,", " the end"]:
            rerun.token(piece)
        rerun.done(reply_for(message_id, "Once upon a time, the end"))

    texts = listen_while(f"{redis_server}/15", message_id, publish)
    assert texts == ["Once upon a", " ti", "me,", " the end", "Once upon a time, the end"]
    assert "".join(texts[:-1]) == texts[-1]


def test_the_streamed_text_equals_the_stored_reply(redis_server: str) -> None:
    """Whitespace the stored (stripped) reply lacks is never streamed, and text the stream
    did not show (held back, a cut notice) goes out before ``done``."""
    message_id = uuid.uuid4().hex

    def publish(client: redis.Redis) -> None:
        publisher = Publisher(client, conversation(), [message_id], coalesce_seconds=0)
        for piece in ["\n ", " Hello", " there", "\n\n", "friend", " \n"]:
            publisher.token(piece)
        publisher.done(reply_for(message_id, "Hello there\n\nfriend. [cut]"))

    texts = listen_while(f"{redis_server}/15", message_id, publish)
    assert "".join(texts[:-1]) == texts[-1] == "Hello there\n\nfriend. [cut]"
    assert texts[0] == "Hello"


def test_a_reply_stored_by_an_earlier_run_completes_the_stream(redis_server: str) -> None:
    """A rerun that finds the reply stored announces it with a fresh publisher: a listener
    of the dead run's stream gets the rest of the text, not the whole of it again."""
    message_id = uuid.uuid4().hex

    def publish(client: redis.Redis) -> None:
        first_run = Publisher(client, conversation(), [message_id], coalesce_seconds=0)
        first_run.token("Half a")
        Publisher(client, conversation(), [message_id]).done(reply_for(message_id, "Half a reply"))

    texts = listen_while(f"{redis_server}/15", message_id, publish)
    assert texts == ["Half a", " reply", "Half a reply"]


def test_an_error_reply_goes_out_only_as_done(redis_server: str) -> None:
    """The dead-letter apology is no part of an answer: OpenAI clients get it as an error."""
    message_id = uuid.uuid4().hex

    def publish(client: redis.Redis) -> None:
        apology = reply_for(message_id, "Sorry, something went wrong.")
        Publisher(client, conversation(), [message_id]).done(
            apology.model_copy(update={"finish_reason": "error"}))

    texts = listen_while(f"{redis_server}/15", message_id, publish)
    assert texts == ["Sorry, something went wrong."]  # the done event alone
