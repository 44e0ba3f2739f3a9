"""Does an API request fit the model's context? Answered at the edge, before anything is queued.

Counted exactly as the engine will read the prompt (``worker.llama.template_tokens``: the
GGUF's own chat template rendered, control-token text in messages broken up as the engine does,
the whole prompt tokenized), with the GGUF's vocabulary loaded alone (``vocab_only``: ~0.2 s
once, a few MB, no context). A count per message plus a fixed template overhead would not do:
it undercounts a hostile history (ChatML's "assistant" is two tokens, not one; each
``<|im_start|>`` typed in a message costs two tokens more once broken up), and an over-long
prompt would reach the worker, fail there and be retried (issue 19). Without the template
(another chat format), the per-message count stands in. When the web host has no model file,
a safe bound stands in: a byte-level BPE token holds at least one byte, so a message never
takes more tokens than its UTF-8 bytes (+1 for a tokenizer's leading-space piece). The bound is
also the fast path: a request that fits by bytes is never tokenized.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from assistant.envelope import ChatMessage
from assistant.errors import AssistantError, ContextLengthExceeded
from assistant.models import resolve_model_path
from assistant.pipeline import CONTEXT_MARGIN_TOKENS
from worker.control_tokens import ControlTokenText, control_token_text
from worker.llama import (
    GENERATION_PROMPT_TOKENS,
    TEMPLATE_TOKENS_PER_MESSAGE,
    chat_formatter,
    count_message_tokens,
    raw_tokens,
    template_tokens,
    tool_format,
)

log = logging.getLogger(__name__)


class PromptCounter:
    """Counts prompt tokens with the served model's tokenizer (loaded on first need)."""

    def __init__(self, model_path: Path | None) -> None:
        self.model_path = model_path
        self._vocab: Any = None
        self._formatter: Any = None
        self._tool_format: str | None = None
        self._control = ControlTokenText(())
        self._failed = False
        self._lock = threading.Lock()

    def _tokenizer(self) -> Any:
        with self._lock:
            if self._vocab is None and not self._failed:
                if self.model_path is None or not self.model_path.is_file():
                    self._failed = True
                    log.info("no model file on this host: API prompts are sized by bytes")
                    return None
                try:
                    from llama_cpp import Llama

                    vocab = Llama(model_path=str(self.model_path), vocab_only=True,
                                  verbose=False)
                    self._formatter = chat_formatter(vocab)
                    if self._formatter is not None:
                        self._tool_format = tool_format(vocab)
                    self._control = control_token_text(vocab)
                    self._vocab = vocab
                except (ValueError, RuntimeError, OSError):
                    self._failed = True
                    log.warning("could not load the model's vocabulary; sizing by bytes",
                                exc_info=True)
            return self._vocab

    @property
    def known(self) -> bool:
        """Whether the model's tokenizer and template are at hand (else: bytes bound)."""
        return self._tokenizer() is not None

    @property
    def tool_format(self) -> str | None:
        """The chat template's own tool format, as the worker renders tools (None: none, or
        unknown when not ``known``)."""
        self._tokenizer()
        return self._tool_format

    @property
    def n_vocab(self) -> int | None:
        vocab = self._tokenizer()
        return None if vocab is None else int(vocab.n_vocab())

    @staticmethod
    def upper_bound(messages: Sequence[ChatMessage], raw: bool = False) -> int:
        """Never fewer than the tokens these messages take (bytes bound, see the module)."""
        if raw:  # BOS, then the text
            return 2 + len(messages[-1].text.encode())
        return GENERATION_PROMPT_TOKENS + sum(
            len(m.text.encode()) + 1 + TEMPLATE_TOKENS_PER_MESSAGE
            + sum(len(c.name) + len(c.arguments.encode()) + 2 for c in m.tool_calls)
            # A template's own tool format: each tool's JSON (indented), the lines around it.
            + sum(len(json.dumps(t.model_dump(), indent=4).encode()) * 2 + 16
                  for t in m.tools) + (256 if m.tools else 0)
            for m in messages)

    def count(self, messages: Sequence[ChatMessage], raw: bool = False) -> int:
        """The tokens as the worker counts them, or the bytes bound without a tokenizer
        (``raw``: the last message's text is the whole prompt, the legacy completions)."""
        vocab = self._tokenizer()
        if vocab is None:
            return self.upper_bound(messages, raw)
        if raw:
            return len(raw_tokens(vocab, messages[-1].text))
        if self._formatter is not None:
            return len(template_tokens(vocab, self._formatter, self._control, messages))
        return count_message_tokens(vocab, messages, self._control)

    def reply_tokens(self, messages: Sequence[ChatMessage], context_size: int,
                     asked: int | None, default: int, raw: bool = False) -> int:
        """How many tokens the reply may take, or ``ContextLengthExceeded`` (OpenAI's 400).

        ``asked`` (the client's max_tokens, already clamped) must fit beside the prompt; with
        none, the reply gets the default or what is left, as OpenAI gives what is left.
        ``CONTEXT_MARGIN_TOKENS`` stay free for what the worker adds (a canary line, an
        admin's newer persona).
        """
        wanted = asked or 1
        prompt = self.upper_bound(messages, raw)
        if prompt + wanted + CONTEXT_MARGIN_TOKENS > context_size:
            prompt = self.count(messages, raw)
        room = context_size - prompt - CONTEXT_MARGIN_TOKENS
        if wanted > room:
            asked_text = f"{asked} in the completion" if asked else "at least 1 for the reply"
            raise ContextLengthExceeded(
                f"This model's maximum context length is {context_size} tokens. However, "
                f"you requested {prompt + wanted + CONTEXT_MARGIN_TOKENS} tokens ({prompt} in "
                f"the messages, {asked_text}, {CONTEXT_MARGIN_TOKENS} kept for the server's "
                "own instructions). Please reduce the length of the messages or completion.")
        return asked if asked else min(default, room)


@lru_cache(maxsize=4)
def counter_for(model: str, models_dir: Path) -> PromptCounter:
    """The counter of the served model (``ASSISTANT_MODEL`` in ``ASSISTANT_MODELS_DIR``),
    one per process; without the file here, prompts are sized by their bytes."""
    try:
        path: Path | None = resolve_model_path(model, models_dir)
    except AssistantError:
        path = None
    return PromptCounter(path)
