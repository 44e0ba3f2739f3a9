"""A stand-in engine for load tests (``ASSISTANT_ENGINE=stub``): never loads a model.

It answers every request at once with the same few tokens, so a load run measures the
plumbing (web → Redis → Celery → Redis → web) and nothing of llama.cpp. Unlike
``tests.auxil.fake_engine.FakeEngine`` it keeps no record of requests (a long load run would grow it
without bound) and has no answer queue.

For end-to-end tests of what happens to a reply (the safety filters' output checks), a test
stack can script it: ``ASSISTANT_STUB_REPLY`` is streamed word by word instead (``{system}`` in
it is replaced by the request's system prompt), ``ASSISTANT_STUB_TOKEN_DELAY_MS`` apart.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from assistant.engine import Completion, GenerationRequest, Stream
from assistant.envelope import ChatMessage

STUB_PIECES = ("Hello", " from", " the", " stub", " engine.")


class StubEngine:
    """Streams ``STUB_PIECES`` (one token each, cut at ``max_tokens``) without waiting."""

    name = "stub"

    def __init__(self, context_size: int = 2048, reply: str | None = None,
                 token_delay_s: float | None = None) -> None:
        self.context_size = context_size
        self.reply = reply if reply is not None else os.environ.get("ASSISTANT_STUB_REPLY")
        delay_ms = float(os.environ.get("ASSISTANT_STUB_TOKEN_DELAY_MS", "0") or 0)
        self.token_delay_s = token_delay_s if token_delay_s is not None else delay_ms / 1000

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        # One token per word plus a chat template's per-message overhead, like FakeEngine.
        return sum(len(m.text.split()) + 4 for m in messages)

    def pieces(self, request: GenerationRequest) -> tuple[str, ...]:
        if not self.reply:
            return STUB_PIECES
        system = next((m.text for m in request.messages if m.role == "system"), "")
        words = self.reply.replace("{system}", system).split(" ")
        return tuple(w if i == 0 else " " + w for i, w in enumerate(words))

    def stream(self, request: GenerationRequest) -> Stream:
        every = self.pieces(request)
        pieces = every[: request.max_tokens]
        for piece in pieces:
            if self.token_delay_s:
                time.sleep(self.token_delay_s)
            yield piece
        cut = len(every) > request.max_tokens
        return Completion("length" if cut else "stop", len(pieces))


STUB_ANSWER = "".join(STUB_PIECES)
