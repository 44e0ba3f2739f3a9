"""Thin Celery tasks: take JSON, call ``assistant.conversation``, retry with bounded backoff."""

from __future__ import annotations

import gc
import json
import logging
import os
import socket
import sys
import threading
import time
from functools import lru_cache

import redis
from celery import Task, current_task, signals

from assistant import keys, live_stats, selftest
from assistant.conversation import Runtime, answer_pending
from assistant.engine import Engine
from assistant.envelope import ConversationKey
from assistant.knowledge.turn import build_grounder
from assistant.limits import quota_observer
from assistant.live_prompts import LivePrompts
from assistant.logs import log_context, log_turn
from assistant.models import resolve_model_path
from assistant.pipeline import TurnConfig
from assistant.prompts import PromptLibrary
from assistant.recall.service import build_recall
from assistant.redis_client import connect
from assistant.store import connect_store
from assistant.store.recorder import archive_observer
from worker.app import RETRY_COUNTDOWN_MAX_SECONDS, app, settings
from worker.batching import BatchingEngine
from worker.knowledge import index_document  # noqa: F401  (registers the knowledge task)
from worker.kvcache import make_cache
from worker.llama import FINISH_EVERY_SECONDS, LlamaEngine
from worker.metrics import enabled as metrics_enabled
from worker.metrics import observe_model_load, turn_observers
from worker.safety import build_safety
from worker.senders import build_senders
from worker.stub import StubEngine
from worker.watchdog import REDIS_TIMEOUT_SECONDS, Watchdog

log = logging.getLogger(__name__)


models_key = keys.worker_models


def model_loaded(seconds: float) -> None:
    """Told by the engine once its model is loaded (during this process' first task)."""
    if metrics_enabled(settings):
        observe_model_load(seconds)
    hostname = getattr(current_task.request, "hostname", None) if current_task else None
    if not hostname:
        return
    try:
        client = runtime_client()
        key = models_key(hostname)
        with client.pipeline(transaction=False) as pipe:
            pipe.hset(key, str(os.getpid()), json.dumps(
                {"model": resolve_model_path(settings.model, settings.models_dir).name,
                 "loaded_at": time.time(), "load_seconds": round(seconds, 3)}))
            pipe.expire(key, 86400)
            pipe.execute()
    except Exception:  # only the admin page's "loaded" flag depends on it
        log.warning("could not record the loaded model in Redis", exc_info=True)


_migrated_before_fork = False  # set by preload() in the node's main process


EXIT_ENGINE_SELFTEST = 3


