"""OpenAI requests into envelopes, tool calls out of replies: the pure parts of issue 21."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from assistant.envelope import ChatMessage, GenerationOptions, ToolSpec
from assistant.errors import ContextLengthExceeded, InvalidParameter
from assistant.pipeline import TurnConfig, run_turn, stateless_messages
from assistant.prompts import PromptLibrary
from assistant.tools import call_schema, parse_call
from integrations.web.openai_schema import CompletionRequest, to_inbound
from tests.auxil.fake_engine import FakeEngine
from worker.grammar import MAX_GROUP_DEPTH, SchemaError, gbnf, group_depth
from worker.prompt_size import PromptCounter

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


def request(**fields: Any) -> CompletionRequest:
    fields.setdefault("messages", [{"role": "user", "content": "hi"}])
    return CompletionRequest.model_validate({"model": "smollm2", **fields})


def inbound_of(prompts: PromptLibrary, **fields: Any) -> Any:
    return to_inbound(request(**fields), 4000, None)


def test_parameters_reach_the_envelope(prompts: PromptLibrary) -> None:
    inbound = inbound_of(prompts, stop="\n", seed=7, top_p=0.5, logit_bias={"42": -100},
                         presence_penalty=1, frequency_penalty=-1, temperature=0,
                         response_format={"type": "json_object"})
    options = inbound.options
    assert options.stop == ("\n",) and options.seed == 7 and options.top_p == 0.5
    assert options.logit_bias == {42: -100} and options.temperature == 0
    assert (options.presence_penalty, options.frequency_penalty) == (1, -1)
    assert options.json_schema == {"type": "object"}
    assert json.loads(inbound.model_dump_json())["options"]["logit_bias"] == {"42": -100.0}


@pytest.mark.parametrize(("fields", "param"), [
    ({"n": 3}, "n"),
    ({"logprobs": True}, "logprobs"),
    ({"unknown_thing": 1}, "unknown_thing"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stop": [""]}, "stop"),
    ({"logit_bias": {"a": 1}}, "logit_bias"),
    ({"logit_bias": {"1": 101}}, "logit_bias"),
    ({"logit_bias": {"²": 1}}, "logit_bias"),  # a digit to str.isdigit(), not to int()
    ({"logit_bias": {"9" * 5000: 1}}, "logit_bias"),  # past int()'s digit limit
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
     "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [WEATHER, WEATHER]}, "tools"),
    ({"tools": [WEATHER], "response_format": {"type": "json_object"}}, "response_format"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]},
     "messages[1].role"),
    ({"messages": [{"role": "user", "content": "  "}]}, "messages[0].content"),
])
def test_refused_parameters_name_themselves(prompts: PromptLibrary, fields: dict[str, Any],
                                            param: str) -> None:
    with pytest.raises(InvalidParameter) as refused:
        inbound_of(prompts, **fields)
    assert refused.value.param == param


def test_logprobs_false_and_bookkeeping_fields_are_accepted(prompts: PromptLibrary) -> None:
    inbound_of(prompts, logprobs=False, store=False, metadata={"a": "b"}, n=1,
               parallel_tool_calls=True, user="someone")


TOOL_HISTORY = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": '{"celsius": 21}'}]


def test_tool_turns_keep_their_structure_in_the_envelope(prompts: PromptLibrary) -> None:
    inbound = inbound_of(prompts, tools=[WEATHER], messages=TOOL_HISTORY)
    assert [m.role for m in inbound.history] == ["user", "assistant"]
    assert [(c.id, c.name, c.arguments) for c in inbound.history[1].tool_calls] == [
        ("call_1", "get_weather", '{"city": "Paris"}')]
    assert inbound.text == '{"celsius": 21}' and inbound.tool_name == "get_weather"


def test_tool_turns_become_text_for_a_template_without_tools(prompts: PromptLibrary) -> None:
    inbound = inbound_of(prompts, tools=[WEATHER], messages=TOOL_HISTORY)
    messages = stateless_messages([inbound], prompts, TurnConfig())
    assert [m.role for m in messages] == ["system", "user", "assistant", "user"]
    assert json.loads(messages[2].text) == {"name": "get_weather",
                                            "arguments": {"city": "Paris"}}
    assert not messages[2].tool_calls and not messages[0].tools
    assert "get_weather" in messages[3].text and '{"celsius": 21}' in messages[3].text
    assert "get_weather" in messages[0].text  # described in the system prompt


def test_tool_turns_stay_structured_for_a_template_with_tools(prompts: PromptLibrary) -> None:
    inbound = inbound_of(prompts, tools=[WEATHER], messages=TOOL_HISTORY)
    messages = stateless_messages([inbound], prompts, TurnConfig(), "llama3.1")
    assert [m.role for m in messages] == ["system", "user", "assistant", "tool"]
    assert [t.name for t in messages[0].tools] == ["get_weather"]
    assert "get_weather" not in messages[0].text  # the template renders the tools
    assert messages[2].tool_calls[0].name == "get_weather"
    assert messages[3].text == '{"celsius": 21}'
    # tool_choice "none": no tools offered, the history's calls still rendered as calls.
    none = inbound_of(prompts, tools=[WEATHER], tool_choice="none", messages=TOOL_HISTORY)
    shown = stateless_messages([none], prompts, TurnConfig(), "llama3.1")
    assert not shown[0].tools and shown[2].tool_calls


def test_tool_instructions_join_the_system_prompt(prompts: PromptLibrary) -> None:
    inbound = inbound_of(prompts, tools=[WEATHER], tool_choice="required", messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}])
    messages = stateless_messages([inbound], prompts, TurnConfig())
    # The operator's persona first, the client's system message added (issue 15, item 2).
    assert messages[0].role == "system" and "\n\nBe brief." in messages[0].text
    assert not messages[0].text.startswith("Be brief.")
    assert "get_weather" in messages[0].text and '"city"' in messages[0].text


def test_call_schema_and_parse_call() -> None:
    tool = ToolSpec(name="get_weather", parameters={"type": "object"})
    other = ToolSpec(name="get_time")
    auto = GenerationOptions(tools=(tool, other))
    assert call_schema(GenerationOptions(tools=(tool,), tool_choice="none")) is None
    assert "anyOf" in (call_schema(auto) or {})
    named = call_schema(GenerationOptions(tools=(tool, other), tool_choice="get_time")) or {}
    assert named["properties"]["name"] == {"const": "get_time"}
    call = parse_call('{"name": "get_weather", "arguments": {"city": "Oslo"}}', auto, "c1")
    assert call is not None and call.id == "c1" and json.loads(call.arguments) == {
        "city": "Oslo"}
    for text in ("It is sunny.", '{"name": "nope", "arguments": {}}', '{"name": "get_'):
        assert parse_call(text, auto) is None


def test_a_call_becomes_the_replys_tool_calls(prompts: PromptLibrary) -> None:
    engine = FakeEngine(answers=['{"name": "get_weather", "arguments": {"city": "Rome"}}'])
    inbound = inbound_of(prompts, tools=[WEATHER], tool_choice="required")
    reply = run_turn([inbound], engine, prompts, TurnConfig(), None)
    assert reply.finish_reason == "tool_calls" and reply.text == ""
    assert reply.tool_calls[0].name == "get_weather"
    assert reply.tool_calls[0].id == f"call_{reply.message_id[:24]}"  # a rerun: same id
    sent = engine.requests[0]
    assert sent.json_schema is not None and not sent.schema_or_text


def test_sampling_options_reach_the_engine(prompts: PromptLibrary) -> None:
    engine = FakeEngine(answers=["one two\nthree"])
    inbound = inbound_of(prompts, stop=["\n"], seed=5, top_p=0.3, tools=[WEATHER])
    reply = run_turn([inbound], engine, prompts, TurnConfig(), None)
    sent = engine.requests[0]
    assert reply.text == "one two" and reply.finish_reason == "stop"
    assert (sent.seed, sent.top_p, sent.stop) == (5, 0.3, ("\n",))
    assert sent.schema_or_text  # "auto": a call or plain text


def test_grammars_from_schemas() -> None:
    assert "root ::=" in gbnf({"type": "object"})
    both = gbnf({"type": "object"}, or_text=True)
    assert both.startswith("root ::= zz-json-reply | zz-plain-text")
    with pytest.raises(SchemaError):
        gbnf({"type": "object", "properties": {"a": {"$ref": "#/missing"}}})


def _nested_any_of(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"anyOf": [schema, {"type": "integer"}]}
    return schema


@pytest.mark.parametrize(("schema", "says"), [
    # llama.cpp's parser refuses these grammars, and llama-cpp-python would then sample with a
    # NULL sampler: SIGSEGV in the worker (measured before the bound).
    ({"type": "string", "maxLength": 1300}, "nest 1300 groups"),
    ({"type": "array", "maxItems": 1500, "items": {"type": "integer"}}, "nest 1500 groups"),
    # Counts the converter would write out in full (10**8: 16 s and 5 GB in the web process).
    ({"type": "array", "minItems": 10**8, "items": {"type": "string"}}, "minItems"),
    ({"type": "object", "properties": {"a": {"type": "string", "minLength": 10**9}}},
     "minLength"),
    ({"type": "string", "pattern": "^((a{3000}){3000}){3000}$"}, "pattern"),
    ({"type": "array", "minItems": 70_000, "items": {"type": "string"}}, "characters"),
    # Counts each within the limit, together 4 million (68 MB of rules at 40 properties).
    ({"type": "object", "properties": {f"p{i}": {"type": "array", "minItems": 100_000,
                                                 "items": {"type": "string"}}
                                       for i in range(40)}}, "add up"),
    # llama-cpp-python's converter writes a quote inside a value as \\" in a GBNF literal,
    # which llama.cpp cannot parse (a crash before: NULL sampler).
    ({"enum": ["say \"hi\""]}, "double quote in enum"),
    ({"const": {"a": ["x\"y"]}}, "double quote in const"),
    ({"type": "object", "properties": {"q\"x": {"type": "string"}}}, "double quote in prop"),
    # Python's own recursion limit, in the converter or in json.dumps: a SchemaError, not a 500.
    (_nested_any_of(900), "recursion"),
])
def test_schemas_past_the_engines_limits_are_refused(schema: dict[str, Any], says: str,
                                                     capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SchemaError, match=says):
        gbnf(schema)
    with pytest.raises(SchemaError):
        gbnf(schema, or_text=True)
    # Each is caught before llama.cpp's parser, which prints a grammar it refuses whole.
    assert "error parsing grammar" not in capfd.readouterr().err


@pytest.mark.parametrize("schema", [
    {"type": "string", "maxLength": 1000},
    {"type": "array", "maxItems": 100, "items": {"type": "integer"}},
    {"type": "string", "minLength": 2500},
    {"type": "string", "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"},
    {"type": "string", "const": "(((( [ ))))"},
    # Quotes the converter does escape: in a const object's keys' JSON, a pattern, a title,
    # a default and a required name.
    {"const": {"a": 1}}, {"type": "string", "pattern": "^a\"b$"},
    {"type": "string", "title": "a\"", "default": "x\""},
    {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a\""]},
])
def test_ordinary_schemas_stay_within_the_limits(schema: dict[str, Any]) -> None:
    assert "root ::=" in gbnf(schema)


def test_group_depth_counts_groups_not_literals_or_classes() -> None:
    assert group_depth('root ::= ("a" ("b" ("c")?)?)?') == 3
    assert group_depth('root ::= "((((" [()] "\\"(" x\n# ((( comment\nx ::= ("y")') == 1
    assert group_depth('root ::= [\\]((] ("z")') == 1


def test_a_grammar_at_the_depth_limit_runs_in_the_engine(model_path: Path) -> None:
    """What the bounds let through must not crash the engine: a grammar nesting
    MAX_GROUP_DEPTH groups (maxLength 1000) is sampled by the real model on a 1 MiB thread
    stack, in a child process so that a crash fails this test instead of the run."""
    code = f"""
