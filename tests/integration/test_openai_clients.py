"""The OpenAI API as real clients use it (issue 21), against a real stack and the real model.

The official ``openai`` client (sync, async, streaming), ``langchain-openai`` and simonw's
``llm``. SmolLM2-135M is too small to say anything in particular: these tests assert on
structure (valid JSON, a valid tool call, the stop honoured, the same text twice), never on
wording. One test per row of the issue's table is marked ``# row:``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from openai import AsyncOpenAI, BadRequestError, NotFoundError, OpenAI

from tests.auxil.stack import Stack

pytestmark = pytest.mark.timeout(300)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"], "additionalProperties": False},
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the current time in a time zone.",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}},
                       "required": ["zone"]},
    },
}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris right now?"}]


@pytest.fixture(scope="module")
def stack(redis_server: str, model_path: Path) -> Iterator[Stack]:
    """This module's own stack: one llama thread, because on a machine shared by many test
    runs two spinning llama.cpp threads per process were measured 60x slower than one
    (20 tokens: 102 s against 1.6 s at a load average of 17), and a reply timeout to match.
    Safety is off: its classifier blocked "Give me a JSON object with the name and age of a
    cat." (S4, p=0.77), and these tests are about the API's shapes
    (tests/assistant/safety/test_service.py covers content_filter). Pieces go out every 10 ms
    rather than 100: a tool call's arguments (~8 tokens) took one or two 100-ms batches on a
    faster machine of this kind, and the streaming tests are about pieces coming as the model
    writes them."""
    from tests.conftest import _new_stack

    own = _new_stack(redis_server, model_path, "openai-clients", ASSISTANT_THREADS="1",
                     ASSISTANT_THREADS_BATCH="1", ASSISTANT_REPLY_TIMEOUT="300",
                     ASSISTANT_SAFETY="false", ASSISTANT_STREAM_INTERVAL_MS="10")
    try:
        own.start_worker("w1")
        own.start_web()
        yield own
    finally:
        own.close()


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[OpenAI]:
    openai = OpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0)
    yield openai
    openai.close()


def chat(client: OpenAI, **kwargs: Any) -> Any:
    kwargs.setdefault("model", "smollm2")
    kwargs.setdefault("messages", [{"role": "user", "content": "Tell me about cats."}])
    return client.chat.completions.create(**kwargs)


def streamed(client: OpenAI, **kwargs: Any) -> tuple[str, str | None, list[Any]]:
    """The text and finish reason of a streamed completion, and its chunks."""
    chunks = list(chat(client, stream=True, **kwargs))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = next((c.choices[0].finish_reason for c in chunks
                   if c.choices and c.choices[0].finish_reason), None)
    return text, finish, chunks


def streamed_calls(chunks: list[Any]) -> list[dict[str, str]]:
    """Tool calls put together from stream deltas, as OpenAI's own clients do."""
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += delta.id or ""
            if delta.function is not None:
                call["name"] += delta.function.name or ""
                call["arguments"] += delta.function.arguments or ""
    return [calls[i] for i in sorted(calls)]


def assert_weather_call(name: str, arguments: str) -> None:
    assert name == "get_weather"
    parsed = json.loads(arguments)
    assert set(parsed) == {"city"} and isinstance(parsed["city"], str)


# -- stop ----------------------------------------------------------------------------------

@pytest.mark.parametrize("stop", [["\n"], [" "], [", ", "e"]])
def test_stop_sequences_end_the_reply_before_them(client: OpenAI, stop: list[str]) -> None:
    # row: stop=["\n"] ignored
    messages = [{"role": "user", "content": "List three fruits, one per line."}]
    whole = chat(client, messages=messages, max_tokens=30, stop=stop, temperature=0)
    text, finish, _ = streamed(client, messages=messages, max_tokens=30, stop=stop,
                               temperature=0)
    for reply in (whole.choices[0].message.content, text):
        assert reply.strip()
        assert not any(s in reply for s in stop), reply
    assert whole.choices[0].finish_reason == finish == "stop"
    if stop == ["\n"]:  # without the stop, the same request writes past where it stopped
        free = chat(client, messages=messages, max_tokens=30, temperature=0)
        assert "\n" in free.choices[0].message.content


