"""Celery's producer side on a (fake) Redis: ``send_task`` pushes onto the queue's list."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import redis

from worker.backend import CeleryBackend

QUEUE = "assistant.turns"


class FakeCelery:
    """Enough of a Celery app for ``worker.dispatch.Dispatcher``; ``broken`` fails sends."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.conf = SimpleNamespace(task_default_queue=QUEUE)
        self.broken = False

    def send_task(self, name: str, args: list[Any], **options: Any) -> None:
        if self.broken:
            raise OSError("broker gone")
        self.client.lpush(QUEUE, json.dumps({"task": name, "args": args}))


def fake_backend(celery: FakeCelery) -> CeleryBackend:
    """The real ``worker.backend.CeleryBackend`` over ``celery`` (its routing and stranded
    checks run for real on the same Redis)."""
    return CeleryBackend(celery, celery.client)  # type: ignore[arg-type]
