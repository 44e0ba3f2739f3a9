"""``python -m bench.prefix``: saved states found by their token prefix (issue 19).

OpenAI-style clients send the whole history with every request. Measured in one run, through
the whole pipeline (web → Redis → Celery worker → web, streamed ``POST /v1/chat/completions``)
and, as the anchor, llama-cpp-python's own server with ``--cache true`` (same model, context
and threads):

1. **/v1 histories**: for each of ``--repeats`` rounds, a long history A (``--history-tokens``)
   is sent cold; then A's next turn (A + the reply + a new question: "next turn"); then another
   long history B, cold; then A's turn after that ("back after another conversation"). TTFT at
   the client, first content chunk. Speed-ups are each round's cold A over the warm turns.
2. **mixed load** (pipeline only): ``--conversations`` conversations, half through ``/v1``
   (full histories) and half through ``/api/chat``, in round robin for ``--turns`` turns, on a
   node whose state directory has a small budget (``--budget-mb``). From the worker's log:
   the share of prompts that restored a saved beginning or reused the context
   (``prefix_hit_rate``), tokens reused vs read; and the state directory's size after every
   round against its budget.

3. **right after a reply** (pipeline only, ``--after-rounds``): a new conversation's first
   ``/v1`` request sent the moment another conversation's reply (a history of
   ``--history-tokens`` and a reply of up to ``--after-reply-tokens``) ended, against the same
   kind of request on an idle worker (2 s after the last reply). TTFT at the client; issue 20
   asks for the difference to stay under 0.1 s (the worker used to finish saving the previous
   conversation's state first).

4. **interleaved /v1** (pipeline only, ``--interleaved-turns``): ``--interleaved-conversations``
   OpenAI-style clients in round robin on one node of two processes sharing the host's state
   directory; the last turn's TTFT against the same requests read cold (one word of the system
   prompt changed, so no saved beginning matches).
5. **engine ceiling**: llama.cpp alone, in this process, on phase 1's first next turn: the whole
   prompt read against only the tokens a saved state leaves, plus one token each
   (``bench.conversation.engine_ceiling``); ``*_of_ceiling`` is the pipeline's speed-up as a
   share of the ceiling's (1.0: nothing lost beyond what llama.cpp itself must read).

Keys merged into ``bench/results.json``: ``v1_next_turn_speedup``,
``v1_back_after_other_speedup``, ``prefix_hit_rate``, ``v1_interleaved_speedup_turn20``,
``v1_engine_ceiling_speedup`` and details under ``prefix``, with the anchor's figures beside
them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench import system
from bench.conversation import (
    ROOT,
    PipelineTarget,
    ServerTarget,
    Turn,
    engine_ceiling,
    log,
    stream_completion,
)
from bench.load import merge_into

SYSTEM = "You are Assistant, a friendly helper for a small harbour town. Answer briefly."
PLACES = ["harbour", "lighthouse", "fish market", "old ferry", "boat yard", "village school",
          "chapel", "tide mill", "sea wall", "net loft"]


def history(label: str, tokens: int) -> list[dict[str, str]]:
    """An earlier conversation of about ``tokens`` tokens (~90 per exchange), as a client
    keeps it; ``label`` makes each one's text its own."""
    messages = [{"role": "system", "content": SYSTEM}]
    for turn in range(max(1, tokens // 90)):
        place = PLACES[(turn + len(label)) % len(PLACES)]
        messages.append({"role": "user", "content":
                         f"{label}, day {turn}: what happened at the {place} this morning?"})
        messages.append({"role": "assistant", "content":
                         f"On day {turn} at the {place}, {label} saw the boats come in early, "
                         "the nets were mended by the old sailors, and the children watched "
                         "the gulls over the water while the tide went slowly out to sea."})
    return messages


def ask(client: httpx.Client, messages: list[dict[str, str]], question: str,
        max_tokens: int) -> Turn:
    """Send ``messages`` + ``question``; the reply joins the history, as a client keeps it."""
    messages.append({"role": "user", "content": question})
    turn = stream_completion(client, messages, max_tokens)
    messages.append({"role": "assistant", "content": turn.reply})
    return turn


def v1_rounds(client: httpx.Client, repeats: int, history_tokens: int,
              max_tokens: int, first_next_turn: list[dict[str, str]] | None = None
              ) -> list[dict[str, float]]:
    """``first_next_turn``, if given, receives the first round's next-turn request (its
    messages, the reply it got last) for the engine ceiling."""
    rounds = []
    for index in range(repeats):
        a, b = history(f"Anna{index}", history_tokens), history(f"Bert{index}", history_tokens)
        cold = ask(client, a, "Which day was the calmest?", max_tokens)
        log(f"  round {index}: A cold {cold.ttft_ms:.0f} ms")
        next_turn = ask(client, a, "And the windiest?", max_tokens)
        log(f"  round {index}: A next turn {next_turn.ttft_ms:.0f} ms")
        if index == 0 and first_next_turn is not None:
            first_next_turn.extend(a)
        other = ask(client, b, "Which day was the busiest?", max_tokens)
        log(f"  round {index}: B cold {other.ttft_ms:.0f} ms")
        back = ask(client, a, "Tell me more about that day.", max_tokens)
        log(f"  round {index}: A back after B {back.ttft_ms:.0f} ms")
        rounds.append({"cold_ms": round(cold.ttft_ms, 1),
                       "next_turn_ms": round(next_turn.ttft_ms, 1),
                       "other_cold_ms": round(other.ttft_ms, 1),
                       "back_after_other_ms": round(back.ttft_ms, 1)})
    return rounds


def after_reply_rounds(client: httpx.Client, rounds: int, history_tokens: int,
                       reply_tokens: int) -> dict[str, Any]:
    """TTFT of a new conversation's first request right after another's reply vs idle."""
    measured = []
    for index in range(rounds):
        time.sleep(2.0)  # the worker is idle: any state save has long ended
        idle = stream_completion(client, [{"role": "system", "content": SYSTEM},
                                          {"role": "user", "content":
                                           f"Guest {index}: name a bird of the coast."}], 16)
        previous = history(f"Carl{index}", history_tokens)
        previous.append({"role": "user", "content": "Write an eight-line poem about the sea."})
        stream_completion(client, previous, reply_tokens)
        after = stream_completion(client, [{"role": "system", "content": SYSTEM},
                                           {"role": "user", "content":
                                            f"Visitor {index}: name a fish of the coast."}], 16)
        log(f"  after-reply round {index}: idle {idle.ttft_ms:.0f} ms, "
            f"right after a reply {after.ttft_ms:.0f} ms")
        measured.append({"idle_ms": round(idle.ttft_ms, 1), "after_ms": round(after.ttft_ms, 1)})
    return {"rounds": measured,
            "idle_ms_median": statistics.median(r["idle_ms"] for r in measured),
            "after_ms_median": statistics.median(r["after_ms"] for r in measured),
            "extra_ms_median": round(statistics.median(r["after_ms"] - r["idle_ms"]
                                                       for r in measured), 1)}


def summary(rounds: list[dict[str, float]]) -> dict[str, Any]:
    next_ratios = [r["cold_ms"] / r["next_turn_ms"] for r in rounds]
    back_ratios = [r["cold_ms"] / r["back_after_other_ms"] for r in rounds]
    return {"rounds": rounds,
            "cold_ms_median": statistics.median(r["cold_ms"] for r in rounds),
            "next_turn_ms_median": statistics.median(r["next_turn_ms"] for r in rounds),
            "back_after_other_ms_median": statistics.median(
                r["back_after_other_ms"] for r in rounds),
            "next_turn_speedup": round(statistics.median(next_ratios), 1),
            "back_after_other_speedup": round(statistics.median(back_ratios), 1)}


def as_transcript(messages: list[dict[str, str]]) -> tuple[str, list[tuple[str, str]]]:
    """A /v1 history (system, then user/assistant pairs) as ``engine_ceiling`` takes it."""
    turns = messages[1:]
    return messages[0]["content"], [(turns[i]["content"], turns[i + 1]["content"])
                                     for i in range(0, len(turns) - 1, 2)]


def interleaved_v1(client: httpx.Client, conversations: int, turns: int,
                   max_tokens: int) -> dict[str, Any]:
    """``conversations`` OpenAI-style clients (each sends its whole history) in round robin
    for ``turns`` turns; then each one's last request again with one word of its system
    prompt changed, so that no saved beginning matches: the same length, read cold."""
    histories = [[{"role": "system", "content": SYSTEM}] for _ in range(conversations)]
    last: list[Turn] = []
    for turn in range(1, turns + 1):
        for n, messages in enumerate(histories):
            question = (f"Guest {n}, day {turn}: tell me about the "
                        f"{PLACES[(n + turn) % len(PLACES)]}.")
            result = ask(client, messages, question, max_tokens)
            if turn == turns:
                last.append(result)
        log(f"  interleaved /v1 turn {turn}: p50 TTFT "
            f"{statistics.median(t.ttft_ms for t in last) if last else 0:.0f} ms"
            if turn == turns else f"  interleaved /v1 turn {turn} done")
    colds = []
    for n, messages in enumerate(histories):
        changed = [{"role": "system", "content": SYSTEM.replace("Answer", f"Cold {n}. Answer")},
                   *messages[1:-1]]
        colds.append(stream_completion(client, changed, max_tokens))
    warm_ms = statistics.median(t.ttft_ms for t in last)
    cold_ms = statistics.median(t.ttft_ms for t in colds)
    return {"turn": turns, "conversations": conversations,
            "last_turn_ttft_ms": [round(t.ttft_ms, 1) for t in last],
            "cold_ttft_ms": [round(t.ttft_ms, 1) for t in colds],
            "last_turn_ttft_ms_p50": round(warm_ms, 1), "cold_ttft_ms_p50": round(cold_ms, 1),
            "speedup": round(cold_ms / warm_ms, 1) if warm_ms > 0 else 0.0}


PROMPT_LINE = re.compile(r"prompt of (\d+) tokens: (\d+) reused \((\w+)\)")
ANSWERED_LINE = re.compile(r"answered \d+ openai message\(s\): generated, \d+ tokens, "
                           r"first token ([\d.]+) s")


def worker_rounds(target: PipelineTarget, repeats: int) -> list[dict[str, float]]:
    """The same rounds as the worker saw them: its first token after the turn started
    (assistant/logs.py), without the queue, the web edge and the input screening of the
    history's messages before the engine starts."""
    assert target.stack is not None
    time.sleep(1.0)  # the last turn's line is written just after its reply went out
    seconds = [float(s) for name in target.stack.workers
               for s in ANSWERED_LINE.findall(target.stack.log(f"worker-{name}"))]
    seconds = seconds[1:]  # the warm-up request
    names = ("cold_ms", "next_turn_ms", "other_cold_ms", "back_after_other_ms")
    return [{name: round(1000 * seconds[4 * index + n], 1) for n, name in enumerate(names)}
            for index in range(repeats) if len(seconds) >= 4 * index + 4]


def reuse_from_logs(target: PipelineTarget) -> dict[str, Any]:
    """Every prompt the workers read, from their log lines (worker/llama.py)."""
    assert target.stack is not None
    prompts = [(int(total), int(reused), source)
               for name in target.stack.workers
               for total, reused, source in PROMPT_LINE.findall(
                   target.stack.log(f"worker-{name}"))]
    sources: dict[str, int] = {}
    for _, _, source in prompts:
        sources[source] = sources.get(source, 0) + 1
    hits = sum(1 for _, reused, _ in prompts if reused > 0)
    return {"prompts": len(prompts), "with_reuse": hits, "sources": sources,
            "hit_rate": round(hits / len(prompts), 3) if prompts else 0.0,
            "tokens_reused": sum(reused for _, reused, _ in prompts),
            "tokens_read": sum(total - reused for total, reused, _ in prompts)}


def directory_bytes(root: Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*.kv") if path.is_file())


def mixed_load(target: PipelineTarget, state_root: Path, conversations: int, turns: int,
               max_tokens: int) -> dict[str, Any]:
    assert target.client is not None
    histories = {n: [{"role": "system", "content": SYSTEM}] for n in range(conversations)}
    sizes = []
    for turn in range(turns):
        for n in range(conversations):
            question = f"Guest {n}, day {turn}: tell me about the {PLACES[(n + turn) % 10]}."
            if n % 2 == 0:  # an OpenAI client: the whole history each time
                ask(target.client, histories[n], question, max_tokens)
            else:
                target.send(f"prefix-bench-{n}", question)
        sizes.append(directory_bytes(state_root))
        log(f"  mixed round {turn}: state directory {sizes[-1] >> 20} MB")
    return {"state_directory_bytes_by_round": sizes, "state_directory_max_bytes": max(sizes)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from assistant.settings import Settings

    settings = Settings()
    parser = argparse.ArgumentParser(prog="python -m bench.prefix",
                                     description="States found by their token prefix (issue 19).")
    parser.add_argument("--model", default=settings.model)
    parser.add_argument("--threads", type=int, default=settings.threads)
    parser.add_argument("--context-size", type=int, default=8192)
    parser.add_argument("--history-tokens", type=int, default=2500)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--conversations", type=int, default=50)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--budget-mb", type=int, default=256,
                        help="the state directory's budget in the mixed load (default %(default)s)")
    parser.add_argument("--after-rounds", type=int, default=5,
                        help="rounds of the right-after-a-reply phase (0: skip it)")
    parser.add_argument("--after-reply-tokens", type=int, default=160)
    parser.add_argument("--skip-v1", action="store_true", help="skip the /v1 rounds")
    parser.add_argument("--skip-server", action="store_true")
    parser.add_argument("--skip-mixed", action="store_true")
    parser.add_argument("--interleaved-conversations", type=int, default=8)
    parser.add_argument("--interleaved-turns", type=int, default=20,
                        help="turns of the /v1 round robin on one node of two processes "
                             "(0: skip it)")
    parser.add_argument("--skip-ceiling", action="store_true")
    parser.add_argument("--quiet-wait", type=float, default=0.0)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument("--log-dir", type=Path, default=ROOT / "bench" / "logs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from assistant.models import resolve_model_path
    from assistant.settings import Settings

    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    settings = Settings()
    model_path = resolve_model_path(args.model, settings.models_dir)
    log_dir = args.log_dir / ("prefix-" + datetime.now().strftime("%Y%m%d-%H%M%S"))
    env = {"ASSISTANT_MODEL": str(model_path), "ASSISTANT_THREADS": str(args.threads),
           "ASSISTANT_THREADS_BATCH": str(args.threads),
           "ASSISTANT_CONTEXT_SIZE": str(args.context_size),
           "ASSISTANT_MAX_TOKENS": str(args.max_tokens), "ASSISTANT_TEMPERATURE": "0",
           "ASSISTANT_REPLY_TIMEOUT": "600", "ASSISTANT_WORKER_METRICS_PORT": "0",
           "ASSISTANT_USER_RATE_LIMIT": "100000/minute",
           "ASSISTANT_CHANNEL_RATE_LIMIT": "100000/minute"}
    quiet = system.wait_until_quiet(args.quiet_wait) if args.quiet_wait > 0 else {}
    details: dict[str, Any] = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "setup": {"model": str(model_path), "threads": args.threads,
                  "context_size": args.context_size, "history_tokens": args.history_tokens,
                  "max_tokens": args.max_tokens, "repeats": args.repeats,
                  "conversations": args.conversations, "turns": args.turns,
                  "budget_mb": args.budget_mb, "nproc": os.cpu_count(),
                  "load_average_at_start": os.getloadavg()},
        "quiet": quiet}

    log("phase v1 (pipeline)")
    states = log_dir / "states"
    pipeline = PipelineTarget(model_path, log_dir / "v1", 1, {
        **env, "ASSISTANT_KV_CACHE_MB": "1024", "ASSISTANT_KV_CACHE_DIR": str(states)}).start()
    first_next_turn: list[dict[str, str]] = []
    try:
        assert pipeline.client is not None
        stream_completion(pipeline.client, [{"role": "user", "content": "Hi"}], 1)  # load
        ours: dict[str, Any] = {}
        if not args.skip_v1:
            window = system.CpuWindow()
            window.start()
            ours = summary(v1_rounds(pipeline.client, args.repeats, args.history_tokens,
                                     args.max_tokens, first_next_turn))
            ours["cpu"] = window.stop()
            ours["reuse"] = reuse_from_logs(pipeline)
            ours["worker_side"] = summary(worker_rounds(pipeline, args.repeats))
        if args.after_rounds > 0:
            log("phase right after a reply (pipeline)")
            window = system.CpuWindow()
            window.start()
            details["after_reply"] = after_reply_rounds(
                pipeline.client, args.after_rounds, args.history_tokens,
                args.after_reply_tokens)
            details["after_reply"]["cpu"] = window.stop()
    finally:
        pipeline.close()
    details["pipeline"] = ours

    anchor: dict[str, Any] = {}
    if not args.skip_server:
        log("phase v1 (llama_cpp.server --cache true)")
        server = ServerTarget(model_path, log_dir, args.context_size, args.threads,
                              args.max_tokens, SYSTEM, cache=True).start()
        try:
            assert server.client is not None
            stream_completion(server.client, [{"role": "user", "content": "Hi"}], 1)
            window = system.CpuWindow()
            window.start()
            anchor = summary(v1_rounds(server.client, args.repeats, args.history_tokens,
                                       args.max_tokens))
            anchor["cpu"] = window.stop()
        finally:
            server.close()
    details["llama_cpp_server_cache"] = anchor

    mixed: dict[str, Any] = {}
    if not args.skip_mixed:
        log("phase mixed load")
        mixed_states = log_dir / "mixed-states"
        target = PipelineTarget(model_path, log_dir / "mixed", 1, {
            **env, "ASSISTANT_KV_CACHE_MB": str(args.budget_mb),
            "ASSISTANT_KV_CACHE_DIR": str(mixed_states)}).start()
        try:
            assert target.client is not None
            stream_completion(target.client, [{"role": "user", "content": "Hi"}], 1)
            mixed = mixed_load(target, mixed_states, args.conversations, args.turns,
                               args.max_tokens)
            mixed["reuse"] = reuse_from_logs(target)
            mixed["within_budget"] = mixed["state_directory_max_bytes"] <= args.budget_mb << 20
        finally:
            target.close()
    details["mixed"] = mixed

    interleaved: dict[str, Any] = {}
    if args.interleaved_turns > 0:
        log("phase interleaved /v1 (one node of two processes)")
        # Two pool processes: processes x threads <= cores, as `assistant worker --processes
        # 2` plans it.
        shared = str(max(1, min(args.threads, (os.cpu_count() or 1) // 2)))
        target = PipelineTarget(model_path, log_dir / "interleaved", 1, {
            **env, "ASSISTANT_THREADS": shared, "ASSISTANT_THREADS_BATCH": shared,
            "ASSISTANT_KV_CACHE_MB": "1024",
            "ASSISTANT_KV_CACHE_DIR": str(log_dir / "interleaved-states")},
            concurrency=2).start()
        try:
            assert target.client is not None
            for _ in range(2):  # both processes load the model
                stream_completion(target.client, [{"role": "user", "content": "Hi"}], 1)
            interleaved = interleaved_v1(target.client, args.interleaved_conversations,
                                         args.interleaved_turns, args.max_tokens)
            interleaved["threads_per_process"] = int(shared)
            interleaved["reuse"] = reuse_from_logs(target)
        finally:
            target.close()
    details["interleaved_v1"] = interleaved

    if first_next_turn and not args.skip_ceiling:
        log("phase engine_ceiling (llama.cpp alone, the /v1 next turn)")
        system_prompt, transcript = as_transcript(first_next_turn)
        ceiling = engine_ceiling(model_path, args.context_size, args.threads, system_prompt,
                                 transcript)
        details["engine_ceiling"] = ceiling
        if ours:
            # How close the pipeline comes to llama.cpp reading just the new tokens: 1.0
            # would be no cost beyond the engine's own reading.
            for name in ("next_turn", "back_after_other"):
                ours[f"{name}_of_ceiling"] = round(
                    ours[f"{name}_speedup"] / ceiling["speedup"], 2)

    results: dict[str, Any] = {"prefix": details}
    if ours:
        results["v1_next_turn_speedup"] = ours["next_turn_speedup"]
        results["v1_back_after_other_speedup"] = ours["back_after_other_speedup"]
    if mixed:
        results["prefix_hit_rate"] = mixed["reuse"]["hit_rate"]
    if interleaved:
        results["v1_interleaved_speedup_turn20"] = interleaved["speedup"]
    if "engine_ceiling" in details:
        results["v1_engine_ceiling_speedup"] = details["engine_ceiling"]["speedup"]
    if anchor:
        details["anchor"] = {"v1_next_turn_speedup": anchor["next_turn_speedup"],
                             "v1_back_after_other_speedup": anchor["back_after_other_speedup"]}
    merge_into(args.output, results)
    print(json.dumps({k: v for k, v in results.items() if k != "prefix"}, indent=2))
    print(json.dumps({"pipeline": {k: v for k, v in ours.items() if k != "cpu"},
                      "after_reply": details.get("after_reply"),
                      "anchor": {k: v for k, v in anchor.items() if k != "cpu"},
                      "mixed": mixed, "interleaved_v1": interleaved,
                      "engine_ceiling": details.get("engine_ceiling")}, indent=2, default=str))
    print(f"\nmerged into {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