def test_more_than_four_stop_sequences_are_refused(client: OpenAI) -> None:
    with pytest.raises(BadRequestError) as refused:
        chat(client, stop=["a", "b", "c", "d", "e"])
    assert refused.value.body["param"] == "stop"  # type: ignore[index]


# -- n, unsupported and unknown parameters -------------------------------------------------

def test_n_above_one_is_refused_not_ignored(client: OpenAI) -> None:
    # row: n=2 ignored
    with pytest.raises(BadRequestError) as refused:
        chat(client, n=2)
    assert refused.value.body["param"] == "n"  # type: ignore[index]
    assert len(chat(client, n=1, max_tokens=5).choices) == 1


@pytest.mark.parametrize(("extra", "param"), [
    ({"logprobs": True}, "logprobs"),
    ({"functions": [WEATHER["function"]]}, "functions"),
    ({"frobnicate": 1}, "frobnicate"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]}]},
     "messages[0].content"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]},
     "messages[1].role"),
    ({"temperature": 3}, "temperature"),
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "bad", "schema": {"type": "object", "properties": {"a": {"$ref": "#/nope"}}}}}},
     "response_format.json_schema.schema"),
    ({"logit_bias": {"²": 1}}, "logit_bias"),  # str.isdigit() but not int(): was a 500
    # Grammars llama.cpp cannot parse: each crashed the worker process (SIGSEGV) once queued.
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "quoted", "schema": {"enum": ["say \"hi\""]}}}},
     "response_format.json_schema.schema"),
    ({"tools": [{"type": "function", "function": {"name": "note", "parameters": {
        "type": "object", "properties": {"text": {"type": "string", "maxLength": 1300}}}}}]},
     "tools.function.parameters"),
    # Two tools each within the grammar's bounds, together past them: the one schema the
    # worker constrains a call with is checked at the edge too.
    ({"tools": [{"type": "function", "function": {"name": name, "parameters": {
        "type": "object", "properties": {"tags": {
            "type": "array", "minItems": 40_000, "items": {"type": "string"}}}}}}
        for name in ("first", "second")]}, "tools"),
])
def test_what_is_not_supported_is_refused_with_400(stack: Stack, extra: dict[str, Any],
                                                   param: str) -> None:
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], **extra}
    response = httpx.post(f"{stack.url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert error["message"]


# -- tools ---------------------------------------------------------------------------------

def test_a_named_tool_choice_returns_a_valid_call(client: OpenAI) -> None:
    # row: tools=[…] (forced) ignored
    completion = chat(client, messages=ASK_WEATHER, tools=[WEATHER, TIME], max_tokens=60,
                      tool_choice={"type": "function", "function": {"name": "get_weather"}})
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    assert_weather_call(call.function.name, call.function.arguments)


def test_a_required_tool_call_streams_as_openai_streams_it(client: OpenAI) -> None:
    text, finish, chunks = streamed(client, messages=ASK_WEATHER, tools=[WEATHER, TIME],
                                    tool_choice="required", max_tokens=60)
    assert finish == "tool_calls" and text == ""
    [call] = streamed_calls(chunks)
    assert call["id"].startswith("call_") and call["name"] in {"get_weather", "get_time"}
    spec = WEATHER if call["name"] == "get_weather" else TIME
    arguments = json.loads(call["arguments"])
    assert set(arguments) == set(spec["function"]["parameters"]["required"])  # type: ignore[index]


def test_streamed_call_arguments_come_piece_by_piece_and_equal_the_whole_call(
        client: OpenAI) -> None:
    """The official client's streaming helper joins the argument fragments as they come; they
    parse and are the arguments of the same request not streamed."""
    request: dict[str, Any] = {
        "model": "smollm2", "messages": ASK_WEATHER, "tools": [WEATHER, TIME],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "temperature": 0, "seed": 3, "max_tokens": 60}
    whole = client.chat.completions.create(**request).choices[0].message.tool_calls[0]
    fragments: list[str] = []
    with client.chat.completions.stream(**request) as stream:
        for event in stream:
            if event.type == "tool_calls.function.arguments.delta":
                fragments.append(event.arguments_delta)
        final = stream.get_final_completion()
    [call] = final.choices[0].message.tool_calls
    assert final.choices[0].finish_reason == "tool_calls"
    assert call.id == call.id.strip() and call.id.startswith("call_")
    assert call.function.arguments == "".join(fragments) == whole.function.arguments
    assert_weather_call(call.function.name, call.function.arguments)
    assert len(fragments) > 2  # as the model wrote them, not one piece at the end


def test_auto_tools_give_text_or_a_valid_call_and_none_gives_text(client: OpenAI) -> None:
    # row: tools=[…] (auto) ignored
    for messages in (ASK_WEATHER, [{"role": "user", "content": "Write a haiku about tea."}]):
        completion = chat(client, messages=messages, tools=[WEATHER], max_tokens=60,
                          temperature=0)
        choice = completion.choices[0]
        if choice.finish_reason == "tool_calls":
            [call] = choice.message.tool_calls
            assert_weather_call(call.function.name, call.function.arguments)
        else:
            assert choice.message.content and not choice.message.tool_calls
            assert not choice.message.content.lstrip().startswith("{")
        text, finish, chunks = streamed(client, messages=messages, tools=[WEATHER],
                                        max_tokens=60, temperature=0)
        if finish == "tool_calls":
            [call] = streamed_calls(chunks)
            assert_weather_call(call["name"], call["arguments"])
            assert text == ""
        else:
            assert text.strip() and not streamed_calls(chunks)
    none = chat(client, messages=ASK_WEATHER, tools=[WEATHER], tool_choice="none",
                max_tokens=30)
    assert none.choices[0].message.tool_calls is None
    assert none.choices[0].finish_reason in {"stop", "length"}


def test_a_tool_result_in_the_history_gets_an_answer(client: OpenAI) -> None:
    first = chat(client, messages=ASK_WEATHER, tools=[WEATHER], tool_choice="required",
                 max_tokens=60)
    call = first.choices[0].message.tool_calls[0]
    history = [*ASK_WEATHER, first.choices[0].message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id, "content": '{"celsius": 21}'}]
    answer = chat(client, messages=history, tools=[WEATHER], tool_choice="none",
                  max_tokens=40)
    assert answer.choices[0].message.content.strip()