import threading, sys
from llama_cpp import Llama
from worker.grammar import grammar, gbnf, group_depth
schema = {{"type": "string", "maxLength": {MAX_GROUP_DEPTH}}}
assert group_depth(gbnf(schema)) == {MAX_GROUP_DEPTH}
llm = Llama({str(model_path)!r}, n_ctx=256, n_threads=1, verbose=False)
out = []
def run():
    out.append(llm.create_completion("A quote:", max_tokens=6, temperature=0,
                                     grammar=grammar(schema))["choices"][0]["text"])
threading.stack_size(1 << 20)
thread = threading.Thread(target=run)
thread.start()
thread.join()
print(repr(out[0]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().startswith("'\"")  # the reply opens a JSON string


def test_the_byte_bound_never_undercounts(model_path: Any) -> None:
    counter = PromptCounter(model_path)
    texts = ["hello", "Ünïcødé ✓ 🙂" * 40, "The quick brown fox. " * 100, "x"]
    messages = [ChatMessage(role="user", text=t) for t in texts]
    assert counter.count(messages) <= PromptCounter.upper_bound(messages)
    assert PromptCounter(None).count(messages) == PromptCounter.upper_bound(messages)


# A history built to look short to a count per message (each "<|im_start|>" typed in a message
# costs two tokens more once the engine breaks it up, and ChatML's "assistant" is two tokens):
# it must still be refused at the edge, not fail in the worker (issue 19).
HOSTILE_HISTORY = ([{"role": "user", "content": "<|im_start|>" * 240}]
                   + [{"role": role, "content": "ok"}
                      for _ in range(12) for role in ("assistant", "user")])


def test_a_hostile_history_is_counted_as_the_engine_reads_it(model_path: Any) -> None:
    from worker.llama import LlamaEngine, count_message_tokens

    counter = PromptCounter(model_path)
    engine = LlamaEngine(model_path, context_size=2048, threads=1, threads_batch=1)
    body = CompletionRequest.model_validate({"messages": HOSTILE_HISTORY, "max_tokens": 16})
    inbound = to_inbound(body, 100_000, 16)
    messages = stateless_messages([inbound], PromptLibrary.load(), TurnConfig())
    read = engine.prompt_tokens(messages)
    assert read is not None and counter.count(messages) == len(read) > 2048
    # What a count per message would have let through (the old edge):
    assert count_message_tokens(counter._tokenizer(), messages) + 16 + 32 < 2048
    with pytest.raises(ContextLengthExceeded):
        counter.reply_tokens(messages, 2048, 16, 256)
    # Other shapes: exactly what the engine reads, and never above the bytes bound.
    for texts in (["   \n\n  \t " * 50], ["🙂é" * 80, " hello"], ["1234567890" * 30] * 3):
        shaped = [messages[0], *(ChatMessage(role="user", text=t) for t in texts)]
        assert counter.count(shaped) == len(engine.prompt_tokens(shaped) or [])
        assert counter.count(shaped) <= PromptCounter.upper_bound(shaped)


def test_too_long_for_the_context_is_refused(model_path: Any) -> None:
    counter = PromptCounter(model_path)
    long = [ChatMessage(role="user", text="The quick brown fox. " * 500)]
    with pytest.raises(ContextLengthExceeded) as refused:
        counter.reply_tokens(long, 2048, None, 256)
    assert refused.value.code == "context_length_exceeded"
    short = [ChatMessage(role="user", text="hi")]
    assert counter.reply_tokens(short, 2048, None, 256) == 256
    assert counter.reply_tokens(short, 2048, 1000, 256) == 1000
    with pytest.raises(ContextLengthExceeded):
        counter.reply_tokens(short, 2048, 2040, 256)
    # Without max_tokens the reply gets what is left, as OpenAI gives it.
    near = [ChatMessage(role="user", text="The quick brown fox. " * 360)]
    left = counter.reply_tokens(near, 2048, None, 256)
    assert 0 < left < 256


def test_the_edge_counts_tools_as_a_llama3_template_renders_them(
        prompts: PromptLibrary, llama3_model: Any, model_path: Any) -> None:
    """The edge sizes a tools request in the form the worker will render (the template's own
    tool format on Llama 3.1), and the bytes bound still covers it."""
    assert PromptCounter(model_path).tool_format is None  # SmolLM2's ChatML has none
    counter = PromptCounter(llama3_model)
    assert counter.tool_format == "llama3.1"
    inbound = inbound_of(prompts, tools=[WEATHER], messages=TOOL_HISTORY)
    native = stateless_messages([inbound], prompts, TurnConfig(), "llama3.1")
    plain = stateless_messages([inbound.model_copy(update={"options": GenerationOptions()})],
                               prompts, TurnConfig(), "llama3.1")
    with_tools, without = counter.count(native), counter.count(plain)
    assert with_tools > without + 50  # the tools' JSON and the template's lines about them
    assert with_tools <= PromptCounter.upper_bound(native)
