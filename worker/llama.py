"""The llama.cpp engine: one ``Llama`` per worker process, loaded lazily on first use.

``Llama`` objects must not serve two calls at once (NOTES.md), so calls are serialised with a
lock. The chat template comes from the GGUF's own metadata (``tokenizer.chat_template``), which
llama-cpp-python picks when no ``chat_format`` is given: SmolLM2's ChatML and Llama 3's both.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from assistant.engine import GenerationRequest
from assistant.envelope import ChatMessage
from assistant.errors import ModelError

log = logging.getLogger(__name__)

# Per-message overhead of a chat template (role markers, separators), for token counting.
TEMPLATE_TOKENS_PER_MESSAGE = 5


class LlamaEngine:
    """A GGUF chat model run by llama-cpp-python."""

    def __init__(
        self, model_path: Path, context_size: int, threads: int, threads_batch: int
    ) -> None:
        self.model_path = model_path
        self.name = model_path.stem
        self.context_size = context_size
        self.threads = threads
        self.threads_batch = threads_batch
        self._llama: Any = None
        self._lock = threading.Lock()

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
            log.info("loaded %s in %.2f s", self.model_path.name, time.perf_counter() - started)
        return self._llama

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        llama = self.load()
        total = 0
        for message in messages:
            total += len(llama.tokenize(message.text.encode(), add_bos=False, special=False))
            total += TEMPLATE_TOKENS_PER_MESSAGE
        return total

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        llama = self.load()
        with self._lock:
            chunks = llama.create_chat_completion(
                messages=[{"role": m.role, "content": m.text} for m in request.messages],
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                seed=request.seed,
                stream=True,
            )
            for chunk in chunks:
                delta = chunk["choices"][0]["delta"]
                text = delta.get("content")
                if text:
                    yield text
