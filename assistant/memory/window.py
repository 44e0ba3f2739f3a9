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


# ``trim_messages`` under langchain's decorator that also lets it build a Runnable: the
# decorator imports langchain_core.runnables on every call (and with it langsmith's tracers,
# +16 MB of memory in each worker process); called with the messages, it only calls this.
_trim_messages = getattr(trim_messages, "__wrapped__", trim_messages)


def build_window(
    records: Sequence[ChatMessage],
    summary: Summary,
    budget_tokens: int,
    count_tokens: TokenCounter,
    step_tokens: int | None = None,
) -> PromptWindow:
    """Keep the newest messages after the summary that fit ``budget_tokens``.

    Trimming uses langchain-core's ``trim_messages`` (strategy "last", starting on a user
    message so the window never opens with a dangling assistant reply).

    When messages must be left out, the window opens at a *stable cut*: the first user message
    after each ``step_tokens`` (default a quarter of the budget) of the conversation since the
    summary. Cuts depend only on older messages, so the window's first message — and with it
    the prompt's token prefix, which the worker's saved model state reuses — changes once per
    step, not every turn (worker/kvcache.py, docs/scaling.md).
    """
    candidates = [to_langchain(m) for m in records[summary.covers :]]

    def counter(messages: list[BaseMessage]) -> int:
        return count_tokens([from_langchain(m) for m in messages])

    kept = _trim_messages(
        candidates,
        max_tokens=max(budget_tokens, 0),
        token_counter=counter,
        strategy="last",
        start_on="human",
        allow_partial=False,
    )
    start = len(candidates) - len(kept)
    if start > 0:
        start = _stable_cut(records[summary.covers :], start, count_tokens,
                            step_tokens or max(budget_tokens // 4, 1))
    kept_messages = tuple(records[summary.covers + start :])
    return PromptWindow(summary=summary.text, messages=kept_messages, left_out=start)


def _stable_cut(
    messages: Sequence[ChatMessage], earliest: int, count_tokens: TokenCounter, step: int
) -> int:
    """The first cut at or after ``earliest``; ``earliest`` itself if there is none.

    A cut is the first user message after the conversation so far has passed another multiple
    of ``step`` tokens: it depends only on the messages before it, so it never moves.
    """
    last_level = -1
    total = 0
    for index, message in enumerate(messages):
        level = total // step
        if message.role == "user" and level > last_level:
            last_level = level
            if index >= earliest:
                return index
        total += count_tokens([message])
    return earliest


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
