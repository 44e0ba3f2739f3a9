"""Prometheus metrics of a worker, served on ``ASSISTANT_WORKER_METRICS_PORT`` (0 = off).

Celery's prefork pool answers in child processes, and replaces them (a crash, a lost worker).
We use prometheus_client's multiprocess mode rather than a port per child: the main process
points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before the pool forks, each child
writes its values to memory-mapped files there, and the main process serves them merged. So a
worker is one scrape target whatever its concurrency, counters survive a child's replacement
(a port per child would lose them and move targets around), and no extra ports are needed.

Signals: ``celeryd_init`` (main process, before the fork) sets the directory up;
``worker_ready`` starts the HTTP server; ``worker_process_shutdown`` marks a child dead;
``worker_shutdown`` stops the server and removes the directory. ``task_retry`` and
``task_failure`` run in the child that ran the task. Nothing here is slow, so
``worker_process_init`` stays fast; the metrics themselves are built on first use.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from celery import signals
from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess, values
from prometheus_client.exposition import start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from assistant.observe import TurnObserver, TurnStats
from assistant.settings import Settings

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Loopback unless ASSISTANT_WORKER_METRICS_HOST says otherwise: worker metrics name hosts,
# queues and users' platforms, and nothing else guards the port (docs/security.md).
LISTEN_ADDRESS = "127.0.0.1"

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0)
REPLY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
QUEUE_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
TOKENS_PER_SECOND_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 35.0, 50.0, 75.0, 100.0, 150.0,
                             200.0, 300.0, 500.0)
MODEL_LOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class WorkerMetrics:
    """Every metric a worker reports; ``registry=None`` registers nowhere (multiprocess)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        def histogram(name: str, doc: str, buckets: tuple[float, ...],
                      labels: tuple[str, ...] = ()) -> Histogram:
            return Histogram(name, doc, labels, buckets=buckets, registry=registry)

        self.messages_in = counter(
            "assistant_messages_in_total", "Inbound messages answered", ("platform",))
        self.messages_out = counter(
            "assistant_messages_out_total", "Replies delivered (one per turn)", ("platform",))
        self.replies_resent = counter(
            "assistant_replies_resent_total",
            "Replies sent again from the store after a crash instead of generated",
            ("platform",))
        self.tokens_generated = counter(
            "assistant_tokens_generated_total", "Completion tokens generated", ("platform",))
        self.time_to_first_token = histogram(
            "assistant_time_to_first_token_seconds", "Turn started to first generated token",
            TTFT_BUCKETS, ("platform",))
        self.reply_seconds = histogram(
            "assistant_reply_seconds", "Turn started to reply delivered", REPLY_BUCKETS,
            ("platform",))
        self.queue_wait = histogram(
            "assistant_queue_wait_seconds", "First message received to its turn started",
            QUEUE_WAIT_BUCKETS, ("platform",))
        self.decode_speed = histogram(
            "assistant_decode_tokens_per_second",
            "Completion tokens / (reply time - time to first token), per turn",
            TOKENS_PER_SECOND_BUCKETS, ("platform",))
        self.delivery_retries = counter(
            "assistant_delivery_retries_total",
            "Task retries: reason=busy (another worker held the conversation) or error",
            ("reason",))
        self.task_errors = counter(
            "assistant_task_errors_total", "Tasks that failed for good, by exception type",
            ("error",))
        self.model_load = histogram(
            "assistant_model_load_seconds", "Time to load the model in a worker process",
            MODEL_LOAD_BUCKETS)
        # Defined without samples until the safety chain reports verdicts.
        self.safety_verdicts = counter(
            "assistant_safety_verdicts_total", "Non-allow safety verdicts",
            ("category", "action"))

    def observe_turn(self, stats: TurnStats) -> None:
        """Record one finished turn (a ``TurnObserver``)."""
        platform = stats.platform
        self.messages_in.labels(platform).inc(stats.messages)
        self.messages_out.labels(platform).inc()
        self.reply_seconds.labels(platform).observe(stats.total_s)
        self.queue_wait.labels(platform).observe(stats.queue_wait_s)
        if not stats.generated:
            self.replies_resent.labels(platform).inc()
            return
        self.tokens_generated.labels(platform).inc(stats.completion_tokens)
        if stats.ttft_s is not None:
            self.time_to_first_token.labels(platform).observe(stats.ttft_s)
            decoding = stats.total_s - stats.ttft_s
            if stats.completion_tokens > 0 and decoding > 0:
                self.decode_speed.labels(platform).observe(stats.completion_tokens / decoding)

    def observe_model_load(self, seconds: float) -> None:
        self.model_load.observe(seconds)

    def count_retry(self, reason: object) -> None:
        # Celery passes the Retry exception; its ``exc`` is None for a deliberate retry
        # (worker.tasks: the conversation is busy), else the error being retried.
        busy = getattr(reason, "exc", "error") is None
        self.delivery_retries.labels("busy" if busy else "error").inc()

    def count_error(self, exception: BaseException | None) -> None:
        self.task_errors.labels(type(exception).__name__ if exception else "unknown").inc()


