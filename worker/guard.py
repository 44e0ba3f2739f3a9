"""The guard model behind the LLM judge: a separate GGUF (e.g. Llama-Guard-3-1B) run by llama.cpp.

Off by default: it runs only when the safety policy lists ``llm_judge`` and ``guard_model``
(``ASSISTANT_GUARD_MODEL``) names a GGUF by path, by file name in the models directory, or by a
known name / hf:// reference (``assistant.models.resolve_model_path``). It is a raw completion,
not a chat: the judge's prompt already carries Llama Guard 3's own template. Greedy, a few
tokens ("unsafe\\nS1,S9" is 6). Loaded lazily, once per process; one call at a time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from assistant.errors import ModelError
from assistant.models import resolve_model_path
from assistant.settings import Settings

log = logging.getLogger(__name__)

MAX_TOKENS = 10
CONTEXT_SIZE = 2048  # the judge's prompt is ~250 tokens plus the judged text


class GuardModel:
    """A guard GGUF answering raw completions at temperature 0."""

    def __init__(self, model_path: Path, threads: int, context_size: int = CONTEXT_SIZE) -> None:
        self.model_path = model_path
        self.threads = threads
        self.context_size = context_size
        self._llama: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        if self._llama is None:
            from llama_cpp import Llama  # heavy import, kept out of web processes

            started = time.perf_counter()
            try:
                self._llama = Llama(model_path=str(self.model_path), n_ctx=self.context_size,
                                    n_threads=self.threads, n_threads_batch=self.threads,
                                    use_mmap=True, verbose=False)
            except (ValueError, RuntimeError) as exc:
                raise ModelError(f"could not load guard model {self.model_path}: {exc}") from exc
            log.info("loaded guard model %s in %.2f s", self.model_path.name,
                     time.perf_counter() - started)
        return self._llama

    def complete(self, prompt: str) -> str:
        """The model's continuation of ``prompt`` (special tokens in it are parsed as such)."""
        with self._lock:
            llama = self._load()
            # The prompt starts with <|begin_of_text|> itself: no second BOS.
            tokens = llama.tokenize(prompt.encode(), add_bos=False, special=True)
            room = self.context_size - MAX_TOKENS
            if len(tokens) > room:  # keep the head (task, categories) and the tail (question)
                tokens = tokens[:room // 2] + tokens[-(room - room // 2):]
            result = llama.create_completion(tokens, max_tokens=MAX_TOKENS, temperature=0.0,
                                             top_k=1, stream=False)
        return str(result["choices"][0]["text"])


_models: dict[tuple[Path, int], GuardModel] = {}
_models_lock = threading.Lock()


def guard_completion(settings: Settings) -> Callable[[str], str]:
    """The ``complete`` function for :class:`LlamaGuardJudge`, from the guard settings."""
    if not settings.guard_model:
        raise ModelError(
            "the safety policy lists llm_judge but no guard model is set: "
            "point ASSISTANT_GUARD_MODEL at a Llama Guard 3 GGUF"
        )
    path = resolve_model_path(settings.guard_model, settings.models_dir)
    key = (path, settings.guard_threads)
    with _models_lock:
        if key not in _models:
            _models[key] = GuardModel(path, settings.guard_threads)
        model = _models[key]
    return model.complete
