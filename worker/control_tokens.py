"""Message text never becomes a control token, whatever the chat template (issue 15, item 2).

llama-cpp-python renders the GGUF's chat template and tokenises the whole prompt with
special-token parsing on (``llama_chat_format.chat_formatter_to_chat_completion_handler``), so
``<|eot_id|>`` or ``<|im_start|>`` typed by a user, or kept in the history, a summary or a
document, would reach the model as the real token and forge a turn. So before rendering, every
occurrence in a message of a control token's text gets a WORD JOINER (U+2060, invisible) after
its first character: it is read as ordinary text, and the template's own markers stay the only
control tokens. The list is the model's own: the tokens llama.cpp parses only with special
parsing on (attribute CONTROL or UNKNOWN; ``llama-vocab.cpp``, ``tokenizer_st_partition``), so
it covers ChatML, Llama 3, Gemma, Mistral and any other vocabulary alike. What is stored and
shown is never changed: only the model's copy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

WORD_JOINER = "\u2060"


class ControlTokenText:
    """Finds and neutralises the text of a vocabulary's control tokens."""

    def __init__(self, texts: Iterable[str]) -> None:
        # One character cannot be split; a text holding the joiner could be re-formed by it.
        usable = sorted({t for t in texts if len(t) >= 2 and WORD_JOINER not in t},
                        key=lambda t: (-len(t), t))
        self.texts = tuple(usable)
        # Longest first, so a token whose text contains another's is matched whole.
        self._pattern = re.compile("|".join(map(re.escape, usable))) if usable else None

    def find(self, text: str) -> list[str]:
        """The control-token texts in ``text``, in order."""
        return self._pattern.findall(text) if self._pattern is not None else []

    def neutralise(self, text: str) -> str:
        """``text`` with every control-token text broken by a word joiner."""
        if self._pattern is None:
            return text
        # Inserting the joiner cannot form a new match (no text in the list contains it), so
        # one pass is the fixed point; the loop only proves it.
        while True:
            changed = self._pattern.sub(lambda m: m.group(0)[0] + WORD_JOINER + m.group(0)[1:],
                                        text)
            if changed == text:
                return text
            text = changed


def control_token_text(llama: Any) -> ControlTokenText:
    """The control tokens of a loaded ``llama_cpp.Llama``'s vocabulary."""
    model = llama._model
    return ControlTokenText(model.token_get_text(token) for token in control_token_ids(llama))


def control_token_ids(llama: Any) -> list[int]:
    """The ids of a loaded ``llama_cpp.Llama``'s control tokens: in a prompt (where message
    text cannot form them) they come from the chat template alone, so they mark where its
    messages begin and end (the state store's boundaries, worker/llama.py)."""
    import llama_cpp

    model = llama._model
    wanted = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
    return [token for token in range(model.n_vocab())
            if llama_cpp.llama_vocab_get_attr(model.vocab, token) & wanted]
