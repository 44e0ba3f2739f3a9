"""llama-cpp-python called in this process, exactly as the worker's engine calls it."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.stats import summary
from bench.timing import Run


def load(model_path: Path, context_size: int, threads: int, threads_batch: int | None = None
         ) -> Any:
    from llama_cpp import Llama

    return Llama(model_path=str(model_path), n_ctx=context_size, n_threads=threads,
                 n_threads_batch=threads_batch or threads, verbose=False)


def close(llama: Any) -> None:
    """Free the model and its context now (before the pipeline's worker loads its own)."""
    closer = getattr(llama, "close", None)
    if closer is not None:
        closer()
    del llama
    gc.collect()


def stream_once(llama: Any, messages: list[dict[str, str]], max_tokens: int, seed: int,
                on_piece: Callable[[int, str], None] | None = None) -> Run:
    run = Run(started=time.perf_counter())
    chunks = llama.create_chat_completion(messages=messages, stream=True, max_tokens=max_tokens,
                                          temperature=0, seed=seed)
    for chunk in chunks:
        text = chunk["choices"][0]["delta"].get("content")
        if text:  # the worker's engine skips empty pieces too (worker/llama.py)
            if on_piece is not None:
                on_piece(len(run.pieces), text)
            run.add(time.perf_counter(), text)
    run.finished = time.perf_counter()
    return run


def count_tokens(llama: Any, messages: list[dict[str, str]], max_tokens: int, seed: int
                 ) -> tuple[int, int, Run]:
    """Prompt and completion tokens of one call, seen at ``Llama.generate`` (a warm-up run)."""
    seen: dict[str, Any] = {"prompt": [], "completion": 0}
    original = llama.generate
    eos = llama.token_eos()

    def spy(tokens: Any, **kwargs: Any) -> Any:
        seen["prompt"] = list(tokens)
        for token in original(tokens, **kwargs):
            if token != eos:
                seen["completion"] += 1
            yield token

    llama.generate = spy
    try:
        run = stream_once(llama, messages, max_tokens, seed)
    finally:
        del llama.generate  # back to the class's method
    return len(seen["prompt"]), min(seen["completion"], max_tokens), run


def measure(model_path: Path, context_size: int, threads: int, messages: list[dict[str, str]],
            max_tokens: int, repetitions: int, warmup: int, seed: int = 0,
            cold: bool = False, threads_batch: int | None = None) -> dict[str, Any]:
    """Warm up, then time ``repetitions`` calls on one ``Llama`` (as one worker process does).

    With the same prompt every call, llama-cpp-python reuses the cached prompt prefix, as the
    worker's long-lived ``Llama`` does for the pipeline runs. ``cold`` adds one call after a
    ``reset()``: the whole prompt evaluated again (prompt-processing speed).
    """
    started = time.perf_counter()
    llama = load(model_path, context_size, threads, threads_batch)
    load_s = time.perf_counter() - started
    try:
        prompt_tokens, completion_tokens, first = count_tokens(llama, messages, max_tokens, seed)
        for _ in range(max(0, warmup - 1)):
            stream_once(llama, messages, max_tokens, seed)
        runs = [stream_once(llama, messages, max_tokens, seed) for _ in range(repetitions)]
        cold_run = None
        if cold:
            llama.reset()
            cold_run = stream_once(llama, messages, max_tokens, seed)
    finally:
        close(llama)
    result: dict[str, Any] = {
        "threads": threads,
        "threads_batch": threads_batch or threads,
        "load_s": round(load_s, 3),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "first_call": first.as_dict(),  # the first call on a fresh Llama: cold prompt
        "ttft_ms": summary([r.ttft_ms for r in runs]),
        "decode_tps": summary([r.decode_tps for r in runs]),
        "runs": [r.as_dict() for r in runs],
        "text": runs[-1].text,
        "pieces": runs[-1].pieces,
        "texts_identical_across_runs": len({r.text for r in runs}) == 1,
    }
    if cold_run is not None:
        result["cold_prompt_ttft_ms"] = round(cold_run.ttft_ms, 2)
        result["cold_prompt_tps"] = round(prompt_tokens / (cold_run.ttft_ms / 1e3), 1)
    return result

