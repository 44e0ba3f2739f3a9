"""What-if: the worker's token publishing, isolated and varied, outside the app.

Direct llama-cpp-python in this process, with each piece handed to Redis the way the worker
does it today (``assistant.stream.Publisher.token``: one PUBLISH per token, in the generating
thread) and two ways it could be done instead. Nobody subscribes, so this is the worker-side
cost alone; the modes are interleaved run by run so that machine noise hits them alike.

- ``none``: no publishing (the direct baseline, measured alongside);
- ``per_token``: as the worker does now;
- ``background_thread``: the generating thread only queues the piece; a thread publishes
  everything queued so far as one event (tokens coalesce while a round trip is in flight);
- ``coalesce_50ms``: in the generating thread, but at most one PUBLISH per 50 ms (and the
  first token at once), carrying the pieces since the last one.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from assistant.redis_client import connect
from bench import direct
from bench.stats import summary

MODES = ("none", "per_token", "background_thread", "coalesce_50ms")
COALESCE_SECONDS = 0.05


class Sink:
    """Receives pieces from the generating thread; counts PUBLISHes and time spent there."""

    def __init__(self, client: redis.Redis, mode: str) -> None:
        from assistant.envelope import ConversationKey
        from assistant.stream import Publisher, channel

        self.client = client
        self.mode = mode
        where = ConversationKey(platform="bench", channel="publish")
        message_id = f"bench-{uuid.uuid4().hex}"
        self.channel = channel(where, message_id)
        self.publisher = Publisher(client, where, [message_id])
        self.spent = 0.0
        self.publishes = 0
        self.pending: list[str] = []
        self.first_index = 0
        self.last_flush = 0.0
        self.queue: queue.SimpleQueue[tuple[int, str] | None] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        if mode == "background_thread":
            self.thread = threading.Thread(target=self._drain, daemon=True)
            self.thread.start()

    def _send(self, index: int, text: str) -> None:
        self.client.publish(self.channel, json.dumps(
            {"type": "token", "index": index, "text": text}))
        self.publishes += 1

    def _drain(self) -> None:
        while True:
            item = self.queue.get()
            batch = [item]
            while not self.queue.empty():
                batch.append(self.queue.get())
            pieces = [b for b in batch if b is not None]
            if pieces:
                self._send(pieces[0][0], "".join(text for _, text in pieces))
            if None in batch:
                return

    def __call__(self, index: int, text: str) -> None:
        before = time.perf_counter()
        if self.mode == "per_token":
            self.publisher.token(text)
            self.publishes += 1
        elif self.mode == "background_thread":
            self.queue.put((index, text))
        elif self.mode == "coalesce_50ms":
            if not self.pending:
                self.first_index = index
            self.pending.append(text)
            if index == 0 or before - self.last_flush >= COALESCE_SECONDS:
                self._send(self.first_index, "".join(self.pending))
                self.pending.clear()
                self.last_flush = before
        self.spent += time.perf_counter() - before

    def close(self) -> None:
        if self.thread is not None:
            self.queue.put(None)
            self.thread.join(10)
        elif self.pending:
            self._send(self.first_index, "".join(self.pending))


def measure(model_path: Path, context_size: int, threads: int, messages: list[dict[str, str]],
            max_tokens: int, repetitions: int, warmup: int, redis_url: str, seed: int = 0,
            threads_batch: int | None = None) -> dict[str, Any]:
    client = connect(redis_url)
    llama = direct.load(model_path, context_size, threads, threads_batch)
    results: dict[str, dict[str, list[float]]] = {
        m: {"decode_tps": [], "ttft_ms": [], "publishes": [], "sink_ms_per_token": []}
        for m in MODES}
    try:
        for rep in range(max(1, warmup) + repetitions):
            for mode in MODES:
                sink = Sink(client, mode) if mode != "none" else None
                run = direct.stream_once(llama, messages, max_tokens, seed, sink)
                if sink is not None:
                    sink.close()
                if rep < max(1, warmup):
                    continue
                numbers = results[mode]
                numbers["decode_tps"].append(run.decode_tps)
                numbers["ttft_ms"].append(run.ttft_ms)
                numbers["publishes"].append(sink.publishes if sink else 0)
                numbers["sink_ms_per_token"].append(
                    sink.spent * 1e3 / max(1, run.chunks) if sink else 0.0)
    finally:
        direct.close(llama)
        client.close()
    out: dict[str, Any] = {"threads": threads, "repetitions": repetitions,
                           "coalesce_ms": COALESCE_SECONDS * 1e3, "modes": {}}
    base = summary(results["none"]["decode_tps"])["p50"]
    for mode, numbers in results.items():
        tps = summary(numbers["decode_tps"])
        out["modes"][mode] = {
            "decode_tps": tps,
            "ratio_to_none": round(tps["p50"] / base, 3),
            "ttft_ms_p50": summary(numbers["ttft_ms"])["p50"],
            "publishes_per_request": summary(numbers["publishes"], 1)["p50"],
            "generating_thread_ms_per_token": summary(numbers["sink_ms_per_token"], 3)["p50"],
            "runs_decode_tps": [round(x, 2) for x in numbers["decode_tps"]],
        }
    return out