_metrics: WorkerMetrics | None = None
_server: Any = None
_owned_dir: Path | None = None
_settings: Settings | None = None


def worker_metrics() -> WorkerMetrics:
    """This process's metrics, built on first use (after the fork, in a pool child)."""
    global _metrics
    if _metrics is None:
        _metrics = WorkerMetrics(registry=None)
    return _metrics


def enabled(settings: Settings) -> bool:
    return settings.worker_metrics_port != 0


def turn_observers(settings: Settings) -> list[TurnObserver]:
    """Observers that turn each finished turn into metrics."""
    return [worker_metrics().observe_turn] if enabled(settings) else []


def observe_model_load(seconds: float) -> None:
    worker_metrics().observe_model_load(seconds)


def prepare_multiprocess_dir() -> Path:
    """Point prometheus_client at a clean directory shared by this worker's processes."""
    global _owned_dir
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):  # values of an earlier run must not add up with ours
            stale.unlink()
    else:
        path = _owned_dir = Path(tempfile.mkdtemp(prefix="assistant-metrics-"))
        os.environ[MULTIPROC_ENV] = str(path)
    # prometheus_client picks its value class when first imported, which happened before
    # Celery sent celeryd_init: pick again, before any metric exists in this process.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    return path


class DeclaredMetrics(Collector):
    """The merged values of every process of this worker, plus each metric no process has
    touched yet, declared without samples (so a dashboard finds it before its first event)."""

    def __init__(self) -> None:
        self.merged = multiprocess.MultiProcessCollector(None)  # type: ignore[no-untyped-call]
        reference = CollectorRegistry()
        WorkerMetrics(reference)
        self.declared = [Metric(m.name, m.documentation, m.type) for m in reference.collect()]

    def collect(self) -> Iterable[Metric]:
        merged = {m.name: m for m in self.merged.collect()}  # type: ignore[no-untyped-call]
        for empty in self.declared:
            yield merged.pop(empty.name, empty)
        yield from merged.values()


def serve(port: int, host: str = LISTEN_ADDRESS) -> Any:
    """Serve the merged values of every process of this worker on ``host:port``."""
    registry = CollectorRegistry()
    registry.register(DeclaredMetrics())
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server


def connect_signals(settings: Settings) -> None:
    """Hook the metrics into a Celery worker's life; a no-op with the port set to 0."""
    global _settings
    if not enabled(settings) or _settings is not None:
        return
    _settings = settings
    signals.celeryd_init.connect(_on_celeryd_init, weak=False)
    signals.worker_ready.connect(_on_worker_ready, weak=False)
    signals.worker_shutdown.connect(_on_worker_shutdown, weak=False)
    signals.worker_process_shutdown.connect(_on_process_shutdown, weak=False)
    signals.task_retry.connect(_on_task_retry, weak=False)
    signals.task_failure.connect(_on_task_failure, weak=False)


def _on_celeryd_init(**_: Any) -> None:
    prepare_multiprocess_dir()


def _on_worker_ready(**_: Any) -> None:
    global _server
    assert _settings is not None
    port = _settings.worker_metrics_port
    try:
        _server = serve(port, _settings.worker_metrics_host)
    except OSError as exc:
        # Several workers on one host need a port each (ASSISTANT_WORKER_METRICS_PORT).
        log.warning("metrics port %d unavailable (%s): this worker serves no metrics", port, exc)
        return
    log.info("serving Prometheus metrics on %s:%d", _settings.worker_metrics_host, port)


def _on_worker_shutdown(**_: Any) -> None:
    global _server, _owned_dir
    if _server is not None:
        _server.shutdown()
        _server.server_close()
        _server = None
    if _owned_dir is not None:
        shutil.rmtree(_owned_dir, ignore_errors=True)
        _owned_dir = None


def _on_process_shutdown(pid: int | None = None, **_: Any) -> None:
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid or os.getpid())  # type: ignore[no-untyped-call]


def _on_task_retry(reason: object = None, **_: Any) -> None:
    worker_metrics().count_retry(reason)


def _on_task_failure(exception: BaseException | None = None, **_: Any) -> None:
    worker_metrics().count_error(exception)
