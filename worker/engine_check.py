"""The engine self-test's child process: ``python -m worker.engine_check MODEL [--threads N]``.

It prints the engine's build (``llama_print_system_info``) before anything can crash, then
loads the model, reads a short prompt as one batch, decodes a few tokens greedily, checks that
the logits are finite, and prints one JSON line. The parent (``assistant.selftest``) reads
what it printed and how it ended: a signal here costs this process, not a user's message.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

PROMPT = "The three primary colours are red, yellow and"
TOKENS = 8


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.engine_check")
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode(errors="replace").strip()
    print(f"system_info: {info}", flush=True)
    print(f"llama_cpp_version: {llama_cpp.__version__}", flush=True)
    started = time.monotonic()
    llm = llama_cpp.Llama(model_path=args.model, n_ctx=256, n_batch=64, n_threads=args.threads,
                          n_threads_batch=args.threads, verbose=False)
    loaded = time.monotonic()
    print("stage: loaded", flush=True)
    prompt = llm.tokenize(PROMPT.encode(), add_bos=True, special=False)
    generated: list[int] = []
    for token in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
        if not generated:
            # The prompt was read as one batch (matrix kernels), now one token at a time.
            print("stage: prompt read", flush=True)
        generated.append(token)
        if token == llm.token_eos() or len(generated) >= TOKENS:
            break
    logits = llm.scores[llm.n_tokens - 1]
    finite = all(math.isfinite(float(value)) for value in logits)
    result = {
        "ok": finite and bool(generated),
        "tokens": len(generated),
        "text": llm.detokenize(generated).decode(errors="replace"),
        "load_seconds": round(loaded - started, 3),
        "decode_seconds": round(time.monotonic() - loaded, 3),
        "finite_logits": finite,
    }
    print("result: " + json.dumps(result), flush=True)
    return 0 if result["ok"] else 3


if __name__ == "__main__":
    sys.exit(main())
