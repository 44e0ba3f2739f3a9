"""The web edge gives a message up only when the last client waiting for it has gone."""

from __future__ import annotations

import asyncio

import fakeredis

from assistant.cancel import cancel_key
from assistant.envelope import ConversationKey
from assistant.stream import Listener
from integrations.web.deps import WebState

CONVERSATION = ConversationKey(platform="web", channel="c1")


def test_a_retry_that_hangs_up_does_not_cancel_the_first_clients_reply() -> None:
    async def scenario() -> tuple[bool, bool, bool]:
        aclient = fakeredis.FakeAsyncRedis()
        state = WebState(settings=None, client=None, aclient=aclient,  # type: ignore[arg-type]
                         backend=None, dispatcher=None)  # type: ignore[arg-type]
        first = Listener(aclient, CONVERSATION, "m1")
        retry = Listener(aclient, CONVERSATION, "m1")
        for listener in (first, retry):
            await state._count_waiting(listener, +1)
        key = cancel_key(CONVERSATION, "m1")
        await state.end_stream(retry, client_gone=True)
        after_retry = bool(await aclient.exists(key))
        await state.end_stream(first, client_gone=True)
        after_both = bool(await aclient.exists(key))
        other = Listener(aclient, CONVERSATION, "m2")
        await state._count_waiting(other, +1)
        await state.end_stream(other, client_gone=False)  # got its reply
        answered = bool(await aclient.exists(cancel_key(CONVERSATION, "m2")))
        return after_retry, after_both, answered

    after_retry, after_both, answered = asyncio.run(scenario())
    assert not after_retry  # the first client still waits
    assert after_both  # the last one went: the worker may stop
    assert not answered