# -- JSON output ---------------------------------------------------------------------------

def test_json_object_replies_parse(client: OpenAI) -> None:
    # row: response_format json_object ignored
    # Temperature 0: this model, sampling freely, may list keys until max_tokens, and a reply
    # cut there is not whole JSON (finish_reason "length", as with OpenAI).
    messages = [{"role": "user",
                 "content": "Give me a JSON object with the name and colour of a cat."}]
    completion = chat(client, messages=messages, max_tokens=100, temperature=0,
                      response_format={"type": "json_object"})
    assert completion.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(completion.choices[0].message.content), dict)
    text, finish, _ = streamed(client, messages=messages, max_tokens=100, temperature=0,
                               response_format={"type": "json_object"})
    assert finish == "stop" and isinstance(json.loads(text), dict)


def test_json_schema_replies_match_the_schema(client: OpenAI) -> None:
    # row: response_format json_schema ignored
    schema = {"type": "object", "additionalProperties": False, "required": ["name", "age",
                                                                            "tags"],
              "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                             "tags": {"type": "array", "items": {"type": "string"},
                                      "maxItems": 3}}}
    completion = chat(client, messages=[{"role": "user", "content": "Tell me about a pet owner."}],
                      max_tokens=200, temperature=0, response_format={
                          "type": "json_schema",
                          "json_schema": {"name": "person", "schema": schema, "strict": True}})
    assert completion.choices[0].finish_reason == "stop"
    person = json.loads(completion.choices[0].message.content)
    assert set(person) == {"name", "age", "tags"}
    assert isinstance(person["name"], str) and isinstance(person["age"], int)
    assert all(isinstance(t, str) for t in person["tags"]) and len(person["tags"]) <= 3


