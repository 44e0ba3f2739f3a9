"""The platform senders a worker posts replies with, one per configured platform.

Each platform registers a factory under the ``assistant.senders`` entry point group
(pyproject.toml): ``factory(settings, client) -> Sender | None`` (None: that platform is not
configured here). The worker finds them through the installed package's metadata, so it
imports no platform module (issue 14: no import from ``worker`` into ``integrations``); a
third-party package can add a platform the same way.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import redis

from assistant.delivery import Sender
from assistant.settings import Settings

GROUP = "assistant.senders"


def build_senders(settings: Settings, client: redis.Redis) -> dict[str, Sender]:
    """The senders of the platforms configured on this host, by platform name."""
    senders: dict[str, Sender] = {}
    for entry in entry_points(group=GROUP):
        sender = entry.load()(settings, client)
        if sender is not None:
            senders[entry.name] = sender
    return senders
