"""What a message asks of the long-term memory, if anything: pure parsing, no I/O.

Explicit only (docs/memory.md): "remember that …", "remember: …", "/remember …"; "/memory"
lists; "/forget N" and "/forget all" delete. A question ("remember that film?") is not a
command, nor is "remember when …": only a statement the person plainly asks to keep.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

_REMEMBER = re.compile(
    r"^\s*(?:please\s+|hey\s+|ok\s+|okay\s+)?"
    r"(?:/remember(?:@\w+)?\s*:?|remember\s*:|remember\s+that|remember\s+(?=(?:i|i'm|i've|"
    r"i'd|my|me|mine|we|our)\b))\s*(?P<fact>.*)$",
    re.IGNORECASE | re.DOTALL,
)
_LIST = re.compile(r"^\s*/memor(?:y|ies)(?:@\w+)?\s*$", re.IGNORECASE)
_FORGET = re.compile(r"^\s*/forget(?:@\w+)?\s+(?P<which>\d{1,6}|all)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Command:
    kind: Literal["remember", "list", "forget"]
    fact: str = ""  # remember: the words to keep
    number: int | None = None  # forget: the number ``/memory`` showed; None with ``every``
    every: bool = False  # forget all


def parse(text: str) -> Command | None:
    """The memory command in ``text``, or None for an ordinary message."""
    if _LIST.match(text):
        return Command("list")
    forget = _FORGET.match(text)
    if forget:
        which = forget.group("which").lower()
        return Command("forget", every=True) if which == "all" else \
            Command("forget", number=int(which))
    remember = _REMEMBER.match(text)
    if remember:
        fact = remember.group("fact").strip()
        if fact.endswith("?"):
            return None  # "remember that song?": a question, not something to keep
        return Command("remember", fact=fact)
    return None
