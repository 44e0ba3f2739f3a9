"""The engine the unit tests use: replays queued answers word by word and records requests.

The worker's stand-in for load runs without a model is ``worker/stub.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from assistant.engine import Completion, GenerationRequest, Stream
from assistant.envelope import ChatMessage


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

    def stream(self, request: GenerationRequest) -> Stream:
        self.requests.append(request)
        answer = self.answers.pop(0) if self.answers else self.default_answer
        for stop in request.stop:  # like an engine: end before the stop, never show it
            answer = answer.split(stop, 1)[0]
        words = answer.split(" ")  # one "token" per word
        for index, word in enumerate(words[: request.max_tokens]):
            yield word if index == 0 else " " + word
        cut = len(words) > request.max_tokens
        return Completion("length" if cut else "stop", min(len(words), request.max_tokens))
