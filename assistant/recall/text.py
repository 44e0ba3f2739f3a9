"""A memory is one short line of the person's own words: never a role, never a control token.

``clean_fact`` runs before a memory is stored (after the input safety checks screened and
masked it) and again when a memory enters the prompt, so an old row or a hand-edited one is
held to the same rule. The engine breaks up control-token text in every message besides
(worker/control_tokens.py); this is the memory's own, model-independent layer.
"""

from __future__ import annotations

import re
import unicodedata

from assistant.errors import InputRejected

MAX_FACT_CHARS = 300

# Chat-template markers of the common families: ChatML and most "<|...|>" vocabularies
# (Llama 3, Phi, Qwen), Llama 2 / Mistral ([INST], <<SYS>>, <s>), Gemma's turns, "### X:" and
# "<X>" headers of instruction-tuned formats.
_TEMPLATE_TOKENS = re.compile(
    r"(?:<\|[^<>|]{0,40}\|>"
    r"|</?s>"
    r"|\[/?(?:INST|SYS|SYSTEM_PROMPT|TOOL_CALLS|AVAILABLE_TOOLS|TOOL_RESULTS)\]"
    r"|<</?SYS>>"
    r"|<(?:start|end)_of_turn>"
    r"|</?(?:system|assistant|user|bos|eos|pad|unk|im_start|im_end|endoftext)>"
    r"|#{2,}\s*(?:instruction|system|response|assistant|user|input)s?\s*:?)"
    # and the role name a header marker opens ("<|im_start|>system")
    r"(?:\s*(?:system|assistant|user|developer|tool|model)\b\s*:?)?",
    re.IGNORECASE,
)
# A role label at the start of the text ("system: ...", "Assistant - ...").
_ROLE_LABEL = re.compile(r"^\s*(?:system|assistant|user|human|ai|bot|developer|tool)"
                         r"[ \t]*(?:[:>\-]|\n)\s*", re.IGNORECASE)
_INVISIBLE = re.compile("[\u00ad\u034f\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f"
                        "\ufeff\U000e0000-\U000e007f]")
_SPACES = re.compile(r"\s+")
_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")

# Words too common to tell memories apart (BM25's side of the search).
STOPWORDS = frozenset("""
a about am an and are as at be been but by can could did do does for from had has have i i'd
i'll i'm i've if in into is it it's its me my myself of on or our so than that the their them
then there these they this to too was we were what when where which who whom why will with
would you your yours please remember know tell told called named name
""".split())


def clean_fact(text: str) -> str:
    """The text as one safe line; ``InputRejected`` when nothing is left or it is too long."""
    cleaned = unicodedata.normalize("NFKC", text)
    cleaned = _INVISIBLE.sub("", cleaned)
    cleaned = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in cleaned)
    previous = None
    while previous != cleaned:  # removing one marker must not form another
        previous = cleaned
        cleaned = _TEMPLATE_TOKENS.sub(" ", cleaned)
        cleaned = _ROLE_LABEL.sub("", cleaned)
    cleaned = _SPACES.sub(" ", cleaned).strip()
    if not cleaned:
        raise InputRejected("there is nothing to remember in that")
    if len(cleaned) > MAX_FACT_CHARS:
        raise InputRejected(f"a memory is one short fact: at most {MAX_FACT_CHARS} characters "
                            f"(this one has {len(cleaned)})")
    return cleaned


def quoted(fact: str) -> str:
    """The fact as the prompt shows it: one quoted line that it cannot close early."""
    try:
        safe = clean_fact(fact)
    except InputRejected:
        return ""
    return "\u201c" + safe.replace("\u201d", "'").replace("\u201c", "'") + "\u201d"


def words(text: str) -> list[str]:
    """Lower-cased words without stopwords, lightly stemmed (plural and -ing endings)."""
    found = []
    for word in _WORD.findall(text.lower().replace("\u2019", "'")):
        if word in STOPWORDS:
            continue
        found.append(stem(word))
    return found


def stem(word: str) -> str:
    if len(word) > 5 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 5 and word.endswith("ing"):
        return word[:-3]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    if word.endswith("'s"):
        return word[:-2]
    return word
