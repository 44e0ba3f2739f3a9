"""Small deterministic checks for testing the chain, the policy and the service."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from assistant.safety.verdict import Action, Category, Direction, Subject, Verdict


def plain_subject(text: str, direction: Direction) -> Subject:
    return Subject(text=text, normalized=text.casefold(), direction=direction)


@dataclass
class WordCheck:
    """Blocks (or proposes ``action``) when ``word`` appears; records what it saw."""

    name: str
    word: str
    category: Category
    action: Action = Action.BLOCK
    seen: list[str] = field(default_factory=list)

    def inspect(self, subject: Subject) -> Verdict:
        self.seen.append(subject.text)
        if self.word in subject.normalized:
            return Verdict(self.action, self.name, self.category, 0.9, reason="word",
                           excerpt=self.word)
        return Verdict.allow(self.name)


@dataclass
class DigitsMask:
    """Masks runs of 6+ digits as [number] (a stand-in for the PII check)."""

    name: str = "digits"
    seen: list[str] = field(default_factory=list)

    def inspect(self, subject: Subject) -> Verdict:
        self.seen.append(subject.text)
        masked = re.sub(r"\d{6,}", "[number]", subject.text)
        if masked == subject.text:
            return Verdict.allow(self.name)
        return Verdict(Action.MASK, self.name, Category.PII, masked=masked, excerpt="[number]")


class Exploding:
    name = "exploding"

    def inspect(self, subject: Subject) -> Verdict:
        raise RuntimeError("classifier crashed")
