"""Tool calls and JSON replies (OpenAI's ``tools`` and ``response_format``) as plain functions.

What the model is told (prompts/tools_*.toml, prompts/json_output.toml), which JSON a call must
be, and reading a call back out of the model's text. The engine constrains the reply to
``call_schema`` by a grammar (worker/grammar.py), so a call always parses. The assistant never
runs a tool: it returns the call; the client runs it and sends the result back as a ``tool``
message (docs/openai-api.md).

Two ways to show tools to the model. A chat template with its own tool format (Llama 3.1+
Instruct: ``template_tool_format``) renders the tools, the calls of the history and the tool
results itself (``ipython`` turns), and the model answers ``{"name": ..., "parameters": {...}}``
as it was trained to. Any other template (SmolLM2's ChatML) reads the tools described in the
system prompt, calls as JSON ``{"name": ..., "arguments": {...}}`` and results as user messages
(``for_template``).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from typing import Any

from assistant.envelope import ChatMessage, GenerationOptions, ToolCall, ToolSpec
from assistant.prompts import PromptLibrary


def uses_tools(options: GenerationOptions) -> bool:
    return bool(options.tools) and options.tool_choice != "none"


def must_call(options: GenerationOptions) -> bool:
    """Whether the reply can only be a call (``required`` or a named tool)."""
    return uses_tools(options) and options.tool_choice != "auto"


# The tool formats of chat templates this server renders natively, by template family
# (assistant.models.template_family): the key a call's arguments go under.
NATIVE_ARGUMENTS_KEY = {"llama3.1": "parameters"}
TEXT_ARGUMENTS_KEY = "arguments"  # the format of prompts/tools_*.toml
# The start of a call up to its arguments' value, as the grammar writes it ("name" first).
CALL_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"([A-Za-z0-9_-]{1,64})"\s*,\s*'
                       r'"(arguments|parameters)"\s*:\s*')


def template_tool_format(template: str) -> str | None:
    """The tool format of a chat template (``tokenizer.chat_template``) that renders tools
    itself, or None: the tools are then described in the system prompt."""
    from assistant.models import template_family

    family = template_family({"tokenizer.chat_template": template})
    return family if family in NATIVE_ARGUMENTS_KEY and "tools" in template else None


def arguments_key(tool_format: str | None) -> str:
    return NATIVE_ARGUMENTS_KEY.get(tool_format or "", TEXT_ARGUMENTS_KEY)


def offered_tools(options: GenerationOptions) -> tuple[ToolSpec, ...]:
    """The tools the model may call: all of them, or the one ``tool_choice`` names."""
    if not uses_tools(options):
        return ()
    named = options.tool_choice not in ("auto", "required")
    return tuple(t for t in options.tools if not named or t.name == options.tool_choice)


def call_schema(options: GenerationOptions, tool_format: str | None = None
                ) -> dict[str, Any] | None:
    """The JSON schema of one call the model may make, or None when it may make none."""
    key = arguments_key(tool_format)
    variants = [{
        "type": "object",
        # "name" first: the grammar writes properties in this order.
        "properties": {"name": {"const": t.name}, key: t.parameters},
        "required": ["name", key],
    } for t in offered_tools(options)]
    if not variants:
        return None
    return variants[0] if len(variants) == 1 else {"anyOf": variants}


def call_id(reply_id: str) -> str:
    """A reply's call id: the worker and a streaming edge name the call alike."""
    return f"call_{reply_id[:24]}"


def describe(tools: Sequence[ToolSpec]) -> str:
    lines = []
    for tool in tools:
        about = f": {tool.description.strip()}" if tool.description.strip() else ""
        lines.append(f"- {tool.name}{about} Arguments (JSON schema): "
                     f"{json.dumps(tool.parameters, separators=(',', ':'))}")
    return "\n".join(lines)


def instructions(prompts: PromptLibrary, options: GenerationOptions,
                 tool_format: str | None = None) -> str:
    """What to add to the system prompt for tools or a JSON reply ("" when neither, or when
    the chat template renders the tools itself)."""
    if uses_tools(options):
        if tool_format is not None:
            return ""
        name = "tools_auto" if options.tool_choice == "auto" else "tools_required"
        return prompts.render(name, tools=describe(offered_tools(options))).strip()
    if options.json_schema is not None:
        schema = options.json_schema
        shape = "" if schema == {"type": "object"} else (
            " matching this JSON schema: " + json.dumps(schema, separators=(",", ":")))
        return prompts.render("json_output", schema=shape).strip()
    return ""


def with_instructions(messages: Sequence[ChatMessage], extra: str) -> tuple[ChatMessage, ...]:
    """``messages`` with ``extra`` appended to the leading system message (or one added)."""
    if not extra:
        return tuple(messages)
    if messages and messages[0].role == "system":
        first = messages[0]
        return (first.model_copy(update={"text": f"{first.text}\n\n{extra}"}), *messages[1:])
    return (ChatMessage(role="system", text=extra), *messages)


def for_template(messages: Sequence[ChatMessage], prompts: PromptLibrary,
                 options: GenerationOptions, tool_format: str | None
                 ) -> tuple[ChatMessage, ...]:
    """``messages`` as the chat template reads them. With a tool format, the offered tools go
    on the leading system message and calls and results stay as they are, for the template to
    render; without, a call becomes the JSON the model writes for one and a result a user
    message (prompts/tool_result.toml), since such a template has no tool role."""
    if tool_format is not None:
        offered = offered_tools(options)
        if offered and messages and messages[0].role == "system":
            return (messages[0].model_copy(update={"tools": offered}), *messages[1:])
        return tuple(messages)
    converted = []
    for message in messages:
        if message.role == "tool":
            converted.append(ChatMessage(role="user", text=prompts.render(
                "tool_result", tool=message.tool_name or "call", result=message.text),
                message_id=message.message_id))
        elif message.tool_calls:
            calls = [call_text(c.name, c.arguments) for c in message.tool_calls]
            converted.append(message.model_copy(update={
                "text": "\n".join([message.text, *calls]).strip(), "tool_calls": ()}))
        else:
            converted.append(message)
    return tuple(converted)


def parse_call(text: str, options: GenerationOptions, call_id: str | None = None
               ) -> ToolCall | None:
    """The call in the model's reply, or None when the reply is prose (or not a valid call).

    Its ``arguments`` are the text the model wrote for them (the object under "arguments", or
    "parameters" in Llama 3.1's format), as a streaming edge sends them piece by piece."""
    if not uses_tools(options) or not text.lstrip().startswith("{"):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    head = CALL_HEAD.match(text)
    if not isinstance(data, dict) or head is None or set(data) != {"name", head.group(2)}:
        return None
    if not isinstance(data[head.group(2)], dict):
        return None
    if data.get("name") not in {t.name for t in offered_tools(options)}:
        return None
    try:
        _, end = json.JSONDecoder().raw_decode(text, head.end())
    except ValueError:
        return None
    return ToolCall(id=call_id or f"call_{uuid.uuid4().hex[:24]}", name=str(data["name"]),
                    arguments=text[head.end():end])


def call_text(name: str, arguments: str) -> str:
    """A call as the model writes it, for an assistant message of the history."""
    try:
        parsed: Any = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        parsed = arguments
    return json.dumps({"name": name, "arguments": parsed}, ensure_ascii=False)
