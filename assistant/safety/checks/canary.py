"""The system prompt must not leak: a canary planted in it, and the persona's own sentences.

The canary is a random token the system prompt carries (``prompts/canary.toml``); no honest
answer contains it. Long verbatim runs of the persona's words (``SHINGLE_WORDS`` in a row) are
caught too, for a model that paraphrases around the canary but quotes the rest.
"""

from __future__ import annotations

import re
import secrets

from assistant.safety.verdict import Action, Category, Subject, Verdict

SHINGLE_WORDS = 9
_WORD = re.compile(r"[a-z0-9']+")
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")


def new_canary() -> str:
    """A fresh canary: unguessable, and not a word any model writes by chance."""
    return f"zx-{secrets.token_hex(6)}"


def _words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


def _compact(text: str) -> str:
    return _NOT_ALNUM.sub("", text.casefold())


class CanaryCheck:
    name = "canary"

    def __init__(self, canary: str, protected: str = "") -> None:
        if len(canary) < 8:
            raise ValueError("a canary needs at least 8 characters")
        self.canary = _compact(canary)
        words = _words(protected)
        self.shingles = {
            tuple(words[i : i + SHINGLE_WORDS]) for i in range(len(words) - SHINGLE_WORDS + 1)
        }

    def inspect(self, subject: Subject) -> Verdict:
        # Raw text as well as the normalised views: normalisation folds digits that look like
        # letters, and the canary is matched spelled out, spaced out or in any case.
        for view in (subject.text, *subject.views):
            if self.canary in _compact(view):
                return Verdict(Action.BLOCK, self.name, Category.SYSTEM_PROMPT_LEAK, 1.0,
                               reason="the reply contains the system prompt's canary",
                               excerpt="[canary]")
        if self.shingles:
            words = _words(subject.text)
            for i in range(len(words) - SHINGLE_WORDS + 1):
                if tuple(words[i : i + SHINGLE_WORDS]) in self.shingles:
                    return Verdict(Action.BLOCK, self.name, Category.SYSTEM_PROMPT_LEAK, 1.0,
                                   reason="the reply quotes the system prompt",
                                   excerpt=" ".join(words[i : i + SHINGLE_WORDS]))
        return Verdict.allow(self.name)
