"""What a safety check says about a text, and the categories it can say it in.

Categories follow the MLCommons hazard taxonomy as Llama Guard 3 uses it (S1–S14; see the
Llama Guard 3 model card), plus three of our own: ``prompt_injection``, ``pii`` and
``system_prompt_leak``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, Protocol

Direction = Literal["input", "output"]


class Action(StrEnum):
    """What happens to a text: ordered from mildest to strictest."""

    ALLOW = "allow"
    FLAG = "flag"  # let it through, but log it for the admins
    MASK = "mask"  # redact the matched spans and go on
    BLOCK = "block"  # stop: the user sees a refusal or notice instead

    @property
    def severity(self) -> int:
        return list(Action).index(self)


class Category(StrEnum):
    VIOLENT_CRIMES = "S1"
    NON_VIOLENT_CRIMES = "S2"
    SEX_CRIMES = "S3"
    CHILD_EXPLOITATION = "S4"
    DEFAMATION = "S5"
    SPECIALIZED_ADVICE = "S6"
    PRIVACY = "S7"
    INTELLECTUAL_PROPERTY = "S8"
    INDISCRIMINATE_WEAPONS = "S9"
    HATE = "S10"
    SELF_HARM = "S11"
    SEXUAL_CONTENT = "S12"
    ELECTIONS = "S13"
    CODE_INTERPRETER_ABUSE = "S14"
    PROMPT_INJECTION = "prompt_injection"
    PII = "pii"
    SYSTEM_PROMPT_LEAK = "system_prompt_leak"

    @property
    def label(self) -> str:
        return CATEGORY_TITLES[self]


CATEGORY_TITLES: dict[Category, str] = {
    Category.VIOLENT_CRIMES: "Violent Crimes",
    Category.NON_VIOLENT_CRIMES: "Non-Violent Crimes",
    Category.SEX_CRIMES: "Sex-Related Crimes",
    Category.CHILD_EXPLOITATION: "Child Sexual Exploitation",
    Category.DEFAMATION: "Defamation",
    Category.SPECIALIZED_ADVICE: "Specialized Advice",
    Category.PRIVACY: "Privacy",
    Category.INTELLECTUAL_PROPERTY: "Intellectual Property",
    Category.INDISCRIMINATE_WEAPONS: "Indiscriminate Weapons",
    Category.HATE: "Hate",
    Category.SELF_HARM: "Suicide & Self-Harm",
    Category.SEXUAL_CONTENT: "Sexual Content",
    Category.ELECTIONS: "Elections",
    Category.CODE_INTERPRETER_ABUSE: "Code Interpreter Abuse",
    Category.PROMPT_INJECTION: "Prompt Injection",
    Category.PII: "Personal Data",
    Category.SYSTEM_PROMPT_LEAK: "System Prompt Leak",
}


@dataclass(frozen=True)
class Subject:
    """The text a check inspects, in the forms checks need.

    ``text`` is what the user (or the model) wrote, after earlier checks' masks. ``normalized``
    is the same text with encoding tricks undone (NFKC, zero-width and control characters
    dropped, homoglyphs folded, case folded, whitespace collapsed); content checks match on it.
    ``decoded`` holds payloads found hidden in encodings (base64, hex, rot13, leetspeak, ...),
    already normalised; content checks look at them too.
    """

    text: str
    normalized: str
    direction: Direction
    decoded: tuple[str, ...] = ()

    @property
    def views(self) -> tuple[str, ...]:
        """Every form a content check should look at: the normalised text, then decodings."""
        return (self.normalized, *self.decoded)


@dataclass(frozen=True)
class Verdict:
    """One check's finding. ``allow`` verdicts carry no category.

    ``masked`` is the text with this check's redactions applied (only for ``mask``), ``score``
    the classifier's confidence when there is one, ``excerpt`` a short redacted piece of the
    text that tripped the check, for the moderation log.
    """

    action: Action
    check: str
    category: Category | None = None
    score: float | None = None
    masked: str | None = None
    reason: str = ""
    excerpt: str = ""

    @classmethod
    def allow(cls, check: str) -> Verdict:
        return cls(Action.ALLOW, check)


class Check(Protocol):
    """One small check: a name (used in configuration) and an ``inspect`` that never raises
    on odd input. It proposes an action; the policy decides what each category does."""

    name: str

    def inspect(self, subject: Subject) -> Verdict: ...

