"""The machine, and who else used its CPUs while we measured (Linux ``/proc``)."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def machine_info() -> dict[str, Any]:
    cpu_model = ""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not cpu_model:
                cpu_model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    try:
        import llama_cpp

        llama_version = str(llama_cpp.__version__)
    except Exception:  # pragma: no cover - reported, not fatal
        llama_version = "unknown"
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model or platform.processor() or "unknown",
        "cpu_simd": sorted(f for f in flags if f in {"avx", "avx2", "avx512f", "fma", "f16c"}),
        "mem_total_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "llama_cpp_python": llama_version,
        "loadavg_at_start": loadavg(),
    }


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def _busy_ticks() -> int:
    """Jiffies all CPUs spent not idle since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal
    return total - idle


def _proc_ticks(pid: int) -> int:
    """utime + stime of one process (its threads included), in jiffies; 0 if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = raw[raw.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def _ppid_map() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        parents[int(entry.name)] = int(raw[raw.rindex(")") + 2:].split()[1])
    return parents


def descendants(root: int) -> list[int]:
    """``root`` and every process below it (children started in new sessions included)."""
    parents = _ppid_map()
    found = [root]
    frontier = [root]
    while frontier:
        current = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == current and pid not in found:
                found.append(pid)
                frontier.append(pid)
    return found


def process_name(pid: int) -> str:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [w.decode(errors="replace") for w in cmdline if w]
    return " ".join(words[:6])


@dataclass
class CpuWindow:
    """CPU time used by our process tree and by everything else between start and stop."""

    started: float = 0.0
    busy0: int = 0
    ours0: dict[int, int] | None = None

    def start(self) -> CpuWindow:
        self.started = time.monotonic()
        self.busy0 = _busy_ticks()
        self.ours0 = {pid: _proc_ticks(pid) for pid in descendants(os.getpid())}
        return self

    def stop(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self.started
        busy = _busy_ticks() - self.busy0
        assert self.ours0 is not None
        pids = set(descendants(os.getpid())) | set(self.ours0)
        ours_by_pid = {pid: _proc_ticks(pid) - self.ours0.get(pid, 0) for pid in pids}
        ours = sum(max(0, t) for t in ours_by_pid.values())
        foreign = max(0, busy - ours)
        return {
            "seconds": round(elapsed, 2),
            "all_busy_cores": round(busy / CLOCK_TICKS / elapsed, 2) if elapsed else 0.0,
            "ours_cores": round(ours / CLOCK_TICKS / elapsed, 2) if elapsed else 0.0,
            # Other programs on this machine (other test runs, builds): noise in our numbers.
            "foreign_cores": round(foreign / CLOCK_TICKS / elapsed, 2) if elapsed else 0.0,
        }


def wait_until_quiet(max_wait: float, threshold_cores: float = 0.15, window: float = 2.0
                     ) -> dict[str, Any]:
    """Wait (up to ``max_wait`` s) until other programs use less than ``threshold_cores``."""
    started = time.monotonic()
    foreign = 0.0
    while True:
        probe = CpuWindow().start()
        time.sleep(window)
        foreign = probe.stop()["foreign_cores"]
        waited = time.monotonic() - started
        if foreign <= threshold_cores or waited >= max_wait:
            return {"waited_s": round(waited, 1), "foreign_cores": foreign,
                    "quiet": foreign <= threshold_cores}


def busiest_foreign(limit: int = 3) -> list[str]:
    """The busiest processes outside our tree right now (by CPU over 0.5 s), for the report."""
    ours = set(descendants(os.getpid()))
    pids = [p for p in _ppid_map() if p not in ours]
    before = {p: _proc_ticks(p) for p in pids}
    time.sleep(0.5)
    used = sorted(((_proc_ticks(p) - before[p], p) for p in pids), reverse=True)
    return [f"{process_name(p)[:80]} ({t / CLOCK_TICKS / 0.5:.2f} cores)"
            for t, p in used[:limit] if t > 0]
