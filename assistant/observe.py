"""What a finished turn reports to whoever watches (metrics, quotas), without knowing them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from assistant.envelope import ConversationKey, Inbound, Reply

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TurnStats:
    """One answered turn, as the worker saw it."""

    platform: str
    workspace: str
    channel: str
    user_id: str
    messages: int  # inbound messages answered together
    generated: bool  # False when a stored reply was sent again after a crash
    queue_wait_s: float  # first message received → turn started
    ttft_s: float | None  # turn started → first token (None when nothing was generated)
    total_s: float  # turn started → reply delivered
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    # What was said, for the archive (assistant.store.recorder): the user messages as answered
    # (PII already masked by the input checks) and the reply as delivered.
    conversation: ConversationKey | None = field(default=None, compare=False)
    inbounds: tuple[Inbound, ...] = field(default=(), compare=False)
    reply: Reply | None = field(default=None, compare=False)
    persona_version: int | None = None  # the system prompt's saved version (None: the file)


TurnObserver = Callable[[TurnStats], None]


def notify(observers: Sequence[TurnObserver], stats: TurnStats) -> None:
    """Tell every observer; one failing observer never fails the turn."""
    for observer in observers:
        try:
            observer(stats)
        except Exception:
            log.warning("turn observer %r failed", observer, exc_info=True)
