"""The dashboard's rolling numbers from the Redis stream the workers append to."""

from __future__ import annotations

import fakeredis
import pytest

from assistant import live_stats
from assistant.observe import TurnStats


def stats(platform: str = "web", ttft: float | None = 0.2, total: float = 1.2,
          tokens: int = 50, finish: str = "stop", messages: int = 1) -> TurnStats:
    return TurnStats(platform=platform, workspace="default", channel="c1", user_id="u1",
                     messages=messages, generated=ttft is not None, queue_wait_s=0.1,
                     ttft_s=ttft, total_s=total, prompt_tokens=300, completion_tokens=tokens,
                     finish_reason=finish)


def test_summary_of_recorded_turns(fake_redis: fakeredis.FakeRedis) -> None:
    observe = live_stats.observer(fake_redis)
    for ttft in (0.1, 0.2, 0.3, 0.4):
        observe(stats(ttft=ttft, total=ttft + 1.0, tokens=100))
    observe(stats(platform="slack", messages=2, ttft=1.0, total=3.0, tokens=100))
    observe(stats(platform="telegram", ttft=None, total=0.05, tokens=0, finish="error"))
    fake_redis.lpush(live_stats.TURNS_QUEUE, "task-1", "task-2")

    summary = live_stats.summary(fake_redis, window_s=600)
    assert summary["turns"] == 6 and summary["messages"] == 7
    assert summary["messages_per_minute"] == pytest.approx(
        {"slack": 0.2, "telegram": 0.1, "web": 0.4})
    assert summary["messages_per_minute_total"] == pytest.approx(0.7)
    assert sum(sum(m["messages"].values()) for m in summary["per_minute"]) == 7
    assert summary["ttft_p50_s"] == pytest.approx(0.3)
    assert summary["ttft_p95_s"] == pytest.approx(1.0)
    assert summary["total_p50_s"] == pytest.approx(1.2)
    assert summary["total_p95_s"] == pytest.approx(3.0)
    # 500 tokens over 1.0 s of decoding per web turn (4) and 2.0 s for the slack one.
    assert summary["tokens_per_second"] == pytest.approx(500 / 6.0)
    assert summary["errors"] == 1 and summary["content_filtered"] == 0
    assert summary["queue_depth"] == 2 and summary["completion_tokens"] == 500


def test_an_empty_window(fake_redis: fakeredis.FakeRedis) -> None:
    summary = live_stats.summary(fake_redis)
    assert summary["turns"] == 0 and summary["ttft_p50_s"] is None
    assert summary["tokens_per_second"] is None and summary["queue_depth"] == 0


def test_percentile() -> None:
    assert live_stats.percentile([], 0.5) is None
    assert live_stats.percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert live_stats.percentile([float(n) for n in range(1, 101)], 0.95) == 95.0
