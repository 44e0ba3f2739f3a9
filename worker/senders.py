"""The platform senders a worker posts replies with, one per configured platform."""

from __future__ import annotations

import redis

from assistant.delivery import Sender
from assistant.settings import Settings


def build_senders(settings: Settings, client: redis.Redis) -> dict[str, Sender]:
    """Slack and Telegram senders for the platforms whose bot tokens are set."""
    senders: dict[str, Sender] = {}
    if settings.slack_bot_token:
        from integrations.slack.sender import make_sender as slack_sender

        senders["slack"] = slack_sender(settings, client)
    if settings.telegram_bot_token:
        from integrations.telegram.sender import make_sender as telegram_sender

        senders["telegram"] = telegram_sender(settings, client)
    return senders
