"""Build the worker's safety service from settings (assistant/safety; docs/safety.md)."""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from assistant.safety.build import build_service, load_policy
from assistant.safety.service import SafetyService
from assistant.safety.verdict import Verdict
from assistant.settings import Settings
from assistant.store import Store, connect_store
from assistant.store.moderation import ModerationLog
from worker.metrics import enabled as metrics_enabled
from worker.metrics import worker_metrics

log = logging.getLogger(__name__)


def build_safety(settings: Settings, client: redis.Redis, store: Store | None = None
                 ) -> SafetyService | None:
    """The safety service every turn goes through; ``None`` when safety is turned off.
    ``store``: where the moderation log goes (default: open ``settings.sql_url``)."""
    if not settings.safety_enabled:
        log.warning("safety filters are OFF (ASSISTANT_SAFETY=false)")
        return None
    extra: dict[str, Any] = {}
    if "llm_judge" in load_policy(settings).check_names():
        from worker.guard import guard_completion

        extra["llm_judge"] = {"complete": guard_completion(settings),
                              "fail_closed": settings.guard_fail_closed}
    moderation = ModerationLog(store or connect_store(settings.sql_url))
    service = build_service(settings, client, moderation, extra=extra)
    if metrics_enabled(settings):
        counter = worker_metrics().safety_verdicts

        def count(direction: str, verdict: Verdict) -> None:
            counter.labels(verdict.category or "none", verdict.action.value).inc()

        service.on_verdict = count
    started = time.perf_counter()
    service.warm()
    log.info("safety checks ready in %.2f s", time.perf_counter() - started)
    return service
