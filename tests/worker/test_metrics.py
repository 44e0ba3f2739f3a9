"""TurnStats and Celery signals → the worker's Prometheus metrics."""

from __future__ import annotations

import pytest
from celery.exceptions import Retry
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from assistant.observe import TurnStats
from assistant.settings import Settings
from worker.metrics import WorkerMetrics, turn_observers


def stats(**changes: object) -> TurnStats:
    values: dict[str, object] = dict(
        platform="web", workspace="w", channel="c", user_id="u", messages=2, generated=True,
        queue_wait_s=0.3, ttft_s=0.2, total_s=1.2, prompt_tokens=50, completion_tokens=40,
        finish_reason="stop")
    values.update(changes)
    return TurnStats(**values)  # type: ignore[arg-type]


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> WorkerMetrics:
    return WorkerMetrics(registry)


def test_a_generated_turn_fills_every_turn_metric(metrics: WorkerMetrics,
                                                  registry: CollectorRegistry) -> None:
    metrics.observe_turn(stats())
    value = registry.get_sample_value
    web = {"platform": "web"}
    assert value("assistant_messages_in_total", web) == 2
    assert value("assistant_messages_out_total", web) == 1
    assert value("assistant_tokens_generated_total", web) == 40
    assert value("assistant_replies_resent_total", web) is None
    assert value("assistant_time_to_first_token_seconds_count", web) == 1
    assert value("assistant_time_to_first_token_seconds_sum", web) == pytest.approx(0.2)
    assert value("assistant_time_to_first_token_seconds_bucket", {**web, "le": "0.01"}) == 0
    assert value("assistant_time_to_first_token_seconds_bucket", {**web, "le": "0.25"}) == 1
    assert value("assistant_reply_seconds_sum", web) == pytest.approx(1.2)
    assert value("assistant_queue_wait_seconds_sum", web) == pytest.approx(0.3)
    # 40 tokens in 1.2 - 0.2 = 1.0 s of decoding
    assert value("assistant_decode_tokens_per_second_sum", web) == pytest.approx(40.0)
    assert value("assistant_decode_tokens_per_second_bucket", {**web, "le": "35.0"}) == 0
    assert value("assistant_decode_tokens_per_second_bucket", {**web, "le": "50.0"}) == 1


def test_a_resent_reply_counts_out_but_generates_nothing(metrics: WorkerMetrics,
                                                         registry: CollectorRegistry) -> None:
    metrics.observe_turn(stats(platform="slack", generated=False, ttft_s=None,
                               completion_tokens=0, messages=1))
    value = registry.get_sample_value
    slack = {"platform": "slack"}
    assert value("assistant_messages_out_total", slack) == 1
    assert value("assistant_messages_in_total", slack) == 1
    assert value("assistant_replies_resent_total", slack) == 1
    assert value("assistant_tokens_generated_total", slack) is None
    assert value("assistant_time_to_first_token_seconds_count", slack) is None
    assert value("assistant_reply_seconds_count", slack) == 1


def test_no_first_token_means_no_ttft_and_no_speed(metrics: WorkerMetrics,
                                                   registry: CollectorRegistry) -> None:
    metrics.observe_turn(stats(ttft_s=None, completion_tokens=0))
    assert registry.get_sample_value(
        "assistant_time_to_first_token_seconds_count", {"platform": "web"}) is None
    assert registry.get_sample_value(
        "assistant_decode_tokens_per_second_count", {"platform": "web"}) is None


def test_retries_errors_and_model_load(metrics: WorkerMetrics,
                                       registry: CollectorRegistry) -> None:
    metrics.count_retry(Retry(exc=None))  # the conversation was busy
    metrics.count_retry(Retry(exc=ConnectionError("redis")))
    metrics.count_retry(Retry(exc=ConnectionError("redis")))
    metrics.count_error(ValueError("boom"))
    metrics.observe_model_load(1.5)
    value = registry.get_sample_value
    assert value("assistant_delivery_retries_total", {"reason": "busy"}) == 1
    assert value("assistant_delivery_retries_total", {"reason": "error"}) == 2
    assert value("assistant_task_errors_total", {"error": "ValueError"}) == 1
    assert value("assistant_model_load_seconds_count") == 1
    assert value("assistant_model_load_seconds_sum") == 1.5


def test_every_name_starts_with_assistant_and_safety_has_no_fake_samples(
        metrics: WorkerMetrics, registry: CollectorRegistry) -> None:
    text = generate_latest(registry).decode()
    names = {m.name for m in registry.collect()}
    assert names and all(name.startswith("assistant_") for name in names)
    assert "# TYPE assistant_safety_verdicts_total counter" in text
    assert "assistant_safety_verdicts_total{" not in text


def test_metrics_off_means_no_observers() -> None:
    assert turn_observers(Settings(ASSISTANT_WORKER_METRICS_PORT=0)) == []
    assert len(turn_observers(Settings(ASSISTANT_WORKER_METRICS_PORT=9999))) == 1
