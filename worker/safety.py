"""Build the worker's safety service from settings (assistant/safety; docs/safety.md)."""

from __future__ import annotations

from typing import Any

import redis

from assistant.settings import Settings


def build_safety(settings: Settings, client: redis.Redis) -> Any:
    """The safety service every turn goes through; ``None`` when safety is turned off."""
    return None
