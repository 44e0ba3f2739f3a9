"""The edges' ``assistant.backend.Backend``, on Celery over Redis (the ``assistant.backend``
entry point ``celery``).

Built once per process by ``assistant.backend.load_backend``: the Celery app is made here,
from the process's settings, and used only as a producer and for remote control.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis
from celery import Celery
from celery.utils.nodenames import worker_direct

from assistant import keys
from assistant.envelope import ConversationKey, Inbound
from assistant.settings import Settings
from worker.affinity import Router
from worker.app import make_app
from worker.grammar import gbnf
from worker.prompt_size import PromptCounter, counter_for
from worker.sweeper import is_stranded
from worker.watchdog import stalled_pids

log = logging.getLogger(__name__)

INSPECT_TIMEOUT_S = 1.0
# Retry a send while the broker reconnects: 3 tries within about half a second.
SEND_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2}


def make_backend(settings: Settings, client: redis.Redis) -> CeleryBackend:
    return CeleryBackend(make_app(settings), client, settings)


class CeleryBackend:
    """Turns and documents go to Celery's queues; questions about workers go to Celery's
    remote control and to what the workers write in Redis."""

    def __init__(self, celery_app: Celery, client: redis.Redis,
                 settings: Settings | None = None) -> None:
        self.celery_app = celery_app
        self.client = client
        self.settings = settings or Settings()
        self.router = Router(client)

    @property
    def queue_name(self) -> str:
        return str(self.celery_app.conf.task_default_queue)

    def enqueue_turn(self, conversation: ConversationKey, *, node: str | None = None,
                     retry: bool = True) -> None:
        options: dict[str, Any] = {"queue": worker_direct(node)} if node else {}
        if retry:
            options |= {"retry": True, "retry_policy": SEND_RETRY_POLICY}
        self.celery_app.send_task(keys.ANSWER_TASK, args=[conversation.model_dump_json()],
                                  **options)

    def enqueue_index(self, document_id: int) -> None:
        self.celery_app.send_task(keys.INDEX_TASK, args=[document_id])

    def node_for(self, conversation: ConversationKey) -> str | None:
        return self.router.node_for(conversation)

    def is_stranded(self, message: Inbound) -> bool:
        return is_stranded(self.client, message, self.queue_name)

    def ping(self, timeout: float) -> list[str]:
        replies = self.celery_app.control.ping(timeout=timeout) or []
        return sorted(name for reply in replies for name in reply)

    def stalled(self, node: str) -> list[int]:
        return stalled_pids(self.client, node, self.settings.stall_seconds)

    def workers(self) -> list[dict[str, Any]]:
        """Every worker that answers: host, pool size, what it runs now, its model and whether
        one of its processes has loaded it (models load on a process' first task)."""
        try:
            inspect = self.celery_app.control.inspect(timeout=INSPECT_TIMEOUT_S)
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
            model, loaded = self._loaded_model(hostname, processes)
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
                # The model the worker loaded wins over the one this process is set up with.
                "model": model or self.settings.model,
                "model_loaded": loaded,
            })
        return found

    def _loaded_model(self, hostname: str, processes: list[Any]
                      ) -> tuple[str | None, bool | None]:
        """The model a node's pool processes loaded (``worker.tasks.model_loaded`` records it
        by pid) and whether one of its *current* processes has it; (None, None) if unknown."""
        try:
            entries = self.client.hgetall(keys.worker_models(hostname))
        except redis.RedisError:
            return None, None
        current = {str(pid) for pid in processes}
        loaded = [json.loads(value) for pid, value in entries.items()
                  if (pid.decode() if isinstance(pid, bytes) else str(pid)) in current]
        if loaded:
            return str(loaded[0].get("model")), True
        return None, False

    def prompt_sizer(self) -> PromptCounter:
        return counter_for(self.settings.model, self.settings.models_dir)

    def check_json_schema(self, schema: dict[str, Any]) -> None:
        gbnf(schema)

    def resize_pool(self, node: str, delta: int) -> bool:
        control = self.celery_app.control
        command = control.pool_grow if delta > 0 else control.pool_shrink
        replies = command(abs(delta), destination=[node], reply=True,
                          timeout=INSPECT_TIMEOUT_S * 2) or []
        return any(node in reply and "ok" in reply[node] for reply in replies)