def check_engine(node: str) -> None:
    """Before the node takes any message: can this host's engine decode at all? A build whose
    kernels crash here (docs/operations.md runbook) must stop the worker, not turn every
    message into retries, a dead letter and an apology. Logging is not set up yet at
    ``worker_init``: the verdict goes to stderr."""
    if settings.engine != "llama" or not settings.engine_selftest:
        return
    try:
        model_path = resolve_model_path(settings.model, settings.models_dir)
    except Exception as exc:
        result = selftest.SelfTestResult(False, f"the model is missing: {exc}",
                                         fix="`assistant model pull`")
    else:
        result = selftest.run(selftest.engine_check_command(model_path, settings.threads))
    try:
        selftest.record(runtime_client(), node, result)
    except redis.RedisError:
        print("could not record the engine self-test in Redis", file=sys.stderr)
    if result.ok:
        print(f"engine self-test passed: {result.summary}", file=sys.stderr, flush=True)
        return
    print(f"the worker refuses to start: engine self-test failed: {result.summary}\n"
          f"  what to do: {result.fix}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_ENGINE_SELFTEST)


@signals.worker_init.connect(weak=False)
def preload(sender: object = None, **_: object) -> None:
    """In the node's main process, before the pool forks: load what every pool process reads
    but never changes (the safety classifiers, llama.cpp's library), then freeze the heap, so
    the pool processes share those pages copy-on-write instead of each building its own copy.
    The model and its context are not loaded here: threads and a context must not cross a fork.
    (Celery sets up logging after this signal: the pool's "safety checks ready in 0.00 s"
    shows it worked.) First of all, the engine's self-test (``check_engine``).
    """
    check_engine(str(getattr(sender, "hostname", None) or socket.gethostname()))
    pool = str(getattr(sender, "pool_cls", "thread"))
    if settings.batch_slots > 1 and "thread" not in pool.lower():
        # `celery worker --pool=prefork` overrides worker/app.py's thread pool: every process
        # would hold an engine of N slots and answer one turn at a time.
        print(f"ASSISTANT_BATCH_SLOTS={settings.batch_slots} wants Celery's thread pool "
              f"(--pool=threads --concurrency={settings.batch_slots}); this node runs {pool}",
              file=sys.stderr, flush=True)
    import llama_cpp  # noqa: F401  (the library and its ctypes bindings)

    if settings.safety_enabled:
        from assistant.safety.build import build_service

        try:
            # A throwaway service (no Redis: no canary, no strikes), run once: it loads the
            # classifiers and compiles every check's patterns, and touches their pages here.
            build_service(settings, None, None).warm()
        except Exception:  # e.g. a policy naming the LLM judge, which needs its model
            log.warning("safety checks not preloaded: each pool process loads its own",
                        exc_info=True)
    global _migrated_before_fork
    try:
        # Migrate once per node, not once per pool process (alembic's run costs each process
        # ~6 MB), and bring in the database driver here; no connection crosses the fork.
        connect_store(settings.sql_url).engine.dispose()
        _migrated_before_fork = True
    except Exception:  # the database may be down now: each process migrates on its own
        log.warning("could not open the store before forking", exc_info=True)
    gc.collect()
    # Objects that exist now are never scanned by the collector again, so it does not touch
    # (and copy) their pages in every pool process (the CPython docs' advice for gc.freeze).
    gc.freeze()


# With the thread pool (ASSISTANT_BATCH_SLOTS > 1) several turns start at once: one builds
# what the process keeps (its Redis client, watchdog, runtime and engine), the others wait for
# it; lru_cache alone would let each build its own (and load the model twice).
_build_lock = threading.RLock()


def runtime_client() -> redis.Redis:
    with _build_lock:
        return _runtime_client()


@lru_cache(maxsize=1)
def _runtime_client() -> redis.Redis:
    assert settings.redis_url is not None
    return connect(settings.redis_url, master_name=settings.redis_sentinel_master)


def watchdog() -> Watchdog:
    """This pool process' watchdog (built after the fork, on its first task); it watches
    each running turn (several at once with the thread pool)."""
    with _build_lock:
        return _watchdog()


@lru_cache(maxsize=1)
def _watchdog() -> Watchdog:
    assert settings.redis_url is not None
    url = settings.redis_url
    return Watchdog(lambda: connect(url, master_name=settings.redis_sentinel_master,
                                    socket_timeout=REDIS_TIMEOUT_SECONDS,
                                    socket_connect_timeout=REDIS_TIMEOUT_SECONDS),
                    stall_seconds=settings.stall_seconds)


def build_engine() -> Engine:
    """This process' engine: one turn at a time (``LlamaEngine``), or ASSISTANT_BATCH_SLOTS
    turns at once in one context (``BatchingEngine``, fed by Celery's threads)."""
    if settings.engine == "stub":  # load tests: the plumbing without a model
        return StubEngine(context_size=settings.context_size)
    model_path = resolve_model_path(settings.model, settings.models_dir)
    kv_cache = make_cache(settings)  # the host's shared state directory (or None)
    if settings.batch_slots > 1:
        return BatchingEngine(model_path, context_size=settings.context_size,
                              threads=settings.threads, threads_batch=settings.n_threads_batch,
                              slots=settings.batch_slots, on_load=model_loaded,
                              kv_cache=kv_cache)
    return LlamaEngine(model_path, context_size=settings.context_size, threads=settings.threads,
                       threads_batch=settings.n_threads_batch, on_load=model_loaded,
                       kv_cache=kv_cache, finish_every=FINISH_EVERY_SECONDS)


def runtime() -> Runtime:
    """Built on the first task in each worker process (``worker_process_init`` must be fast)."""
    with _build_lock:
        return _build_runtime()


@lru_cache(maxsize=1)
def _build_runtime() -> Runtime:
    assert settings.redis_url is not None
    engine = build_engine()
    client = runtime_client()
    # The archive, users, persona versions and the moderation log.
    store = connect_store(settings.sql_url, upgrade=not _migrated_before_fork)
    prompts = PromptLibrary.load()
    return Runtime(
        client=client,
        engine=engine,
        prompts=prompts,
        config=TurnConfig(max_tokens=settings.max_tokens, temperature=settings.temperature),
        retention_seconds=settings.retention_seconds,
        max_deliveries=settings.max_deliveries,
        senders=build_senders(settings, client),
        trace_prompts=settings.trace_prompts,
        stream_interval_seconds=settings.stream_interval_ms / 1000,
        max_input_chars=settings.max_input_chars,
        observers=[*turn_observers(settings), quota_observer(client, settings),
                   archive_observer(store, client, settings.archive_retention_days),
                   live_stats.observer(client), log_turn],
        safety=build_safety(settings, client, store),
        live_prompts=LivePrompts(store, client, prompts),
        on_progress=watchdog().progress,
        recall=build_recall(settings, store),
        knowledge=build_grounder(settings, store),
    )


@app.task(
    name=keys.ANSWER_TASK,
    bind=True,
    acks_late=True,
    # An exception (not a crash) is retried with backoff; the conversation's pending list and
    # the per-message delivery count (dead-letter after ASSISTANT_MAX_DELIVERIES) bound it.
    autoretry_for=(Exception,),
    retry_backoff=2,
    retry_backoff_max=RETRY_COUNTDOWN_MAX_SECONDS,
    max_retries=settings.max_deliveries + 1,
)
def answer_conversation(self: Task, conversation_json: str) -> int:
    """Answer everything pending in one conversation; returns how many turns it answered."""
    conversation = ConversationKey.model_validate_json(conversation_json)
    guard = watchdog()
    # Loading the model on the first task counts as the turn's progress too.
    guard.turn_started(str(self.request.hostname or "worker"))
    try:
        current = runtime()
        with log_context(conversation=conversation.redis_id):
            outcome = answer_pending(current, conversation)
        # The replies are delivered; the engine may still be saving the conversation's KV
        # state in the background. The task returns at once: the save gives way to the next
        # request this process takes (worker/llama.py, ``_read_unless_wanted``), so a new
        # conversation does not wait for another's save (issue 20), and another process
        # taking this conversation's next turn waits for the save's marker instead.
    finally:
        guard.turn_finished()
    if outcome.busy_for is not None:
        # Another worker holds the conversation and will answer our message in its next turn;
        # come back once its lock could have expired, in case that worker died.
        raise self.retry(countdown=outcome.busy_for + 0.5, max_retries=None, exc=None)
    return outcome.turns

