"""The one value type that crosses every boundary: adapter → queue → worker → sender.

Envelopes are frozen pydantic models and travel as JSON. The core never sees an SDK object;
each integration translates its platform's events into an ``Inbound`` at its own edge.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# "tool": a tool's result in an OpenAI API request's history (never stored in memory).
Role = Literal["system", "user", "assistant", "tool"]
_KEY_PART = re.compile(r"^[A-Za-z0-9_.:@+\-]{1,200}$")


def utcnow() -> datetime:
    return datetime.now(UTC)


def _empty(value: object) -> bool:
    return not value


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ConversationKey(Frozen):
    """Where a conversation lives. Memory, locks and ordering are keyed by it.

    ``user`` is set only for direct messages, so a user's DM never shares memory with a group.
    """

    platform: str
    workspace: str = "default"
    channel: str
    thread: str | None = None
    user: str | None = None

    @field_validator("platform", "workspace", "channel", "thread", "user")
    @classmethod
    def _safe_part(cls, value: str | None) -> str | None:
        if value is not None and not _KEY_PART.match(value):
            raise ValueError("must be 1-200 characters of letters, digits and _.:@+-")
        return value

    @property
    def redis_id(self) -> str:
        """A stable, compact id for Redis keys (parts may contain ':')."""
        raw = "\x1f".join(
            [self.platform, self.workspace, self.channel, self.thread or "", self.user or ""]
        )
        return hashlib.sha256(raw.encode()).hexdigest()[:32]


class ToolSpec(Frozen):
    """A function the client offers the model (OpenAI's ``tools``); the client runs it."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})


class ToolCall(Frozen):
    """A call the model asked the client to make; ``arguments`` is a JSON object's text."""

    id: str
    name: str
    arguments: str


class ChatMessage(Frozen):
    """One message of a conversation as the model and the API see it."""

    role: Role
    text: str
    message_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    created_at: datetime = Field(default_factory=utcnow)
    user_id: str | None = None  # who wrote a user message (for "forget me" in shared threads)
    # The OpenAI API's tool calling (assistant/tools.py): the calls an assistant message made,
    # the function a "tool" message is the result of, and on the leading system message the
    # tools a chat template with its own tool format renders (empty otherwise).
    # Left out of the JSON when empty: stored messages keep their shape.
    tool_calls: tuple[ToolCall, ...] = Field((), exclude_if=_empty)
    tool_name: str | None = Field(None, exclude_if=_empty)
    tools: tuple[ToolSpec, ...] = Field((), exclude_if=_empty)


class GenerationOptions(Frozen):
    """Per-request overrides of the model settings (the OpenAI API can set them).

    docs/openai-api.md says which OpenAI parameters map onto which field.
    """

    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    # Keyed by the model's own token ids (JSON keys are strings, as in OpenAI's API).
    logit_bias: dict[int, float] = Field(default_factory=dict)
    seed: int | None = None  # None: derived from the reply id (a rerun samples the same text)
    stop: tuple[str, ...] = Field((), max_length=4)
    # The reply must be JSON matching this schema ({"type": "object"}: any object).
    json_schema: dict[str, Any] | None = None
    tools: tuple[ToolSpec, ...] = ()
    # "auto", "none", "required", or the name of the one tool the model must call.
    tool_choice: str = "auto"
    # The legacy /v1/completions: the text is the whole prompt, continued as written (no chat
    # template, persona, history, documents or memory commands).
    raw: bool = False


class Inbound(Frozen):
    """A user's message, as an adapter enqueues it."""

    message_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    dedupe_id: str  # platform-unique: Slack event_id, Telegram update_id, web idempotency key
    conversation: ConversationKey
    user_id: str
    text: str
    received_at: datetime = Field(default_factory=utcnow)
    # Where the platform's sender posts the reply (channel ids, thread ts...): opaque to the core.
    reply_to: dict[str, Any] = Field(default_factory=dict)
    # Stateless requests (the OpenAI API) bring their own history instead of using memory.
    history: tuple[ChatMessage, ...] | None = None
    # Set when ``text`` is a tool's result (an OpenAI API request ending with a ``tool``
    # message): the function whose call it answers.
    tool_name: str | None = None
    options: GenerationOptions = GenerationOptions()


class Citation(Frozen):
    """A document passage a reply drew on: ``number`` is the [n] the model was shown."""

    number: int
    title: str
    section: str = ""
    source: str = ""
    page: int | None = None


class Reply(Frozen):
    """The assistant's answer to one turn (one or more inbound messages)."""

    message_id: str
    conversation: ConversationKey
    in_reply_to: tuple[str, ...]
    text: str
    reply_to: dict[str, Any] = Field(default_factory=dict)
    # "content_filter" (OpenAI's name): the safety filters refused, cut or changed the reply;
    # "tool_calls": the model asked for ``tool_calls`` instead of answering (``text`` empty).
    finish_reason: Literal["stop", "length", "error", "content_filter", "tool_calls"] = "stop"
    tool_calls: tuple[ToolCall, ...] = ()
    prompt_tokens: int = 0
    completion_tokens: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    # The knowledge-base passages the reply was given (docs/knowledge.md); edges render them.
    citations: tuple[Citation, ...] = ()


def reply_id_for(inbound_ids: list[str] | tuple[str, ...]) -> str:
    """The reply's id, derived from the messages it answers, so a rerun gets the same id."""
    return uuid.uuid5(uuid.NAMESPACE_URL, "reply:" + ",".join(inbound_ids)).hex
