"""Where a pipeline request spends its time, seen from outside the app.

Redis ``MONITOR`` timestamps every command the web process and the worker send (server clock,
microseconds), and Celery's task events (``worker_send_task_events``) arrive as ``PUBLISH``es on
``celeryev``. Together with the client's own clock (same host, ``time.time()``) that marks each
step of a request without touching the app:

    client sends ─► web SUBSCRIBEs the reply channel ─► web LPUSHes the Celery task
    ─► worker's consumer takes it (kombu's unacked ZADD) ─► pool child starts it (task.started)
    ─► the task takes the conversation lock ─► first token PUBLISHed ─► client gets 1st chunk
    ... last token PUBLISHed ─► client gets the last chunk; reply SET + "done" PUBLISHed

MONITOR itself costs the server (and this process) time per command, so these requests are
extra ones made after the measured repetitions, and their totals are not used as the result.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from assistant.redis_client import connect
from bench.pipeline import Pipeline
from bench.stats import quantile, summary
from bench.timing import Run


@dataclass
class Monitor:
    """Collects (server time, client address, command) for every command, in a thread."""

    url: str
    events: list[tuple[float, str, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _ready: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Monitor:
        self._thread = threading.Thread(target=self._run, name="redis-monitor", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("MONITOR did not start")
        return self

    def _run(self) -> None:
        client = connect(self.url)
        try:
            with client.monitor() as monitor:  # type: ignore[no-untyped-call]
                self._ready.set()
                for item in monitor.listen():
                    if self._stop.is_set():
                        break
                    address = f"{item['client_address']}:{item['client_port']}"
                    self.events.append((item["time"], address, item["command"]))
        except (redis.RedisError, ValueError, AttributeError):
            if not self._stop.is_set():
                raise
        finally:
            client.close()

    def stop(self) -> None:
        self._stop.set()
        waker = connect(self.url)
        try:
            waker.ping()  # MONITOR blocks until the next command: give it one
        finally:
            waker.close()
        if self._thread is not None:
            self._thread.join(10)


def _first(events: list[tuple[float, str, str]], *needles: str, after: float | None = None,
           address: str | None = None) -> tuple[float, str] | None:
    for moment, where, command in events:
        if after is not None and moment < after:
            continue
        if address is not None and where != address:
            continue
        if all(n in command for n in needles):
            return moment, where
    return None


def analyse(run: Run, wall_start: float, events: list[tuple[float, str, str]]
            ) -> dict[str, Any]:
    """Milestones of one request, in ms since the client started it."""

    def client_ms(perf: float) -> float:
        return round((perf - run.started) * 1e3, 2)

    wall_end = wall_start + (run.finished - run.started)
    window = [e for e in events if wall_start - 0.001 <= e[0] <= wall_end + 0.2]

    def ms(found: tuple[float, str] | None) -> float | None:
        return None if found is None else round((found[0] - wall_start) * 1e3, 2)

    subscribe = _first(window, "SUBSCRIBE assistant:stream:")
    stream_channel = ""
    if subscribe is not None:
        command = next(c for m, _, c in window if m == subscribe[0] and "SUBSCRIBE" in c)
        stream_channel = command.split()[1]
    publishes = [e for e in window if stream_channel and e[2].startswith(
        f"PUBLISH {stream_channel} ")]
    tokens = [e for e in publishes if '"type": "token"' in e[2]]
    done = next((e for e in publishes if '"type": "done"' in e[2]), None)
    enqueue = _first(window, "LPUSH assistant.turns")
    taken = _first(window, "ZADD unacked_index", after=enqueue[0] if enqueue else None)
    lock = _first(window, "SET assistant:lock:", after=taken[0] if taken else None)
    # The task's last command before generating: its check for an already stored reply.
    engine_starts = None
    if lock is not None and tokens:
        before_first = [e for e in window
                        if e[1] == lock[1] and lock[0] <= e[0] < tokens[0][0]]
        if before_first:
            engine_starts = (before_first[-1][0], before_first[-1][1])
    # redis.asyncio's PubSub takes a fresh connection per request: its handshake comes first.
    handshake = None
    if subscribe is not None:
        handshake = _first([e for e in window if e[1] == subscribe[1]], "HELLO") or \
            _first([e for e in window if e[1] == subscribe[1]], "")
    marks: dict[str, float | None] = {
        "web_opens_pubsub_connection": ms(handshake),
        "web_subscribes": ms(subscribe),
        "web_dedupe_set": ms(_first(window, "SET assistant:dedupe:")),
        "web_enqueues_task": ms(enqueue),
        "worker_takes_task": ms(taken),
        "celery_event_published": ms(_first(window, "PUBLISH", "celeryev",
                                            after=taken[0] if taken else None)),
        "task_takes_lock": ms(lock),
        "task_ready_to_generate": ms(engine_starts),
        "first_token_published": ms((tokens[0][0], "")) if tokens else None,
        "client_first_chunk": client_ms(run.stamps[0]),
        "last_token_published": ms((tokens[-1][0], "")) if tokens else None,
        "client_last_chunk": client_ms(run.stamps[-1]),
        "done_published": ms((done[0], "")) if done else None,
        "client_headers": client_ms(run.marks["headers"]) if "headers" in run.marks else None,
        "client_finished": client_ms(run.finished),
    }
    worker_tps = None
    lag_ms: list[float] = []
    if len(tokens) > 1:
        worker_tps = (len(tokens) - 1) / (tokens[-1][0] - tokens[0][0])
        # Each token's trip from the worker's PUBLISH to the client (same host, same clock).
        for (moment, _, _), stamp in zip(tokens, run.stamps, strict=False):
            arrived = wall_start + (stamp - run.started)
            lag_ms.append((arrived - moment) * 1e3)
    return {
        "marks_ms": marks,
        "token_events_published": len(tokens),
        "worker_token_events_per_s": round(worker_tps, 2) if worker_tps else None,
        "client_tps": round(run.decode_tps, 2),
        "token_delivery_lag_ms_p50": round(quantile(lag_ms, 0.5), 3) if lag_ms else None,
        "token_delivery_lag_ms_p99": round(quantile(lag_ms, 0.99), 3) if lag_ms else None,
        "redis_commands": len(window),
        "redis_commands_per_token": round(len(window) / max(1, len(tokens)), 2),
    }


STEPS = [
    ("client → web handler (HTTP, FastAPI, validation)", None, "web_opens_pubsub_connection"),
    ("web: new pub/sub connection (connect, HELLO, SETINFO)", "web_opens_pubsub_connection",
     "web_subscribes"),
    ("web: subscribe, dedupe, pending, send_task", "web_subscribes", "web_enqueues_task"),
    ("queue → worker consumer takes the task", "web_enqueues_task", "worker_takes_task"),
    ("consumer → task running in the pool child (lock taken)", "worker_takes_task",
     "task_takes_lock"),
    ("task bookkeeping (pending, deliveries, stored reply)", "task_takes_lock",
     "task_ready_to_generate"),
    ("prompt + llama first token + publish", "task_ready_to_generate",
     "first_token_published"),
    ("first token: Redis pub/sub → web → SSE → client", "first_token_published",
     "client_first_chunk"),
]


def steps(marks: dict[str, float | None]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for label, start, end in STEPS:
        a = 0.0 if start is None else marks.get(start)
        b = marks.get(end)
        out[label] = None if a is None or b is None else round(b - a, 2)
    return out


def measure(pipeline: Pipeline, messages: list[dict[str, str]], max_tokens: int,
            requests: int) -> dict[str, Any]:
    monitor = Monitor(pipeline.redis_url).start()
    recorded: list[tuple[Run, float]] = []
    try:
        for _ in range(requests):
            run, wall, _ = pipeline.request(messages, max_tokens)
            recorded.append((run, wall))
            time.sleep(0.3)  # let the worker's trailing commands (ack, events) land
    finally:
        monitor.stop()
    events = sorted(monitor.events)
    per_request = [analyse(run, wall, events) for run, wall in recorded]
    step_values: dict[str, list[float]] = {}
    for item in per_request:
        item["steps_ms"] = steps(item["marks_ms"])
        for label, value in item["steps_ms"].items():
            if value is not None:
                step_values.setdefault(label, []).append(value)
    worker_tps = [r["worker_token_events_per_s"] for r in per_request
                  if r["worker_token_events_per_s"]]
    lag = [r["token_delivery_lag_ms_p50"] for r in per_request
           if r["token_delivery_lag_ms_p50"] is not None]
    return {
        "requests": requests,
        "note": "extra requests under Redis MONITOR (which slows every command); "
                "steps are medians over these requests, in ms",
        "ttft_steps_ms_p50": {k: round(quantile(v, 0.5), 2) for k, v in step_values.items()},
        "worker_token_events_per_s": summary(worker_tps),
        "client_tps_under_monitor": summary([r["client_tps"] for r in per_request]),
        "token_delivery_lag_ms_p50": round(quantile(lag, 0.5), 3) if lag else None,
        "per_request": per_request,
        "sample_commands_first_request": _sample(events, recorded[0]) if recorded else [],
    }


def _sample(events: list[tuple[float, str, str]], first: tuple[Run, float]) -> list[str]:
    """The commands of the first instrumented request up to its 2nd token (for the docs)."""
    run, wall = first
    out: list[str] = []
    tokens = 0
    for moment, address, command in events:
        if moment < wall - 0.001:
            continue
        if command.startswith("PUBLISH assistant:stream:"):
            tokens += 1
        out.append(f"{(moment - wall) * 1e3:9.2f} ms  {address:<21} {command[:110]}")
        if tokens >= 2 or len(out) >= 60:
            break
    return out
