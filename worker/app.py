"""The Celery app: ``celery -A worker.app worker``.

Delivery is at-least-once (docs/operations.md): acks after the task ran, a task whose
worker died is rejected back to the queue, one message prefetched at a time, and a visibility
timeout longer than the longest reply. Exactly-once *out* is the task's job (per-message
dedupe, stored replies, delivery keyed by reply id).
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

from celery import Celery, signals

from assistant import keys
from assistant.backend import redis_url
from assistant.errors import ConfigError
from assistant.logs import configure_logging
from assistant.redis_client import connect, is_sentinel, parse_sentinel_url
from assistant.settings import Settings
from worker import affinity, metrics, recovery

TURNS_QUEUE = keys.TURNS_QUEUE
ANSWER_TASK = keys.ANSWER_TASK
KNOWLEDGE_QUEUE = keys.KNOWLEDGE_QUEUE
INDEX_TASK = keys.INDEX_TASK
RETRY_COUNTDOWN_MAX_SECONDS = 60  # worker/tasks.py: retry_backoff_max

log = logging.getLogger(__name__)


def make_app(settings: Settings) -> Celery:
    broker = redis_url(settings)  # a clear ConfigError when it is not set
    app = Celery("assistant", broker=broker, include=["worker.tasks"])
    transport: dict[str, Any] = {
        "visibility_timeout": settings.visibility_timeout,
        # kombu sweeps for messages of dead workers every interval × throttle seconds
        # (10 × 10 by default): sweep every 5 s so recovery takes visibility_timeout + ≤5 s.
        "unacked_restore_interval": 5,
        "unacked_restore_throttle": 1,
    }
    if is_sentinel(broker):
        # kombu's sentinel transport (and Celery's sentinel result backend) refuse a sentinel://
        # URL without the master's name; our own clients take it from the same setting.
        try:
            parse_sentinel_url(broker)  # a bad URL fails here, not at first use
        except ValueError as error:
            raise ConfigError(f"REDIS_URL: {error}") from None
        transport["master_name"] = settings.redis_sentinel_master
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=TURNS_QUEUE,
        task_routes={INDEX_TASK: {"queue": KNOWLEDGE_QUEUE}},
        # One turn per process (prefork), or, with ASSISTANT_BATCH_SLOTS > 1, that many
        # turns at once in one process feeding its batching engine (``batching_pool``).
        **batching_pool(settings),
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        # A queue per worker node ("<node>.dq2") for conversation-affine routing (affinity.py).
        worker_direct=settings.affinity,
        # The backstop of worker/watchdog.py: a turn past this is killed with its process
        # (which Celery replaces); its message stays pending and the sweeper re-enqueues it.
        task_time_limit=settings.turn_time_limit,
    )
    if settings.visibility_timeout < settings.turn_time_limit + RETRY_COUNTDOWN_MAX_SECONDS:
        log.warning("ASSISTANT_VISIBILITY_TIMEOUT (%d s) is shorter than the longest turn plus "
                    "a retry's countdown (%d s): a long turn may be delivered twice (harmless, "
                    "the second waits for the first's lock, but it costs a pool process)",
                    settings.visibility_timeout,
                    settings.turn_time_limit + RETRY_COUNTDOWN_MAX_SECONDS)
    return app


def batching_pool(settings: Settings) -> dict[str, Any]:
    """Celery's pool for the engine: prefork with ``ASSISTANT_WORKER_CONCURRENCY`` processes,
    or with N > 1 batch slots Celery's thread pool with N threads in one process.

    Why threads and not threads inside a prefork child: a prefork child runs one task at a
    time (its parent hands it the next only after the last returned), so several turns in one
    child would need the task to return before its turn ends, acknowledging the message early:
    a killed process would then lose it. With the thread pool each turn is a task of its own,
    acknowledged after it ran (``task_acks_late``), and all of them feed the process' one
    ``BatchingEngine`` (worker/tasks.py, ``runtime``). docs/scaling.md, "Continuous batching".
    """
    if settings.batch_slots > 1:
        return {"worker_pool": "threads", "worker_concurrency": settings.batch_slots}
    return {"worker_concurrency": settings.worker_concurrency}


def use_assistant_logging(loglevel: int | str | None = None, **_: Any) -> None:
    """Celery configures no logging of its own when this signal has a receiver: use ours."""
    configure_logging(worker_settings(), level=loglevel or "INFO")


def consume_knowledge_queue(sender: object = None, instance: Any = None, **_: Any) -> None:
    """A worker that answers turns indexes documents too (Celery's ``select_add``)."""
    queues = instance.app.amqp.queues
    if TURNS_QUEUE in queues.consume_from and KNOWLEDGE_QUEUE not in queues.consume_from:
        queues.select_add(KNOWLEDGE_QUEUE)


@cache
def worker_settings() -> Settings:
    """The worker process's settings, read from the environment on first use."""
    return Settings()


@cache
def worker_app() -> Celery:
    """The worker process's Celery app, with its signals wired: built on first use, when
    ``celery -A worker.app`` (or ``worker.tasks``) asks for ``app``, never at import."""
    settings = worker_settings()
    app = make_app(settings)
    signals.setup_logging.connect(use_assistant_logging, weak=False)
    signals.celeryd_after_setup.connect(consume_knowledge_queue, weak=False)
    metrics.connect_signals(settings)

    def redis_client() -> Any:
        return connect(settings.redis_url or "", master_name=settings.redis_sentinel_master)

    recovery.connect_signals(
        app, redis_client, task_name=ANSWER_TASK, shared_queue=TURNS_QUEUE,
        stall_seconds=settings.stall_seconds, sole_worker=settings.sole_worker,
        consumer_stuck_seconds=settings.consumer_stuck_seconds)
    if settings.affinity:
        affinity.connect_signals(redis_client, task_name=ANSWER_TASK, shared_queue=TURNS_QUEUE,
                                 forget_after_seconds=settings.visibility_timeout + 60)
    return app


def __getattr__(name: str) -> Any:
    """``worker.app.app`` and ``worker.app.settings`` (PEP 562): the worker's own, built on
    first access, so importing this module builds nothing."""
    if name == "app":
        return worker_app()
    if name == "settings":
        return worker_settings()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
