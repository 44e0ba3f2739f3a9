"""Tool calls and JSON replies (OpenAI's ``tools`` and ``response_format``) as plain functions.

What the model is told (prompts/tools_*.toml, prompts/json_output.toml), which JSON a call must
be, and reading a call back out of the model's text. The engine constrains the reply to
``call_schema`` by a grammar (worker/grammar.py), so a call always parses. The assistant never
runs a tool: it returns the call; the client runs it and sends the result back as a ``tool``
message (docs/openai-api.md).
"""

from __future__ import annotations

import json
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


def call_schema(options: GenerationOptions) -> dict[str, Any] | None:
    """The JSON schema of one call the model may make, or None when it may make none."""
    if not uses_tools(options):
        return None
    named = options.tool_choice not in ("auto", "required")
    offered = [t for t in options.tools if not named or t.name == options.tool_choice]
    variants = [{
        "type": "object",
        # "name" first: the grammar writes properties in this order.
        "properties": {"name": {"const": t.name}, "arguments": t.parameters},
        "required": ["name", "arguments"],
    } for t in offered]
    return variants[0] if len(variants) == 1 else {"anyOf": variants}


def describe(tools: Sequence[ToolSpec]) -> str:
    lines = []
    for tool in tools:
        about = f": {tool.description.strip()}" if tool.description.strip() else ""
        lines.append(f"- {tool.name}{about} Arguments (JSON schema): "
                     f"{json.dumps(tool.parameters, separators=(',', ':'))}")
    return "\n".join(lines)


def instructions(prompts: PromptLibrary, options: GenerationOptions) -> str:
    """What to add to the system prompt for tools or a JSON reply ("" when neither)."""
    if uses_tools(options):
        named = options.tool_choice not in ("auto", "required")
        offered = [t for t in options.tools if not named or t.name == options.tool_choice]
        name = "tools_auto" if options.tool_choice == "auto" else "tools_required"
        return prompts.render(name, tools=describe(offered)).strip()
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


def parse_call(text: str, options: GenerationOptions, call_id: str | None = None
               ) -> ToolCall | None:
    """The call in the model's reply, or None when the reply is prose (or not a valid call)."""
    if not uses_tools(options) or not text.lstrip().startswith("{"):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("arguments"), dict):
        return None
    names = {t.name for t in options.tools}
    if data.get("name") not in names:
        return None
    return ToolCall(id=call_id or f"call_{uuid.uuid4().hex[:24]}", name=str(data["name"]),
                    arguments=json.dumps(data["arguments"], ensure_ascii=False))


def call_text(name: str, arguments: str) -> str:
    """A call as the model writes it, for an assistant message of the history."""
    try:
        parsed: Any = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        parsed = arguments
    return json.dumps({"name": name, "arguments": parsed}, ensure_ascii=False)
