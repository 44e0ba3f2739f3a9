"""Rolling numbers for the admin dashboard, kept in Redis by every worker.

Each answered turn appends one entry to a capped Redis stream (``record``; a ``TurnObserver``
through ``observer``); ``summary`` reads the last ``window_s`` seconds of it. Stream ids are the
Redis server's clock in milliseconds, so workers on several hosts share one time line.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any

import redis

from assistant import keys
from assistant.observe import TurnObserver, TurnStats

STREAM_KEY = keys.LIVE_STATS
# About an hour at 5 turns per second; older entries are trimmed (approximately, cheaply).
MAX_ENTRIES = 20_000
TURNS_QUEUE = keys.TURNS_QUEUE


def record(client: redis.Redis, stats: TurnStats) -> None:
    """Append one answered turn to the stream."""
    client.xadd(STREAM_KEY, {
        "platform": stats.platform,
        "messages": stats.messages,
        "generated": int(stats.generated),
        "ttft": "" if stats.ttft_s is None else f"{stats.ttft_s:.4f}",
        "total": f"{stats.total_s:.4f}",
        "wait": f"{stats.queue_wait_s:.4f}",
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "finish": stats.finish_reason,
    }, maxlen=MAX_ENTRIES, approximate=True)


def observer(client: redis.Redis) -> TurnObserver:
    def observe(stats: TurnStats) -> None:
        record(client, stats)

    return observe


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile (``fraction`` in 0..1); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def summary(client: redis.Redis, window_s: int = 900, queue: str = TURNS_QUEUE
            ) -> dict[str, Any]:
    """The dashboard's numbers over the last ``window_s`` seconds.

    Keys: ``window_s``; ``turns`` and ``messages`` (user messages answered); ``messages_per_minute``
    (by platform) and ``messages_per_minute_total``; ``per_minute`` (a list, oldest first, of
    ``{"minute": unix seconds, "messages": {platform: n}}`` for charts); ``ttft_p50_s``,
    ``ttft_p95_s``, ``total_p50_s``, ``total_p95_s`` (None without turns); ``tokens_per_second``
    (generated tokens over generation time, None without any); ``completion_tokens``;
    ``errors`` (turns that ended in an error); ``content_filtered``; ``queue_depth`` (tasks
    waiting in the shared queue now).
    """
    seconds, micros = client.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    start_ms = now_ms - window_s * 1000
    with client.pipeline(transaction=False) as pipe:
        pipe.xrange(STREAM_KEY, min=str(start_ms), max="+")
        pipe.llen(queue)
        entries, depth = pipe.execute()

    by_platform: Counter[str] = Counter()
    per_minute: defaultdict[int, Counter[str]] = defaultdict(Counter)
    ttfts: list[float] = []
    totals: list[float] = []
    generated_tokens = 0
    generation_s = 0.0
    completion_tokens = errors = filtered = messages = 0
    for entry_id, fields in entries:
        data = {_s(k): _s(v) for k, v in fields.items()}
        millis = int(_s(entry_id).split("-")[0])
        count = int(data.get("messages", "1"))
        platform = data.get("platform", "?")
        messages += count
        by_platform[platform] += count
        per_minute[millis // 60_000 * 60][platform] += count
        total = float(data.get("total", "0"))
        totals.append(total)
        tokens = int(data.get("completion_tokens", "0"))
        completion_tokens += tokens
        if data.get("ttft"):
            ttft = float(data["ttft"])
            ttfts.append(ttft)
            if data.get("generated") == "1" and tokens > 0 and total > ttft:
                generated_tokens += tokens
                generation_s += total - ttft
        finish = data.get("finish")
        errors += finish == "error"
        filtered += finish == "content_filter"
    minutes = window_s / 60
    return {
        "window_s": window_s,
        "turns": len(entries),
        "messages": messages,
        "messages_per_minute": {p: n / minutes for p, n in sorted(by_platform.items())},
        "messages_per_minute_total": messages / minutes,
        "per_minute": [{"minute": minute, "messages": dict(counts)}
                       for minute, counts in sorted(per_minute.items())],
        "ttft_p50_s": percentile(ttfts, 0.50),
        "ttft_p95_s": percentile(ttfts, 0.95),
        "total_p50_s": percentile(totals, 0.50),
        "total_p95_s": percentile(totals, 0.95),
        "tokens_per_second": generated_tokens / generation_s if generation_s > 0 else None,
        "completion_tokens": completion_tokens,
        "errors": errors,
        "content_filtered": filtered,
        "queue_depth": int(depth),
    }


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