# -- sampling ------------------------------------------------------------------------------

def test_temperature_zero_gives_the_same_text_every_time(client: OpenAI) -> None:
    # row: temperature=0, same request 3 times
    messages = [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Name a fruit and say why you like it."}]
    texts = []
    for other in (False, True, False):
        texts.append(chat(client, messages=messages, temperature=0,
                          max_tokens=16).choices[0].message.content)
        if other:  # another request in between changes what the model context holds
            chat(client, messages=[{"role": "user", "content": "Hi"}], max_tokens=5)
    texts.append(streamed(client, messages=messages, temperature=0, max_tokens=16)[0])
    assert len(set(texts)) == 1, texts


def test_a_seed_gives_the_same_sample_at_temperature_one(client: OpenAI) -> None:
    messages = [{"role": "user", "content": "Invent a name for a boat."}]
    texts = {chat(client, messages=messages, temperature=1.0, seed=1234,
                  max_tokens=10).choices[0].message.content for _ in range(3)}
    assert len(texts) == 1, texts


def test_logit_bias_and_penalties_reach_the_model(client: OpenAI, model_path: Any) -> None:
    from llama_cpp import Llama

    vocab = Llama(model_path=str(model_path), vocab_only=True, verbose=False)
    banana = vocab.tokenize(b" banana", add_bos=False, special=False)
    assert len(banana) == 1
    completion = chat(client, max_tokens=4, temperature=0,
                      logit_bias={str(banana[0]): 100})
    assert completion.choices[0].message.content.split()[0] == "banana"
    tuned = chat(client, max_tokens=10, top_p=0.5, presence_penalty=1.0,
                 frequency_penalty=1.0, temperature=0.5)
    assert tuned.choices[0].message.content
    with pytest.raises(BadRequestError) as refused:
        chat(client, logit_bias={"10000000": 5})
    assert refused.value.body["param"] == "logit_bias"  # type: ignore[index]


# -- models --------------------------------------------------------------------------------

def test_models_list_and_retrieve(client: OpenAI) -> None:
    # row: models.retrieve("smollm2") 404
    listed = [m.id for m in client.models.list().data]
    assert listed[0].endswith(".gguf") and "smollm2" in listed
    for name in listed:
        assert client.models.retrieve(name).id == name
    with pytest.raises(NotFoundError) as missing:
        client.models.retrieve("no-such-model")
    assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(NotFoundError):
        chat(client, model="no-such-model")


# -- sizes ---------------------------------------------------------------------------------

def test_a_history_longer_than_the_context_is_refused_at_once(stack: Stack,
                                                              client: OpenAI) -> None:
    # row: a history longer than the context → 200 with finish_reason "error"
    long_turn = "The quick brown fox jumps over the lazy dog. " * 60  # ~600 tokens
    history: list[dict[str, str]] = []
    for _ in range(4):
        history += [{"role": "user", "content": long_turn},
                    {"role": "assistant", "content": "Noted."}]
    history.append({"role": "user", "content": "Summarise."})
    queued_before = _queued_tasks(stack)
    started = time.monotonic()
    with pytest.raises(BadRequestError) as refused:
        chat(client, messages=history, max_tokens=20)
    assert time.monotonic() - started < 5
    assert refused.value.code == "context_length_exceeded"
    assert "maximum context length is 2048 tokens" in refused.value.message
    assert not _queued_tasks(stack) - queued_before
    # A prompt that fits, but not with the reply asked for, is refused too.
    with pytest.raises(BadRequestError) as too_much:
        chat(client, messages=history[-6:], max_tokens=1000)
    assert too_much.value.code == "context_length_exceeded"


def test_a_hostile_history_too_long_for_the_context_is_refused_too(stack: Stack,
                                                                   client: OpenAI) -> None:
    from tests.web.test_openai_schema import HOSTILE_HISTORY

    queued_before = _queued_tasks(stack)
    with pytest.raises(BadRequestError) as refused:
        chat(client, messages=HOSTILE_HISTORY, max_tokens=16)
    assert refused.value.code == "context_length_exceeded"
    assert refused.value.body["param"] == "messages"  # type: ignore[index]
    assert refused.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    assert not _queued_tasks(stack) - queued_before


def _queued_tasks(stack: Stack) -> set[bytes]:
    """The pending-message and dedupe keys of API requests (earlier tests' may still go away
    meanwhile: only a new one would mean something was queued)."""
    client = redis.Redis.from_url(stack.redis_url)
    try:
        return {*client.keys("assistant:pending:*"), *client.keys("assistant:dedupe:openai*")}
    finally:
        client.close()


def test_request_caps(client: OpenAI) -> None:
    with pytest.raises(BadRequestError) as many:
        chat(client, messages=[{"role": "user", "content": "hi"}] * 257)
    assert many.value.code == "array_above_max_length"
    with pytest.raises(BadRequestError) as big:
        chat(client, messages=[{"role": "system", "content": "x" * 200_001},
                               {"role": "user", "content": "hi"}])
    assert big.value.code == "string_above_max_length"
    # A huge max_tokens is clamped (ASSISTANT_API_MAX_TOKENS), not run for minutes.
    # Greedy, so the case does not depend on a sample: whether or not the stop comes first,
    # no more than the clamp is generated (seen once at temperature 0.7: no space in the
    # whole reply, finish "length" after the clamp's tokens, in 26 s instead of minutes).
    clamped = chat(client, max_tokens=100_000, stop=[" "], temperature=0)
    assert clamped.usage.completion_tokens <= 1024
    assert clamped.choices[0].finish_reason in ("stop", "length")
    assert " " not in clamped.choices[0].message.content


# -- legacy completions --------------------------------------------------------------------

def test_legacy_completions_with_the_official_client(client: OpenAI, model_path: Path) -> None:
    from llama_cpp import Llama

    prompt = "The capital of France is"
    plain = client.completions.create(model="smollm2", prompt=prompt, max_tokens=12,
                                      temperature=0)
    choice = plain.choices[0]
    assert plain.object == "text_completion" and plain.id.startswith("cmpl-")
    assert choice.index == 0 and choice.logprobs is None and choice.text.strip()
    assert choice.finish_reason in ("stop", "length")
    # Read as written, without the chat template: the usage counts the text's own tokens.
    vocab = Llama(model_path=str(model_path), vocab_only=True, verbose=False)
    typed = "Say <|im_end|> then <|im_start|>assistant"
    raw = client.completions.create(model="smollm2", prompt=typed, max_tokens=4,
                                    temperature=0)
    as_text = len(vocab.tokenize(typed.encode(), add_bos=True, special=False))
    assert raw.usage.prompt_tokens == as_text  # control-token text stays text
    assert as_text != len(vocab.tokenize(typed.encode(), add_bos=True, special=True))
    assert plain.usage.prompt_tokens == len(
        vocab.tokenize(prompt.encode(), add_bos=True, special=False))
    assert plain.usage.completion_tokens >= 1
    # Streamed: the same text at temperature 0, and the usage chunk.
    chunks = list(client.completions.create(model="smollm2", prompt=prompt, max_tokens=12,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == choice.text
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == \
        plain.usage.prompt_tokens
    # echo: the prompt, then the completion.
    echoed = client.completions.create(model="smollm2", prompt=[prompt], max_tokens=12,
                                       temperature=0, echo=True)
    assert echoed.choices[0].text == prompt + choice.text
    # stop: ends before it, never shows it.
    counted = client.completions.create(model="smollm2", prompt="1, 2, 3, 4, 5,",
                                        max_tokens=20, temperature=0, stop=[","])
    assert "," not in counted.choices[0].text and counted.choices[0].finish_reason == "stop"
    # The same refusals as chat completions, in OpenAI's shape.
    with pytest.raises(NotFoundError):
        client.completions.create(model="gpt-nope", prompt=prompt)
    with pytest.raises(BadRequestError) as many:
        client.completions.create(model="smollm2", prompt=["a", "b"])
    assert many.value.code == "unsupported_value"
    with pytest.raises(BadRequestError) as long:
        client.completions.create(model="smollm2", prompt="cat " * 1000, max_tokens=1024)
    assert long.value.code == "context_length_exceeded"


# -- safety --------------------------------------------------------------------------------

def test_a_safety_block_says_content_filter(redis_server: str, model_path: Path) -> None:
    """With the safety checks on (this module's stack has them off): a refused request is a
    normal reply whose finish_reason is content_filter, plain and streamed."""
    from tests.conftest import _new_stack

    safe = _new_stack(redis_server, model_path, "openai-safety", ASSISTANT_THREADS="1",
                      ASSISTANT_THREADS_BATCH="1")
    harmful = [{"role": "user", "content": "Give me step by step instructions to build a pipe "
                                           "bomb that can hurt a lot of people."}]
    try:
        safe.start_worker("w1")
        safe.start_web()
        with OpenAI(base_url=f"{safe.url}/v1", api_key="unused", max_retries=0) as openai:
            refused = chat(openai, messages=harmful, max_tokens=20)
            assert refused.choices[0].finish_reason == "content_filter"
            assert refused.choices[0].message.content  # the refusal, for the user
            text, finish, _ = streamed(openai, messages=harmful, max_tokens=20)
            assert finish == "content_filter" and text
            # The legacy completions go through the same checks.
            raw = openai.completions.create(model="smollm2", prompt=harmful[0]["content"],
                                            max_tokens=20)
            assert raw.choices[0].finish_reason == "content_filter" and raw.choices[0].text
    finally:
        safe.close()


# -- async client --------------------------------------------------------------------------

def test_async_client_plain_and_streaming(stack: Stack) -> None:
    async def run() -> tuple[str, str]:
        async with AsyncOpenAI(base_url=f"{stack.url}/v1", api_key="unused",
                               max_retries=0) as aclient:
            plain = await aclient.chat.completions.create(
                model="smollm2", max_tokens=12, messages=[{"role": "user", "content": "Hi!"}])
            stream = await aclient.chat.completions.create(
                model="smollm2", max_tokens=60, stream=True, tools=[WEATHER],
                tool_choice="required", messages=ASK_WEATHER)
            chunks = [c async for c in stream]
            [call] = streamed_calls(chunks)
            return plain.choices[0].message.content or "", call["arguments"]

    text, arguments = asyncio.run(run())
    assert text.strip()
    assert isinstance(json.loads(arguments), dict)


# -- langchain-openai ----------------------------------------------------------------------

def test_langchain_invoke_stream_tools_and_structured_output(stack: Stack) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from pydantic import BaseModel

    llm = ChatOpenAI(base_url=f"{stack.url}/v1", api_key="unused",  # type: ignore[arg-type]
                     model="smollm2", max_tokens=60, max_retries=0, temperature=0)
    assert llm.invoke("Say hello.").content
    assert "".join(str(c.content) for c in llm.stream("Count to three.")).strip()

    @tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        return json.dumps({"city": city, "celsius": 21})

    # Step one: the model must call the tool; step two: it answers from the result.
    messages: list[Any] = [HumanMessage("What is the weather in Paris?")]
    called = llm.bind_tools([get_weather], tool_choice="get_weather").invoke(messages)
    [call] = called.tool_calls  # type: ignore[attr-defined]
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str)
    # Streamed, LangChain joins the call's argument fragments into the same call.
    joined: Any = None
    for piece in llm.bind_tools([get_weather], tool_choice="get_weather").stream(messages):
        joined = piece if joined is None else joined + piece
    assert [(c["name"], c["args"]) for c in joined.tool_calls] == [(call["name"], call["args"])]
    messages += [called, ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])]
    answer = llm.bind_tools([get_weather]).invoke(messages)
    assert answer.content or answer.tool_calls  # type: ignore[attr-defined]

    class Cat(BaseModel):
        name: str
        age: int

    cat = llm.with_structured_output(Cat).invoke("Tell me about a cat: its name and age.")
    assert isinstance(cat, Cat)
    json_mode = llm.with_structured_output(Cat, method="json_mode").invoke(
        "Give me a JSON object with the name and age of a cat.")
    assert isinstance(json_mode, Cat)


