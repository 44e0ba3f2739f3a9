"""OpenAI chat-completion requests: their shape, what is refused, and the ``Inbound`` they
become. Pure functions over pydantic models; the routes are in ``openai_api``.

Every parameter is either honoured or refused with OpenAI's 400 error naming it; none is
silently ignored except the bookkeeping ones in ``IGNORED`` (docs/openai-api.md).
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from assistant.envelope import (
    ChatMessage,
    ConversationKey,
    GenerationOptions,
    Inbound,
    ToolCall,
    ToolSpec,
)
from assistant.errors import InvalidParameter

# Accepted and without effect on the reply: bookkeeping for OpenAI's own platform.
IGNORED = frozenset({"store", "metadata", "service_tier", "user", "safety_identifier",
                     "prompt_cache_key"})
# Known OpenAI parameters this server cannot honour, with why (the 400's message).
REFUSED = {
    "logprobs": "log probabilities are not returned by this server",
    "top_logprobs": "log probabilities are not returned by this server",
    "functions": "the deprecated `functions` is not supported; use `tools`",
    "function_call": "the deprecated `function_call` is not supported; use `tool_choice`",
    "audio": "this model writes text only",
    "modalities": "this model writes text only",
    "prediction": "predicted outputs are not supported",
    "web_search_options": "this server does not search the web",
    "reasoning_effort": "this model does not reason in a separate channel",
    "verbosity": "`verbosity` is not supported",
}


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class FunctionCallIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    arguments: str = ""


class ToolCallIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallIn


class OpenAIMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None
    name: str | None = None

    def text(self, where: str) -> str:
        if not isinstance(self.content, list):
            return self.content or ""
        for part in self.content:
            if part.type not in ("text", "refusal"):
                raise InvalidParameter(
                    f"{where}: content parts of type {part.type!r} are not supported; this "
                    "model reads text only", param=f"{where}.content")
        return "".join(p.text or "" for p in self.content)


class FunctionDef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str = ""
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


class ToolIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=lambda: {"type": "object"},
                                    alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class SamplingRequest(BaseModel):
    """What chat and legacy completions share: the model, sampling, streaming, the caller."""
    # Unknown parameters are refused with OpenAI's own message, in ``check_supported``.
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    n: int | None = Field(None, ge=1, le=128)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    user: str | None = None

    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())


class CompletionRequest(SamplingRequest):
    messages: list[OpenAIMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[ToolIn] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None  # a reply makes at most one call: both honoured
    response_format: ResponseFormat | None = None


# The legacy /v1/completions' own parameters this server cannot honour.
TEXT_REFUSED = {
    "logprobs": "log probabilities are not returned by this server",
    "suffix": "`suffix` (insertion) is not supported by this model",
    "best_of": "best_of > 1 is not supported: this server samples one completion",
}


class TextCompletionRequest(SamplingRequest):
    """The legacy /v1/completions: a prompt continued as written, without the chat template."""
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False
    # OpenAI's default for this endpoint (chat completions have none).
    max_tokens: int | None = Field(16, ge=1)


def check_supported(body: SamplingRequest, refused: dict[str, str] = REFUSED) -> None:
    """Refuse what would otherwise be ignored: unknown and unsupported parameters, n > 1."""
    for name, value in (body.model_extra or {}).items():
        if name in IGNORED:
            continue
        if name in refused:
            # e.g. logprobs=false, best_of=1, suffix="": asks for nothing
            if value in (None, False, 0, "") or (name == "best_of" and value == 1):
                continue
            raise InvalidParameter(f"{refused[name]}.", param=name, code="unsupported_parameter")
        raise InvalidParameter(f"Unrecognized request argument supplied: {name}", param=name,
                               code="unsupported_parameter")
    if body.n is not None and body.n > 1:
        raise InvalidParameter("n > 1 is not supported: this server returns one choice; "
                               "send the request n times instead.", param="n",
                               code="unsupported_value")
    stops = body.stops()
    if len(stops) > 4:
        raise InvalidParameter("stop takes at most 4 sequences.", param="stop")
    if any(not s for s in stops):
        raise InvalidParameter("stop sequences cannot be empty.", param="stop")
    for key, bias in (body.logit_bias or {}).items():
        # ASCII digits only: str.isdigit() also takes "²" (int() then raised: a 500), and a
        # 5,000-digit id is past int()'s own limit; no vocabulary has ten-digit ids.
        if not (key.isascii() and key.isdigit() and len(key) <= 10) or \
                not -100 <= bias <= 100:
            raise InvalidParameter(
                "logit_bias maps token ids (the model's own, as strings) to values in "
                f"[-100, 100]; got {key[:20]!r}: {bias}.", param="logit_bias")


def prompt_text(body: TextCompletionRequest) -> str:
    """The one prompt of a legacy completion request (a string, or a list of one)."""
    given = body.prompt if isinstance(body.prompt, list) else [body.prompt]
    if any(not isinstance(p, str) for p in given):
        raise InvalidParameter("prompts as token ids are not supported; send text.",
                               param="prompt", code="unsupported_value")
    if len(given) != 1:
        raise InvalidParameter("one prompt per request: this server returns one choice; "
                               "send the prompts in separate requests.", param="prompt",
                               code="unsupported_value")
    prompt = given[0]
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidParameter("the prompt is empty.", param="prompt")
    return prompt


def to_raw_inbound(body: TextCompletionRequest, max_input_chars: int,
                   max_tokens: int | None) -> Inbound:
    """A legacy completion as the envelope every edge queues: its prompt read as written."""
    check_supported(body, TEXT_REFUSED)
    text = prompt_text(body)
    if len(text) > max_input_chars:
        raise InvalidParameter(f"the prompt is {len(text)} characters; the limit is "
                               f"{max_input_chars}.", param="prompt",
                               code="string_above_max_length")
    request_id = uuid.uuid4().hex
    return Inbound(
        message_id=request_id,
        dedupe_id=f"openai:{request_id}",
        conversation=ConversationKey(platform="openai", channel=request_id),
        user_id=(body.user or "openai-client")[:200],
        text=text,
        history=(),
        options=sampling_options(body, max_tokens).model_copy(update={"raw": True}),
    )


def sampling_options(body: SamplingRequest, max_tokens: int | None) -> GenerationOptions:
    return GenerationOptions(
        max_tokens=max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        logit_bias={int(k): v for k, v in (body.logit_bias or {}).items()},
        seed=body.seed,
        stop=body.stops(),
    )


def tool_specs(body: CompletionRequest) -> tuple[tuple[ToolSpec, ...], str]:
    """The offered tools and the choice among them ("auto", "none", "required" or a name)."""
    tools = tuple(ToolSpec(name=t.function.name, description=t.function.description,
                           parameters=t.function.parameters) for t in body.tools or [])
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise InvalidParameter("tool names must be unique.", param="tools")
    choice = body.tool_choice
    if isinstance(choice, NamedToolChoice):
        if choice.function.name not in names:
            raise InvalidParameter(f"tool_choice names {choice.function.name!r}, which is not "
                                   "among the tools.", param="tool_choice")
        return tools, choice.function.name
    if choice in ("required",) and not tools:
        raise InvalidParameter("tool_choice 'required' needs tools.", param="tool_choice")
    return tools, choice or "auto"


def json_schema(body: CompletionRequest) -> dict[str, Any] | None:
    """The schema the reply must match (``response_format``), or None for plain text."""
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "object"}
    if fmt.json_schema is None:
        raise InvalidParameter("response_format of type json_schema needs `json_schema`.",
                               param="response_format.json_schema")
    return fmt.json_schema.schema_


def history_messages(body: CompletionRequest) -> tuple[list[ChatMessage], ChatMessage]:
    """The messages as the model reads them, and the last one apart (the turn's input).

    Assistant messages keep their tool calls and ``tool`` messages the name of the function
    they answer: the worker shows them in the chat template's own tool format, or as text
    (assistant/tools.py, ``for_template``)."""
    call_names: dict[str, str] = {}
    converted: list[ChatMessage] = []
    for index, message in enumerate(body.messages):
        where = f"messages[{index}]"
        text = message.text(where)
        if message.role in ("system", "developer"):
            converted.append(ChatMessage(role="system", text=text))
        elif message.role == "user":
            converted.append(ChatMessage(role="user", text=text))
        elif message.role == "assistant":
            calls = tuple(ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments)
                          for c in message.tool_calls or [])
            for call in calls:
                call_names[call.id] = call.name
            converted.append(ChatMessage(role="assistant", text=text, tool_calls=calls))
        else:
            name = call_names.get(message.tool_call_id or "") or message.name or "call"
            converted.append(ChatMessage(role="tool", text=text, tool_name=name))
    if body.messages[-1].role not in ("user", "tool"):
        raise InvalidParameter("the last message must be the user's or a tool's result.",
                               param=f"messages[{len(body.messages) - 1}].role")
    last = converted.pop()
    return converted, last


def to_inbound(body: CompletionRequest, max_input_chars: int,
               max_tokens: int | None) -> Inbound:
    """The request as the one envelope every edge queues (stateless: it brings its history)."""
    check_supported(body)
    tools, choice = tool_specs(body)
    schema = json_schema(body)
    if schema is not None and tools and choice != "none":
        raise InvalidParameter("response_format and tools cannot be used together here.",
                               param="response_format")
    history, last = history_messages(body)
    text = last.text.strip()
    if not text:
        raise InvalidParameter("the last message is empty.",
                               param=f"messages[{len(body.messages) - 1}].content")
    if len(text) > max_input_chars:
        raise InvalidParameter(f"the last message is {len(text)} characters; the limit is "
                               f"{max_input_chars}.",
                               param=f"messages[{len(body.messages) - 1}].content",
                               code="string_above_max_length")
    request_id = uuid.uuid4().hex
    return Inbound(
        message_id=request_id,
        dedupe_id=f"openai:{request_id}",
        conversation=ConversationKey(platform="openai", channel=request_id),
        user_id=(body.user or "openai-client")[:200],
        text=text,
        history=tuple(history),
        tool_name=last.tool_name,
        options=sampling_options(body, max_tokens).model_copy(update={
            "json_schema": schema, "tools": tools, "tool_choice": choice}),
    )


def total_chars(body: CompletionRequest) -> int:
    """What a request asks the server to read: every message, tool and schema, in characters."""
    size = 0
    for m in body.messages:
        parts = m.content if isinstance(m.content, list) else [m.content or ""]
        size += sum(len(p if isinstance(p, str) else p.text or "") for p in parts)
        size += sum(len(c.function.name) + len(c.function.arguments)
                    for c in m.tool_calls or [])
    size += sum(len(json.dumps(t.model_dump())) for t in body.tools or [])
    if body.response_format is not None:
        size += len(body.response_format.model_dump_json())
    return size
