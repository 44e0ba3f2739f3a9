"""Direct and pipeline requests alternated one by one, so both see the same machine.

This VM's speed drifts by ±10 % from minute to minute (docs/benchmarks.md); measuring the two
paths in separate phases minutes apart mixes that drift into the ratio. Alternating them pairs
each pipeline request with a direct one made a second earlier. The bench's own ``Llama`` sits
idle while the worker generates (they share the memory-mapped weights).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import direct
from bench.pipeline import Pipeline
from bench.stats import quantile, summary


def measure(stack: Pipeline, model_path: Path, context_size: int, threads: int,
            threads_batch: int, messages: list[dict[str, str]], max_tokens: int,
            repetitions: int, seed: int) -> dict[str, Any]:
    llama = direct.load(model_path, context_size, threads, threads_batch)
    try:
        direct.stream_once(llama, messages, max_tokens, seed)  # warm: prompt cached
        stack.request(messages, max_tokens)
        pairs = []
        for _ in range(repetitions):
            direct_run = direct.stream_once(llama, messages, max_tokens, seed)
            pipeline_run, _, _ = stack.request(messages, max_tokens)
            pairs.append((direct_run, pipeline_run))
    finally:
        direct.close(llama)
    ratios = [p.decode_tps / d.decode_tps for d, p in pairs]
    overheads = [p.ttft_ms - d.ttft_ms for d, p in pairs]
    return {
        "direct_decode_tps": summary([d.decode_tps for d, _ in pairs]),
        "pipeline_decode_tps": summary([p.decode_tps for _, p in pairs]),
        "direct_ttft_ms": summary([d.ttft_ms for d, _ in pairs]),
        "pipeline_ttft_ms": summary([p.ttft_ms for _, p in pairs]),
        "decode_ratio": summary(ratios, digits=3),
        "decode_ratio_p50": round(quantile(ratios, 0.5), 3),
        "ttft_overhead_ms": summary(overheads),
        "same_text": all(d.text == p.text for d, p in pairs),
        "runs": [{"direct": d.as_dict(), "pipeline": p.as_dict()} for d, p in pairs],
    }
