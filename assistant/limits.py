"""Fairness: rate limits and daily token quotas in Redis (to be built: issue 7)."""

from __future__ import annotations

import redis

from assistant.observe import TurnObserver, TurnStats
from assistant.settings import Settings


def quota_observer(client: redis.Redis, settings: Settings) -> TurnObserver:
    """Counts each user's generated tokens per day (placeholder until quotas exist)."""

    def record(stats: TurnStats) -> None:
        return None

    return record
