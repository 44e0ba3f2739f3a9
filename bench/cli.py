"""``python -m bench``: direct llama.cpp vs. the full pipeline, one run, one results file.

Order matters on a small machine: the direct runs go first and free their model before the
stack starts, so the two never compete for the cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import direct, system
from bench.load import merge_into

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent

TARGETS = {"decode_ratio_min": 0.95, "ttft_overhead_ms_p50_max": 15.0}

# Long enough that SmolLM2 writes past 128 tokens without stopping on its own.
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": (
        "Write a detailed story about a lighthouse keeper who finds a message in a bottle. "
        "Describe the characters, the setting and what happens next."
    )},
]
SEED = 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from assistant.settings import Settings

    settings = Settings()
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Decode speed and time to first token: llama.cpp direct vs. the pipeline.")
    parser.add_argument("--threads", type=int, default=settings.threads,
                        help="llama decode threads (n_threads) for both paths "
                             "(default: Settings().threads = %(default)s)")
    parser.add_argument("--threads-batch", type=int, default=None,
                        help="prompt-processing threads (n_threads_batch; default: = --threads, "
                             "as the brief's setup and Settings without ASSISTANT_THREADS_BATCH)")
    parser.add_argument("--repetitions", type=int, default=7,
                        help="timed requests per path (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed requests first (default %(default)s)")
    parser.add_argument("--max-tokens", type=int, default=128, help="default %(default)s")
    parser.add_argument("--model", default=settings.model,
                        help="model name or GGUF path (default: Settings().model = %(default)s)")
    parser.add_argument("--sweep", default="1,2,1/2",
                        help="thread counts for the direct sweep, each N (n_threads = "
                             "n_threads_batch = N) or N/B (n_threads N, n_threads_batch B) "
                             "(default %(default)s; empty to skip)")
    parser.add_argument("--breakdown-requests", type=int, default=3,
                        help="extra pipeline requests under Redis MONITOR to find where the "
                             "time goes (default %(default)s; 0 to skip)")
    parser.add_argument("--quiet-wait", type=float, default=60.0,
                        help="before each phase, wait up to this many seconds for other "
                             "programs to leave the CPUs alone (default %(default)s)")
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results.json")
    parser.add_argument("--log-dir", type=Path, default=BENCH_DIR / "logs",
                        help="stack process logs (default %(default)s)")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when a target is missed or the outputs differ")
    args = parser.parse_args(argv)
    args.settings = settings
    args.threads_batch = args.threads_batch or args.threads
    if args.threads < 1 or args.repetitions < 1 or args.max_tokens < 2:
        parser.error("--threads, --repetitions must be >= 1 and --max-tokens >= 2")
    return args


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def phase(name: str, args: argparse.Namespace, phases: dict[str, Any]) -> system.CpuWindow:
    quiet = system.wait_until_quiet(args.quiet_wait) if args.quiet_wait > 0 else {}
    if quiet and not quiet["quiet"]:
        busy = "; ".join(system.busiest_foreign())
        log(f"{name}: other programs still use {quiet['foreign_cores']} cores after "
            f"{quiet['waited_s']} s ({busy}); measuring anyway, results are noisy")
        quiet["busiest"] = busy
    phases[name] = {"before": quiet}
    log(f"{name} …")
    return system.CpuWindow().start()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from assistant.models import resolve_model_path

    settings = args.settings
    model_path = resolve_model_path(args.model, settings.models_dir)
    threads, max_tokens, reps = args.threads, args.max_tokens, args.repetitions
    batch = args.threads_batch
    machine = system.machine_info()
    phases: dict[str, Any] = {}
    started = time.perf_counter()
    log(f"model {model_path.name}, threads {threads}/{batch}, max_tokens {max_tokens}, "
        f"{reps} repetitions after {args.warmup} warm-up; {machine['nproc']} cores")

    # 1. Direct, at the thread count under test.
    window = phase("direct", args, phases)
    direct_result = direct.measure(model_path, settings.context_size, threads, MESSAGES,
                                   max_tokens, reps, args.warmup, SEED, cold=True,
                                   threads_batch=batch)
    phases["direct"]["cpu"] = window.stop()

    # 2. A small thread sweep, direct only (the defaults are chosen from it).
    sweep: dict[str, Any] = {}
    for entry in [x.strip() for x in args.sweep.split(",") if x.strip()]:
        count, _, batch_text = entry.partition("/")
        window = phase(f"sweep_{entry}", args, phases)
        result = direct.measure(model_path, settings.context_size, int(count), MESSAGES,
                                max_tokens, reps, args.warmup, SEED, cold=True,
                                threads_batch=int(batch_text) if batch_text else None)
        phases[f"sweep_{entry}"]["cpu"] = window.stop()
        sweep[entry] = {
            "threads": result["threads"],
            "threads_batch": result["threads_batch"],
            "decode_tps_p50": result["decode_tps"]["p50"],
            "decode_tps": result["decode_tps"],
            "ttft_ms_p50": result["ttft_ms"]["p50"],
            "cold_prompt_ttft_ms": result.get("cold_prompt_ttft_ms"),
            "cold_prompt_tps": result.get("cold_prompt_tps"),
            "runs_decode_tps": [r["decode_tps"] for r in result["runs"]],
            "same_text_as_main": result["text"] == direct_result["text"],
        }

    # 3. The pipeline (the direct Llama objects are gone by now).
    from bench import breakdown, paired, pipeline, publish

    run_logs = args.log_dir / datetime.now().strftime("%Y%m%d-%H%M%S")
    window = phase("pipeline", args, phases)
    stack = pipeline.Pipeline(model_path, threads, batch, max_tokens, settings.context_size,
                              run_logs)
    try:
        stack.start()
        pipe_result = pipeline.measure(stack, MESSAGES, max_tokens, reps, args.warmup)
        phases["pipeline"]["cpu"] = window.stop()
        # 4. The headline numbers: the two paths alternated request by request.
        window = phase("paired", args, phases)
        paired_result = paired.measure(stack, model_path, settings.context_size, threads,
                                       batch, MESSAGES, max_tokens, reps, SEED)
        phases["paired"]["cpu"] = window.stop()
        breakdown_result = None
        if args.breakdown_requests > 0:
            log("breakdown (Redis MONITOR) …")
            breakdown_result = breakdown.measure(stack, MESSAGES, max_tokens,
                                                 args.breakdown_requests)
            # The worker is idle now: the worker-side cost of publishing each token, alone.
            window = phase("publish_what_if", args, phases)
            breakdown_result["publish_what_if"] = publish.measure(
                model_path, settings.context_size, threads, MESSAGES, max_tokens, reps,
                args.warmup, stack.redis_url, SEED, threads_batch=batch)
            phases["publish_what_if"]["cpu"] = window.stop()
    finally:
        stack.close()

    results = assemble(args, model_path, machine, direct_result, pipe_result, paired_result,
                       sweep, breakdown_result, phases, run_logs)
    results["bench_seconds"] = round(time.perf_counter() - started, 1)
    # Other benches' keys (bench.conversation, bench.load, bench.build) stay; ours are replaced.
    merge_into(args.output, results)
    print(render_summary(results))
    print(f"\nwrote {args.output}")
    if args.strict and (not results["meets_targets"] or not results["outputs_match"]):
        return 1
    return 0


def assemble(args: argparse.Namespace, model_path: Path, machine: dict[str, Any],
             d: dict[str, Any], p: dict[str, Any], pair: dict[str, Any],
             sweep: dict[str, Any],
             bd: dict[str, Any] | None, phases: dict[str, Any], run_logs: Path
             ) -> dict[str, Any]:
    # Headline: the paired phase (direct and pipeline alternated request by request); the
    # separate phases, minutes apart, are kept under "direct" and "pipeline" for context.
    direct_tps = pair["direct_decode_tps"]["p50"]
    pipe_tps = pair["pipeline_decode_tps"]["p50"]
    direct_ttft = pair["direct_ttft_ms"]["p50"]
    pipe_ttft = pair["pipeline_ttft_ms"]["p50"]
    ratio = pair["decode_ratio_p50"]
    overhead = pair["ttft_overhead_ms"]["p50"]
    checks = {
        "decode_ratio": ratio >= TARGETS["decode_ratio_min"],
        "ttft_overhead_ms_p50": overhead <= TARGETS["ttft_overhead_ms_p50_max"],
    }
    outputs_match = d["text"] == p["text"] and pair["same_text"]
    noisy = [name for name, info in phases.items()
             if info.get("cpu", {}).get("foreign_cores", 0) > 0.2]
    try:
        shown_model = str(model_path.relative_to(ROOT))
    except ValueError:
        shown_model = str(model_path)
    return {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench " + " ".join(sys.argv[1:]),
        "model": shown_model,
        "threads": args.threads,
        "threads_batch": args.threads_batch,
        "context_size": args.settings.context_size,
        "max_tokens": args.max_tokens,
        "temperature": 0,
        "repetitions": args.repetitions,
        "warmup": args.warmup,
        "prompt_tokens": d["prompt_tokens"],
        "completion_tokens": d["completion_tokens"],
        # The pipeline coalesces token events (first token alone, then every 40 ms), so its
        # chunks are fewer than its tokens; decode speed counts tokens on both sides.
        "completion_chunks": {"direct": len(d["pieces"]), "pipeline": len(p["pieces"])},
        "pipeline_completion_tokens": p["completion_tokens"],
        "outputs_match": outputs_match,
        # Direct decode speed counts text pieces; equal to tokens for this prompt's English.
        "pieces_equal_tokens": d["completion_tokens"] == len(d["pieces"]),
        "direct_decode_tps": direct_tps,
        "pipeline_decode_tps": pipe_tps,
        "decode_ratio": ratio,
        "direct_ttft_ms": direct_ttft,
        "pipeline_ttft_ms": pipe_ttft,
        "ttft_overhead_ms_p50": overhead,
        "targets": TARGETS,
        "target_checks": checks,
        "meets_targets": all(checks.values()),
        "noisy_phases": noisy,
        "machine": machine,
        "direct": {k: v for k, v in d.items() if k not in {"pieces", "text"}},
        "pipeline": {k: v for k, v in p.items() if k not in {"pieces", "text"}},
        "paired": pair,
        "separate_phases": {
            "decode_ratio": round(p["decode_tps"]["p50"] / d["decode_tps"]["p50"], 3),
            "ttft_overhead_ms_p50": round(p["ttft_ms"]["p50"] - d["ttft_ms"]["p50"], 2),
        },
        "thread_sweep": sweep,
        "breakdown": bd,
        "phases": phases,
        "messages": MESSAGES,
        "output_text": d["text"],
        "pipeline_output_text": None if d["text"] == p["text"] else p["text"],
        "stack_logs": str(run_logs.relative_to(ROOT)) if run_logs.is_relative_to(ROOT)
        else str(run_logs),
    }


def render_summary(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        "",
        f"bench  {r['timestamp']}  {r['model']}  threads={r['threads']}/{r['threads_batch']}  "
        f"max_tokens={r['max_tokens']}  reps={r['repetitions']}",
        f"machine  {m['nproc']} cores, {m['cpu_model']}",
        f"prompt {r['prompt_tokens']} tokens, completion {r['completion_tokens']} tokens "
        f"(chunks direct {r['completion_chunks']['direct']}, "
        f"pipeline {r['completion_chunks']['pipeline']}); "
        f"outputs match: {'yes' if r['outputs_match'] else 'NO'}",
        "",
        "paired (direct and pipeline requests alternated):",
        f"{'':24}{'direct':>10}{'pipeline':>10}{'':>4}target",
        f"{'decode tok/s (p50)':24}{r['direct_decode_tps']:>10.1f}"
        f"{r['pipeline_decode_tps']:>10.1f}",
        f"{'  ratio':24}{'':>10}{r['decode_ratio']:>10.3f}    >= "
        f"{r['targets']['decode_ratio_min']}  "
        f"{'ok' if r['target_checks']['decode_ratio'] else 'MISSED'}",
        f"{'TTFT ms (p50)':24}{r['direct_ttft_ms']:>10.1f}{r['pipeline_ttft_ms']:>10.1f}",
        f"{'  overhead ms':24}{'':>10}{r['ttft_overhead_ms_p50']:>10.1f}    <= "
        f"{r['targets']['ttft_overhead_ms_p50_max']:g}  "
        f"{'ok' if r['target_checks']['ttft_overhead_ms_p50'] else 'MISSED'}",
        f"separate phases, minutes apart: ratio {r['separate_phases']['decode_ratio']}, "
        f"TTFT overhead {r['separate_phases']['ttft_overhead_ms_p50']} ms",
    ]
    if r["thread_sweep"]:
        lines.append("")
        lines.append("thread sweep (direct): " + ", ".join(
            f"{t}: {s['decode_tps_p50']:.1f} tok/s decode, "
            f"cold prompt {s['cold_prompt_tps']} tok/s" for t, s in r["thread_sweep"].items()))
    bd = r.get("breakdown")
    if bd:
        lines.append("")
        lines.append("TTFT breakdown (ms, p50 of requests under Redis MONITOR):")
        for label, value in bd["ttft_steps_ms_p50"].items():
            lines.append(f"  {value:8.2f}  {label}")
        events_per_s = bd["worker_token_events_per_s"].get("p50")
        lines.append(f"  worker publishes {events_per_s} token events/s; "
                     f"token delivery lag p50 {bd['token_delivery_lag_ms_p50']} ms")
        what_if = bd.get("publish_what_if")
        if what_if:
            lines.append("direct decode with the worker's publishing, interleaved (tok/s p50, "
                         "ratio to none, ms per token in the generating thread):")
            for mode, info in what_if["modes"].items():
                lines.append(f"  {mode:18} {info['decode_tps']['p50']:7.1f}  "
                             f"{info['ratio_to_none']:.3f}  "
                             f"{info['generating_thread_ms_per_token']:.3f} ms  "
                             f"{info['publishes_per_request']:g} PUBLISH/request")
    cpu = r["pipeline"]["cpu_by_process"]
    lines.append("")
    lines.append("pipeline CPU per token (µs): " + ", ".join(
        f"{role.split(' ')[0]} {v['cpu_us_per_token']:g}" for role, v in cpu.items()))
    if r["noisy_phases"]:
        lines.append("")
        lines.append("WARNING: other programs used the CPUs during: "
                     + ", ".join(f"{n} ({r['phases'][n]['cpu']['foreign_cores']} cores)"
                                 for n in r["noisy_phases"]) + " — rerun on a quiet machine")
    lines.append("")
    lines.append("meets targets: " + ("yes" if r["meets_targets"] else "NO"))
    if not r["outputs_match"]:
        lines.append("WARNING: direct and pipeline produced different tokens at temperature 0")
    return "\n".join(lines)
