"""The model behind one small interface, and a fake that replays queued answers for tests."""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from assistant.envelope import ChatMessage


@dataclass(frozen=True)
class GenerationRequest:
    """What the engine is asked to do for one turn."""

    messages: tuple[ChatMessage, ...]
    max_tokens: int
    temperature: float
    seed: int
    # Which conversation the prompt belongs to (``ConversationKey.redis_id``): an engine that
    # keeps model state between turns keys it by this; ``None`` for one-off prompts.
    cache_key: str | None = None
    # OpenAI's sampling parameters (docs/openai-api.md); the defaults change nothing.
    top_p: float | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: Mapping[int, float] | None = None
    stop: tuple[str, ...] = ()  # the reply ends before the first of these; never shows it
    # The reply is constrained to JSON matching this schema (an engine grammar); with
    # ``schema_or_text`` it may instead be plain text that does not start with "{".
    json_schema: Mapping[str, Any] | None = None
    schema_or_text: bool = False
    # The legacy /v1/completions: the last message's text is the whole prompt, read as
    # written without the chat template.
    raw: bool = False


@dataclass(frozen=True)
class Completion:
    """How a generation ended: the model's own finish reason and how many tokens it wrote."""

    finish_reason: Literal["stop", "length"]
    completion_tokens: int


Stream = Generator[str, None, Completion]


class Engine(Protocol):
    """A chat model: counts tokens and streams the answer to a list of messages."""

    name: str
    context_size: int

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """How many prompt tokens these messages take, chat template included."""
        ...

    def stream(self, request: GenerationRequest) -> Stream:
        """Yield the answer piece by piece as the model produces it; return how it ended."""
        ...
