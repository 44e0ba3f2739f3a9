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
import sys
import threading
import time
from pathlib import Path
from typing import Any

from assistant.engine import GenerationRequest
from assistant.envelope import ChatMessage
from assistant.models import resolve_model_path
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results.json")
    args = parser.parse_args()
    path = resolve_model_path(args.model, ROOT / "models")
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
