"""Attack: tie up the web server's thread pool with DELETEs of a busy conversation (item 5).

Each such DELETE used to wait up to the reply timeout inside a worker thread; about 40 of them
(anyio's default thread limit) stalled everything else that runs in threads (reading a
conversation, the admin panel, Redis calls). Now a DELETE waits asynchronously and answers 409
when the conversation stays busy. In-process on a fake Redis, with anyio's real thread limit.
"""

from __future__ import annotations

import asyncio
import time

import fakeredis
import httpx
from fastapi import FastAPI

from assistant import turns
from assistant.dispatch import Dispatcher
from assistant.envelope import ConversationKey
from assistant.settings import Settings
from integrations.web import api, errors
from integrations.web.deps import WebState
from tests.auxil.factories import inbound
from tests.auxil.fake_celery import FakeCelery, fake_backend

ATTACKERS = 80  # twice anyio's default thread limit


def make_app(server: fakeredis.FakeServer, reply_timeout: float) -> FastAPI:
    client = fakeredis.FakeRedis(server=server)
    celery = FakeCelery(client)
    state = WebState(settings=Settings(ASSISTANT_REPLY_TIMEOUT=str(reply_timeout)),
                     client=client, aclient=fakeredis.FakeAsyncRedis(server=server),
                     backend=fake_backend(celery),  # type: ignore[arg-type]
                     dispatcher=Dispatcher(client, fake_backend(celery)))  # type: ignore[arg-type]
    app = FastAPI()
    app.state.web = state
    errors.install(app)
    app.include_router(api.router)
    return app


def busy_conversation(server: fakeredis.FakeServer, name: str) -> turns.ConversationLock:
    """A conversation with a message in line and a turn in progress (its lock held)."""
    client = fakeredis.FakeRedis(server=server)
    message = inbound("hello", channel=name)
    turns.submit(client, message)
    lock = turns.ConversationLock(client, ConversationKey(platform="web", channel=name))
    assert lock.acquire()
    return lock


def test_waiting_deletes_hold_no_thread_and_finish_when_the_turn_ends() -> None:
    server = fakeredis.FakeServer()
    app = make_app(server, reply_timeout=30)
    lock = busy_conversation(server, "busy")
    fakeredis.FakeRedis(server=server).rpush(  # another conversation, to read meanwhile
        turns.pending_key(ConversationKey(platform="web", channel="other")),
        inbound("hi", channel="other").model_dump_json())

    async def attack() -> tuple[float, list[int]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            deletes = [asyncio.create_task(http.delete("/api/conversations/busy"))
                       for _ in range(ATTACKERS)]
            await asyncio.sleep(0.5)  # every DELETE is waiting now
            started = time.monotonic()
            read = await http.get("/api/conversations/other")  # runs in a thread
            took = time.monotonic() - started
            assert read.status_code == 200
            assert not any(task.done() for task in deletes)
            await asyncio.to_thread(lock.release)  # the turn ends
            statuses = [response.status_code for response in await asyncio.gather(*deletes)]
        return took, statuses

    took, statuses = asyncio.run(attack())
    assert took < 2.0  # with the thread pool taken, this waited for the reply timeout
    assert statuses.count(204) == 1 and statuses.count(404) == ATTACKERS - 1


def test_a_conversation_that_stays_busy_gets_409() -> None:
    server = fakeredis.FakeServer()
    app = make_app(server, reply_timeout=0.5)
    lock = busy_conversation(server, "stuck")

    async def delete() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return await http.delete("/api/conversations/stuck")

    response = asyncio.run(delete())
    lock.release()
    assert response.status_code == 409
    assert response.json()["error"]["type"] == "conflict"
    client = fakeredis.FakeRedis(server=server)
    assert client.llen(turns.pending_key(ConversationKey(platform="web", channel="stuck"))) == 1
