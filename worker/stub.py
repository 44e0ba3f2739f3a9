"""A stand-in engine for load tests (``ASSISTANT_ENGINE=stub``): never loads a model.

It answers every request at once with the same few tokens, so a load run measures the
plumbing (web → Redis → Celery → Redis → web) and nothing of llama.cpp. Unlike
``assistant.engine.FakeEngine`` it keeps no record of requests (a long load run would grow it
without bound) and has no answer queue.
"""

from __future__ import annotations

from collections.abc import Sequence

from assistant.engine import Completion, GenerationRequest, Stream
from assistant.envelope import ChatMessage

STUB_PIECES = ("Hello", " from", " the", " stub", " engine.")


class StubEngine:
    """Streams ``STUB_PIECES`` (one token each, cut at ``max_tokens``) without waiting."""

    name = "stub"

    def __init__(self, context_size: int = 2048) -> None:
        self.context_size = context_size

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        # One token per word plus a chat template's per-message overhead, like FakeEngine.
        return sum(len(m.text.split()) + 4 for m in messages)

    def stream(self, request: GenerationRequest) -> Stream:
        pieces = STUB_PIECES[: request.max_tokens]
        yield from pieces
        cut = len(STUB_PIECES) > request.max_tokens
        return Completion("length" if cut else "stop", len(pieces))


STUB_ANSWER = "".join(STUB_PIECES)
