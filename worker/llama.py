"""The llama.cpp engine: one ``Llama`` per worker process, loaded lazily on first use.

``Llama`` objects must not serve two calls at once (NOTES.md), so calls are serialised with a
lock. The chat template comes from the GGUF's own metadata (``tokenizer.chat_template``), which
llama-cpp-python picks when no ``chat_format`` is given: SmolLM2's ChatML and Llama 3's both.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from assistant.engine import Completion, GenerationRequest, Stream
from assistant.envelope import ChatMessage
from assistant.errors import ModelError

log = logging.getLogger(__name__)

# Chat-template overhead for token counting: role markers and separators per message, plus
# the assistant header that opens the reply (ChatML: "<|im_start|>assistant\n").
TEMPLATE_TOKENS_PER_MESSAGE = 5
GENERATION_PROMPT_TOKENS = 4


class LlamaEngine:
    """A GGUF chat model run by llama-cpp-python."""

    def __init__(
        self, model_path: Path, context_size: int, threads: int, threads_batch: int,
        on_load: Callable[[float], None] | None = None,
    ) -> None:
        self.model_path = model_path
        self.name = model_path.stem
        self.context_size = context_size
        self.threads = threads
        self.threads_batch = threads_batch
        self._llama: Any = None
        self._lock = threading.Lock()
        self._on_load = on_load  # told the load time in seconds (worker metrics)

    @property
    def loaded(self) -> bool:
        return self._llama is not None

    def load(self) -> Any:
        if self._llama is None:
            if not self.model_path.is_file():
                raise ModelError(
                    f"model file {self.model_path} not found; run `assistant model pull`"
                )
            from llama_cpp import Llama  # heavy import, kept out of web processes

            started = time.perf_counter()
            try:
                self._llama = Llama(
                    model_path=str(self.model_path),
                    n_ctx=self.context_size,
                    n_threads=self.threads,
                    n_threads_batch=self.threads_batch,
                    use_mmap=True,  # processes on one host share the weights
                    verbose=False,
                )
            except (ValueError, RuntimeError) as exc:
                raise ModelError(f"could not load {self.model_path}: {exc}") from exc
            seconds = time.perf_counter() - started
            log.info("loaded %s in %.2f s", self.model_path.name, seconds)
            if self._on_load is not None:
                self._on_load(seconds)
        return self._llama

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        llama = self.load()
        total = GENERATION_PROMPT_TOKENS
        for message in messages:
            total += len(llama.tokenize(message.text.encode(), add_bos=False, special=False))
            total += TEMPLATE_TOKENS_PER_MESSAGE
        return total

    def stream(self, request: GenerationRequest) -> Stream:
        llama = self.load()
        finish_reason = "stop"
        pieces: list[str] = []
        with self._lock:
            chunks = llama.create_chat_completion(
                messages=[{"role": m.role, "content": m.text} for m in request.messages],
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                seed=request.seed,
                stream=True,
            )
            for chunk in chunks:
                choice = chunk["choices"][0]
                text = choice["delta"].get("content")
                if text:
                    pieces.append(text)
                    yield text
                if choice.get("finish_reason"):
                    finish_reason = choice["finish_reason"]
        # Pieces are not tokens: llama-cpp-python joins tokens that split a UTF-8 character.
        written = "".join(pieces).encode()
        count = len(llama.tokenize(written, add_bos=False, special=False)) if written else 0
        return Completion("length" if finish_reason == "length" else "stop", count)
