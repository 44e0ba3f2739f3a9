"""The model behind one small interface, and a fake that replays queued answers for tests."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from assistant.envelope import ChatMessage


@dataclass(frozen=True)
class GenerationRequest:
    """What the engine is asked to do for one turn."""

    messages: tuple[ChatMessage, ...]
    max_tokens: int
    temperature: float
    seed: int


class Engine(Protocol):
    """A chat model: counts tokens and streams the answer to a list of messages."""

    name: str
    context_size: int

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """How many prompt tokens these messages take, chat template included."""
        ...

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        """Yield the answer piece by piece as the model produces it."""
        ...


@dataclass
class FakeEngine:
    """Replays queued answers word by word and records every request it received."""

    answers: list[str] = field(default_factory=list)
    name: str = "fake"
    context_size: int = 2048
    default_answer: str = "ok"
    requests: list[GenerationRequest] = field(default_factory=list)

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        # One token per word plus a fixed per-message overhead, like a chat template adds.
        return sum(len(m.text.split()) + 4 for m in messages)

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        self.requests.append(request)
        answer = self.answers.pop(0) if self.answers else self.default_answer
        words = answer.split(" ")
        for index, word in enumerate(words):
            yield word if index == 0 else " " + word