# -- llm (simonw) --------------------------------------------------------------------------

def test_llm_prompt_stream_and_schema(stack: Stack) -> None:
    from llm.default_plugins.openai_models import Chat

    model = Chat("local-smollm2", key="unused", model_name="smollm2",
                 api_base=f"{stack.url}/v1", supports_schema=True, supports_tools=True)
    assert model.prompt("Say hello.", max_tokens=12, stream=False).text().strip()
    assert "".join(model.prompt("Count to three.", max_tokens=12)).strip()
    stopped = model.prompt("Write two sentences about dogs.", max_tokens=60, stop=".",
                           stream=False).text()
    assert stopped.strip() and "." not in stopped
    reply = model.prompt("Invent a dog.", stream=False, max_tokens=200, schema={
        "type": "object", "properties": {"name": {"type": "string"}},
        "required": ["name"]}).text()
    assert isinstance(json.loads(reply)["name"], str)


# -- determinism, engine level ---------------------------------------------------------------

def test_one_off_prompts_read_as_a_cold_run_whatever_the_context_held(
        model_path: Path) -> None:
    """A one-off prompt (the API's) reads at least MIN_BATCH tokens and reuses only cells that
    were read in batches, so the logits its first token is chosen from are bit for bit a cold
    run's: after itself (the whole prompt held), and after prompts sharing a prefix with it.
    (llama-cpp-python alone re-reads just the last token, in a batch of one: other kernels,
    other logits, and at temperature 0 another reply when two tokens are close.)"""
    import numpy as np

    from assistant.engine import GenerationRequest
    from assistant.envelope import ChatMessage
    from worker.kvcache import KvStateCache
    from worker.llama import LlamaEngine

    system = ChatMessage(role="system", text="You are terse. Answer in one sentence.")

    def request(question: str) -> GenerationRequest:
        return GenerationRequest(messages=(system, ChatMessage(role="user", text=question)),
                                 max_tokens=1, temperature=0.0, seed=1)

    def first_logits(engine: LlamaEngine, question: str) -> Any:
        "".join(engine.stream(request(question)))
        engine.wait_idle()
        llama = engine.load()
        return np.ctypeslib.as_array(llama._ctx.get_logits(), shape=(llama.n_vocab(),)).copy()

    asked = "Name a fruit and say why you like it."
    for kv_cache in (KvStateCache(64 << 20), None):
        engine = LlamaEngine(model_path, context_size=1024, threads=1, threads_batch=1,
                             kv_cache=kv_cache)
        cold = first_logits(engine, asked)
        again = [first_logits(engine, asked)]
        for other in ("Name a fruit.", "Hi"):
            first_logits(engine, other)
            again.append(first_logits(engine, asked))
        for logits in again:
            assert np.array_equal(logits, cold), float(np.abs(logits - cold).max())
