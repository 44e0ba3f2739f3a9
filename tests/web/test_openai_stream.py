"""How /v1 streams a reply's events: text, held-back calls, tool_calls deltas, failures."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

from assistant.envelope import (
    ConversationKey,
    GenerationOptions,
    Inbound,
    Reply,
    ToolCall,
    ToolSpec,
)
from assistant.stream import StreamEvent
from integrations.web.openai_api import stream_chunks

CONVERSATION = ConversationKey(platform="openai", channel="c1")
TOOL = ToolSpec(name="get_weather", parameters={"type": "object"})


class FakeListener:
    """Replays events as ``assistant.stream.Listener`` yields them."""

    def __init__(self, pieces: list[str], reply: Reply) -> None:
        self.pieces, self.reply, self.closed = pieces, reply, False

    async def events(self, timeout: float) -> AsyncIterator[StreamEvent]:
        for piece in self.pieces:
            yield StreamEvent("token", text=piece)
        yield StreamEvent("done", reply=self.reply)

    async def __aexit__(self, *exc_info: object) -> None:
        self.closed = True


def run(pieces: list[str], reply: Reply, options: GenerationOptions) -> list[Any]:
    inbound = Inbound(dedupe_id="d", conversation=CONVERSATION, user_id="u", text="hi",
                      history=(), options=options)
    # WebState.end_stream closes the listener (and gives a message up whose client left).
    state = SimpleNamespace(settings=SimpleNamespace(reply_timeout=5),
                            end_stream=lambda listener, client_gone: listener.__aexit__())
    listener = FakeListener(pieces, reply)

    async def collect() -> list[str]:
        return [c async for c in stream_chunks(state, listener, "m", 0, True,  # type: ignore[arg-type]
                                               inbound)]

    lines = asyncio.run(collect())
    assert listener.closed and lines[-1] == "data: [DONE]\n\n"
    return [json.loads(line[6:]) for line in lines[:-1]]


def reply(**fields: Any) -> Reply:
    return Reply(message_id="r1", conversation=CONVERSATION, in_reply_to=("m1",), **fields)


def deltas(chunks: list[Any]) -> list[Any]:
    return [c["choices"][0]["delta"] for c in chunks if c.get("choices")]


def test_a_call_is_hidden_then_sent_as_tool_call_deltas() -> None:
    call = ToolCall(id="call_1", name="get_weather", arguments='{"city": "Oslo"}')
    chunks = run(['{"name": "get_', 'weather", "arguments": {"city": "Oslo"}}'],
                 reply(text="", tool_calls=(call,), finish_reason="tool_calls"),
                 GenerationOptions(tools=(TOOL,)))
    sent = deltas(chunks)
    assert not any(d.get("content") for d in sent)
    assert sent[1] == {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                       "function": {"name": "get_weather", "arguments": ""}}]}
    assert sent[2] == {"tool_calls": [{"index": 0,
                                       "function": {"arguments": '{"city": "Oslo"}'}}]}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == [] and "usage" in chunks[-1]


def test_text_with_auto_tools_flows_once_it_is_not_a_call() -> None:
    chunks = run([" ", "It is", " sunny."], reply(text="It is sunny."),
                 GenerationOptions(tools=(TOOL,)))
    text = "".join(d.get("content") or "" for d in deltas(chunks))
    assert text == " It is sunny."
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


def test_a_failed_turn_streams_an_error_not_a_finish_reason() -> None:
    chunks = run([], reply(text="Sorry, that failed.", finish_reason="error"),
                 GenerationOptions())
    assert chunks[-1]["error"]["type"] == "server_error"
    assert not any(c["choices"][0]["finish_reason"] for c in chunks if c.get("choices"))


def test_a_reply_without_tokens_still_sends_its_text() -> None:
    """A refusal before the model, or a reply stored before the listener subscribed."""
    chunks = run([], reply(text="I can't help with that.", finish_reason="content_filter"),
                 GenerationOptions())
    assert "".join(d.get("content") or "" for d in deltas(chunks)) == "I can't help with that."
    assert chunks[-2]["choices"][0]["finish_reason"] == "content_filter"
