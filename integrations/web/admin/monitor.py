"""Live health: the queue from Redis and the dashboard's numbers (``assistant.live_stats``, the
moderation log); the workers themselves come from the backend (``assistant.backend``)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from assistant import live_stats
from assistant.store import Store
from assistant.store.moderation import ModerationLog

log = logging.getLogger(__name__)

DASHBOARD_WINDOW_S = 900


def queue_depth(client: redis.Redis, queue: str) -> int | None:
    try:
        return int(client.llen(queue))
    except redis.RedisError:
        return None


def live_summary(client: redis.Redis, queue: str) -> dict[str, Any] | None:
    """``assistant.live_stats.summary`` over the dashboard's window; None when Redis is down."""
    try:
        return live_stats.summary(client, window_s=DASHBOARD_WINDOW_S, queue=queue)
    except redis.RedisError as exc:
        log.warning("live stats unavailable: %s", exc)
        return None


def safety_counts(store: Store) -> dict[str, int]:
    since = datetime.now(UTC) - timedelta(seconds=DASHBOARD_WINDOW_S)
    return ModerationLog(store).counts_by_category(since)
