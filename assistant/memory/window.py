"""Fit a conversation into the model's context: summary + the most recent turns verbatim."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from langchain_core.messages import BaseMessage, trim_messages

from assistant.envelope import ChatMessage
from assistant.memory.history import Summary, from_langchain, to_langchain

TokenCounter = Callable[[Sequence[ChatMessage]], int]


@dataclass(frozen=True)
class PromptWindow:
    """What goes into the prompt, and how many unsummarised messages did not fit."""

    summary: str
    messages: tuple[ChatMessage, ...]
    left_out: int  # stored messages newer than the summary that the window could not hold


def build_window(
    records: Sequence[ChatMessage],
    summary: Summary,
    budget_tokens: int,
    count_tokens: TokenCounter,
) -> PromptWindow:
    """Keep the newest messages after the summary that fit ``budget_tokens``.

    Trimming uses langchain-core's ``trim_messages`` (strategy "last", starting on a user
    message so the window never opens with a dangling assistant reply).
    """
    candidates = [to_langchain(m) for m in records[summary.covers :]]

    def counter(messages: list[BaseMessage]) -> int:
        return count_tokens([from_langchain(m) for m in messages])

    kept = trim_messages(
        candidates,
        max_tokens=max(budget_tokens, 0),
        token_counter=counter,
        strategy="last",
        start_on="human",
        allow_partial=False,
    )
    kept_messages = tuple(records[summary.covers + len(candidates) - len(kept) :])
    return PromptWindow(
        summary=summary.text, messages=kept_messages, left_out=len(candidates) - len(kept)
    )


def needs_summary(
    records: Sequence[ChatMessage],
    summary: Summary,
    budget_tokens: int,
    count_tokens: TokenCounter,
    high_water: float = 0.75,
) -> int:
    """How many of the oldest unsummarised messages to fold into the summary now (0: none).

    Folding starts once the unsummarised part passes ``high_water`` of the budget, and takes
    the older half (whole user/assistant pairs), so it runs in large steps, not every turn.
    """
    pending = list(records[summary.covers :])
    if len(pending) < 4 or count_tokens(pending) <= budget_tokens * high_water:
        return 0
    fold = len(pending) // 2
    if fold % 2:
        fold -= 1
    return max(fold, 2)
