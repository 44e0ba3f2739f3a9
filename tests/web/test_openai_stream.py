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
    reply_id_for,
)
from assistant.stream import StreamEvent
from assistant.tools import call_id
from integrations.web.openai_api import stream_chunks
from integrations.web.openai_stream import CallStream

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
    inbound = Inbound(message_id="m1", dedupe_id="d", conversation=CONVERSATION, user_id="u",
                      text="hi", history=(), options=options)
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


REPLY_ID = reply_id_for(["m1"])
CALL_ID = call_id(REPLY_ID)


def reply(**fields: Any) -> Reply:
    return Reply(message_id=REPLY_ID, conversation=CONVERSATION, in_reply_to=("m1",), **fields)


def deltas(chunks: list[Any]) -> list[Any]:
    return [c["choices"][0]["delta"] for c in chunks if c.get("choices")]


def call_deltas(chunks: list[Any]) -> list[Any]:
    return [d["tool_calls"][0] for d in deltas(chunks) if d.get("tool_calls")]


def test_a_call_streams_its_id_and_name_then_its_arguments_as_written() -> None:
    # Tokens as the model writes them: the call's own "}" comes in one piece with the
    # arguments' last one.
    pieces = ['{', '"name', '":"get_', 'weather",', ' "arguments"', ': ', '{"ci', 'ty": "O',
              'slo\\\\"', ', "days": [1, {"a": "}"}]', '}}', ' ']
    text = "".join(pieces)
    arguments = text[text.index(': {') + 2:text.rindex('}')]
    call = ToolCall(id=CALL_ID, name="get_weather", arguments=arguments)
    chunks = run(pieces, reply(text="", tool_calls=(call,), finish_reason="tool_calls"),
                 GenerationOptions(tools=(TOOL,)))
    sent = call_deltas(chunks)
    assert not any(d.get("content") for d in deltas(chunks))
    assert sent[0] == {"index": 0, "id": CALL_ID, "type": "function",
                       "function": {"name": "get_weather", "arguments": ""}}
    fragments = [d["function"]["arguments"] for d in sent[1:]]
    assert all(d == {"index": 0, "function": {"arguments": f}} for d, f in
               zip(sent[1:], fragments, strict=True))
    # Piece by piece as written (not one chunk at the end), and they join to the call's
    # arguments, nothing of the call's own closing brace or what follows.
    assert len(fragments) >= 4 and "".join(fragments) == arguments
    assert json.loads("".join(fragments)) == {"city": 'Oslo\\', "days": [1, {"a": "}"}]}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == [] and "usage" in chunks[-1]


def test_a_forced_call_in_llama3_format_streams_the_same_way() -> None:
    pieces = ['{"name": "get_weather", "param', 'eters": {"unit":', ' "celsius"}', '}']
    call = ToolCall(id=CALL_ID, name="get_weather", arguments='{"unit": "celsius"}')
    chunks = run(pieces, reply(text="", tool_calls=(call,), finish_reason="tool_calls"),
                 GenerationOptions(tools=(TOOL,), tool_choice="required"))
    sent = call_deltas(chunks)
    assert sent[0]["id"] == CALL_ID and sent[0]["function"]["name"] == "get_weather"
    assert "".join(d["function"]["arguments"] for d in sent[1:]) == call.arguments
    assert len(sent) == 3  # the head, then one fragment per piece that held arguments


def test_a_call_stored_before_the_stream_listened_comes_whole() -> None:
    call = ToolCall(id=CALL_ID, name="get_weather", arguments='{"city": "Oslo"}')
    chunks = run([], reply(text="", tool_calls=(call,), finish_reason="tool_calls"),
                 GenerationOptions(tools=(TOOL,)))
    assert call_deltas(chunks) == [
        {"index": 0, "id": CALL_ID, "type": "function",
         "function": {"name": "get_weather", "arguments": ""}},
        {"index": 0, "function": {"arguments": '{"city": "Oslo"}'}}]


def test_call_stream_waits_for_the_whole_name() -> None:
    stream = CallStream("call_x")
    assert stream.feed('{"name": "get_wea') == []
    assert stream.feed('ther", "arguments":') == []  # the value may still be preceded by spaces
    head, first = stream.feed(' {"a"')
    assert head["function"] == {"name": "get_weather", "arguments": ""}
    assert first["function"]["arguments"] == '{"a"'
    assert stream.feed(': 1}}')[0]["function"]["arguments"] == ": 1}"
    assert stream.complete and stream.feed(" ") == [] and stream.rest('{"a": 1}') == ""
    assert stream.rest('{"b": 1}') is None


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
