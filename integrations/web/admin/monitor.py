"""Live health: workers from Celery's remote control, the queue from Redis, and the dashboard's
numbers (``assistant.live_stats``, the moderation log)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from celery import Celery

from assistant import keys, live_stats
from assistant.settings import Settings
from assistant.store import Store
from assistant.store.moderation import ModerationLog

log = logging.getLogger(__name__)

INSPECT_TIMEOUT_S = 1.0
DASHBOARD_WINDOW_S = 900


def queue_depth(client: redis.Redis, celery_app: Celery) -> int | None:
    try:
        return int(client.llen(celery_app.conf.task_default_queue))
    except redis.RedisError:
        return None


def loaded_models(client: redis.Redis | None, hostname: str, processes: list[Any]
                  ) -> tuple[str | None, bool | None]:
    """The model a node's pool processes loaded (``worker.tasks.model_loaded`` records it by
    pid) and whether one of its *current* processes has it loaded; (None, None) if unknown."""
    if client is None:
        return None, None
    try:
        entries = client.hgetall(keys.worker_models(hostname))
    except redis.RedisError:
        return None, None
    current = {str(pid) for pid in processes}
    loaded = [json.loads(value) for pid, value in entries.items()
              if (pid.decode() if isinstance(pid, bytes) else str(pid)) in current]
    if loaded:
        return str(loaded[0].get("model")), True
    return None, False


def workers(celery_app: Celery, settings: Settings,
            client: redis.Redis | None = None) -> list[dict[str, Any]]:
    """Every worker that answers: host, pool size, what it runs now, its model and whether
    one of its processes has loaded it (models load on a process' first task)."""
    try:
        inspect = celery_app.control.inspect(timeout=INSPECT_TIMEOUT_S)
        stats = inspect.stats() or {}
        active = inspect.active() or {}
    except Exception as exc:  # kombu's errors when the broker drops mid-call
        log.warning("inspecting workers failed: %s", exc)
        return []
    found = []
    for hostname in sorted(set(stats) | set(active)):
        info = stats.get(hostname) or {}
        pool = info.get("pool") or {}
        processes = pool.get("processes") or []
        running = active.get(hostname) or []
        model, loaded = loaded_models(client, hostname, processes)
        found.append({
            "hostname": hostname,
            "pid": info.get("pid"),
            # The pool's processes now (pool_grow/pool_shrink change it); "max-concurrency"
            # stays what the worker was started with.
            "pool_size": len(processes) or pool.get("max-concurrency", 0),
            "started_with": pool.get("max-concurrency"),
            "pool": pool.get("implementation", ""),
            "active": [{"id": task.get("id", ""), "name": task.get("name", ""),
                        "started": task.get("time_start")} for task in running],
            "tasks_done": sum((info.get("total") or {}).values()),
            "uptime_s": info.get("uptime"),
            # The model the worker loaded wins over the one this web process is set up with.
            "model": model or settings.model,
            "model_loaded": loaded,
        })
    return found


def resize_pool(celery_app: Celery, hostname: str, delta: int) -> bool:
    """Grow (+n) or shrink (-n) one worker's pool; True when the worker acknowledged."""
    control = celery_app.control
    command = control.pool_grow if delta > 0 else control.pool_shrink
    replies = command(abs(delta), destination=[hostname], reply=True,
                      timeout=INSPECT_TIMEOUT_S * 2) or []
    return any(hostname in reply and "ok" in reply[hostname] for reply in replies)


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
