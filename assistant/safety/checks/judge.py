"""An optional LLM judge: a Llama Guard 3 model asked in its own prompt format.

The prompt follows the Llama Guard 3 model card (meta-llama/PurpleLlama, Llama-Guard3; the
prompt-format page of its documentation): a Llama 3 user turn holding the task, the S1–S14
category list, the conversation, and the instruction to answer ``safe`` or ``unsafe`` with a
second line of comma-separated categories; then the assistant header, where the model answers.
``complete`` is any raw-completion function (``worker/guard.py`` runs a guard GGUF through
llama.cpp); the judge never raises. When the guard fails or answers something it cannot read,
the text passes by default, or is blocked with ``fail_closed`` (``ASSISTANT_GUARD_FAIL_CLOSED``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence

from assistant.safety.verdict import Action, Category, Subject, Verdict

log = logging.getLogger(__name__)

Complete = Callable[[str], str]

# The categories as Llama Guard 3's prompt names them (short titles, each ending with a dot).
GUARD_CATEGORIES: tuple[tuple[str, str], ...] = (
    ("S1", "Violent Crimes."), ("S2", "Non-Violent Crimes."), ("S3", "Sex Crimes."),
    ("S4", "Child Exploitation."), ("S5", "Defamation."), ("S6", "Specialized Advice."),
    ("S7", "Privacy."), ("S8", "Intellectual Property."), ("S9", "Indiscriminate Weapons."),
    ("S10", "Hate."), ("S11", "Self-Harm."), ("S12", "Sexual Content."), ("S13", "Elections."),
    ("S14", "Code Interpreter Abuse."),
)

_PROMPT = (
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
    "Task: Check if there is unsafe content in '{role}' messages in conversations according "
    "our safety policy with the below categories.\n\n"
    "<BEGIN UNSAFE CONTENT CATEGORIES>\n{categories}\n<END UNSAFE CONTENT CATEGORIES>\n\n"
    "<BEGIN CONVERSATION>\n\n{conversation}\n\n<END CONVERSATION>\n\n"
    "Provide your safety assessment for ONLY THE LAST {role} message in the above "
    "conversation:\n"
    " - First line must read 'safe' or 'unsafe'.\n"
    " - If unsafe, a second line must include a comma-separated list of violated categories."
    "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
)
# Llama 3 special tokens inside a message would let it forge the prompt's structure (the guard
# tokenises the whole prompt with special tokens parsed, worker/guard.py). Every Llama 3
# special token is <|lower_case_or_digits|> (<|reserved_special_token_7|> too); upper case is
# matched as well, in case a guard vocabulary has it.
_SPECIAL = re.compile(r"<\|[A-Za-z0-9_]+\|>")


def strip_special(text: str) -> str:
    """``text`` without special-token markup, removed until none is left.

    One pass is not enough: removing the inner token of ``<|<|eot_id|>eot_id|>`` joins the
    outer pieces into a new ``<|eot_id|>``.
    """
    while True:
        stripped = _SPECIAL.sub("", text)
        if stripped == text:
            return text
        text = stripped


def build_prompt(turns: Sequence[tuple[str, str]],
                 categories: Sequence[tuple[str, str]] = GUARD_CATEGORIES) -> str:
    """Llama Guard 3's prompt for a conversation of ("User"|"Agent", text) turns.

    The last turn is the one judged: a user message (input) or the agent's reply (output).
    """
    if not turns:
        raise ValueError("nothing to judge")
    role = turns[-1][0]
    conversation = "\n\n".join(f"{speaker}: {strip_special(text).strip()}"
                               for speaker, text in turns)
    listed = "\n".join(f"{code}: {title}" for code, title in categories)
    return _PROMPT.format(role=role, categories=listed, conversation=conversation)


def parse_answer(answer: str) -> tuple[bool, list[Category]] | None:
    """``(unsafe, categories)`` from the guard's answer, or ``None`` when it is neither."""
    lines = [line.strip() for line in answer.strip().splitlines() if line.strip()]
    if not lines:
        return None
    first = lines[0].lower().rstrip(".")
    if first == "safe":
        return False, []
    if first != "unsafe":
        return None
    codes = re.findall(r"\bS(\d{1,2})\b", " ".join(lines[1:2]), flags=re.IGNORECASE)
    found = [Category(f"S{int(code)}") for code in codes if 1 <= int(code) <= 14]
    return True, list(dict.fromkeys(found))


class LlamaGuardJudge:
    """Asks a Llama Guard 3 model whether the text is safe (off unless a guard model is set)."""

    name = "llm_judge"

    def __init__(self, complete: Complete, fail_closed: bool = False) -> None:
        self.complete = complete
        # A judge that cannot answer: let the text through (the other checks still ran), or
        # block it, for deployments where an unjudged text must not reach the model or a user.
        self.fail_closed = fail_closed

    def _unjudged(self, reason: str) -> Verdict:
        action = Action.BLOCK if self.fail_closed else Action.ALLOW
        return Verdict(action, self.name, reason=reason)

    def inspect(self, subject: Subject) -> Verdict:
        role = "User" if subject.direction == "input" else "Agent"
        try:
            answer = self.complete(build_prompt([(role, subject.text)]))
        except Exception as exc:  # a check never raises: the policy decides what passes
            log.exception("guard model failed (fail closed: %s)", self.fail_closed)
            return self._unjudged(f"guard model failed: {exc.__class__.__name__}")
        parsed = parse_answer(answer)
        if parsed is None:
            log.warning("unreadable guard answer %r (fail closed: %s)", answer[:80],
                        self.fail_closed)
            return self._unjudged(f"unreadable answer: {answer[:40]!r}")
        unsafe, categories = parsed
        if not unsafe:
            return Verdict.allow(self.name)
        category = categories[0] if categories else Category.NON_VIOLENT_CRIMES
        codes = ",".join(c.value for c in categories) or "no category given"
        return Verdict(Action.BLOCK, self.name, category, score=1.0,
                       reason=f"Llama Guard: unsafe ({codes})", excerpt=subject.normalized[:80])
