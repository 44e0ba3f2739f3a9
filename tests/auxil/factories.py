"""Factories for envelopes used across the tests."""

from __future__ import annotations

import uuid

from assistant.envelope import ChatMessage, ConversationKey, Inbound


def conversation(channel: str = "c1", platform: str = "web") -> ConversationKey:
    return ConversationKey(platform=platform, channel=channel)


def inbound(text: str, channel: str = "c1", *, history: list[ChatMessage] | None = None,
            message_id: str | None = None) -> Inbound:
    message_id = message_id or uuid.uuid4().hex
    return Inbound(
        message_id=message_id,
        dedupe_id=f"test:{message_id}",
        conversation=conversation(channel),
        user_id="u1",
        text=text,
        history=tuple(history) if history is not None else None,
    )
