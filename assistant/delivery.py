"""Handing a finished reply to its platform: exactly once per reply id.

The reply is stored (``assistant.stream.Publisher.done``) before delivery; delivery is keyed by
the reply id, so a rerun after a crash never posts twice. Platform senders (Slack, Telegram)
implement ``Sender``; the web needs none, since its listeners get the ``done`` event.
"""

from __future__ import annotations

from typing import Protocol

import redis

from assistant.envelope import Reply

PREFIX = "assistant"
DELIVERED_TTL_SECONDS = 7 * 86400


class Sender(Protocol):
    """Posts a reply where it belongs on one platform."""

    def deliver(self, reply: Reply) -> None: ...


def claim_delivery(client: redis.Redis, reply_id: str) -> bool:
    """True for the first caller only: that caller posts the reply."""
    return bool(client.set(f"{PREFIX}:delivered:{reply_id}", "1", nx=True,
                           ex=DELIVERED_TTL_SECONDS))


def release_delivery(client: redis.Redis, reply_id: str) -> None:
    """Undo a claim whose delivery failed, so a retry may post it."""
    client.delete(f"{PREFIX}:delivered:{reply_id}")
