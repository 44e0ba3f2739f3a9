"""``assistant safety eval FILE.jsonl``: run the input chain on labelled lines and measure it.

Each line is ``{"text": ..., "label": "safe"|"unsafe", "category": optional}``. A line counts
as caught when the chain's final action is ``block`` (a PII mask is not a refusal). Reported,
overall and per category: recall on unsafe lines, false-positive rate on safe lines, precision,
and the time per message (p50/p95, the chain's whole run including normalisation).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assistant.safety.verdict import Action

if TYPE_CHECKING:
    from assistant.settings import Settings

# One text in, the chain's final action out.
Runner = Callable[[str], Action]


@dataclass(frozen=True)
class Line:
    text: str
    unsafe: bool
    category: str


@dataclass(frozen=True)
class Result:
    line: Line
    action: Action
    milliseconds: float

    @property
    def blocked(self) -> bool:
        return self.action is Action.BLOCK


def load_lines(path: Path) -> list[Line]:
    """The labelled lines of a JSONL file; a malformed line is an error naming its number."""
    lines: list[Line] = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
            label = row["label"]
            if label not in ("safe", "unsafe"):
                raise ValueError(f"label must be safe or unsafe, not {label!r}")
            text = row["text"]
            if not isinstance(text, str):
                raise ValueError("text must be a string")
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: {exc}") from exc
        category = row.get("category") or ("unsafe" if label == "unsafe" else "safe")
        lines.append(Line(text, label == "unsafe", str(category)))
    return lines


def chain_runner(settings: Settings | None = None) -> Runner:
    """The input chain as the deployment runs it: the policy's checks in order (the default
    policy, or ``ASSISTANT_SAFETY_POLICY``), each category's action from the policy; no
    moderation log, no strikes, no canary (it only guards output)."""
    from assistant.prompts import PromptLibrary
    from assistant.safety.build import build_chain, load_policy, with_cache_dir
    from assistant.settings import Settings

    settings = settings or Settings()
    policy = load_policy(settings)
    chain = build_chain(policy, PromptLibrary.load(), extra=with_cache_dir(settings, None))
    channel = policy.for_channel("eval", "", "")

    def run(text: str) -> Action:
        return chain.run(text, "input", channel).action

    return run


def checks_runner(names: Sequence[str] | None = None) -> Runner:
    """Checks by name (default: the default policy's input checks) in the chain, each
    deciding its own action (no category actions): for measuring checks alone."""
    from assistant.safety.chain import SafetyChain
    from assistant.safety.checks import CHECKS
    from assistant.safety.policy import Policy

    names = list(names or Policy.load().for_channel("eval", "", "").input)
    chain = SafetyChain({name: CHECKS[name]() for name in names})
    channel = Policy.from_dict({"default": {"input": names, "output": []}}).for_channel(
        "eval", "", "")

    def run(text: str) -> Action:
        return chain.run(text, "input", channel).action

    return run


def run_lines(lines: Sequence[Line], runner: Runner) -> list[Result]:
    runner("warm up: load and train the classifiers before timing")
    results: list[Result] = []
    for line in lines:
        started = time.perf_counter()
        action = runner(line.text)
        results.append(Result(line, action, (time.perf_counter() - started) * 1000))
    return results


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _figures(results: Iterable[Result]) -> dict[str, Any]:
    results = list(results)
    unsafe = [r for r in results if r.line.unsafe]
    safe = [r for r in results if not r.line.unsafe]
    caught = sum(r.blocked for r in unsafe)
    false_positives = sum(r.blocked for r in safe)
    return {
        "n": len(results),
        "n_unsafe": len(unsafe),
        "n_safe": len(safe),
        "recall": _ratio(caught, len(unsafe)),
        "false_positive_rate": _ratio(false_positives, len(safe)),
        "precision": _ratio(caught, caught + false_positives),
        "blocked": caught + false_positives,
        # let through but logged for review (the uncertain band): not counted as caught
        "flagged": sum(r.action is Action.FLAG for r in results),
    }


def _percentile(values: Sequence[float], fraction: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(fraction * 100) - 1]


def report(results: Sequence[Result]) -> dict[str, Any]:
    """Overall and per-category figures plus latency, as ``--json`` prints them."""
    by_category: dict[str, list[Result]] = {}
    for result in results:
        by_category.setdefault(result.line.category, []).append(result)
    per_category = {}
    for category in sorted(by_category, key=_category_order):
        figures = _figures(by_category[category])
        if not (figures["n_safe"] and figures["n_unsafe"]):
            figures["precision"] = None  # trivially 1 or 0 within one label
        # A category holds safe lines, unsafe lines, or (rarely) both: drop what is empty.
        per_category[category] = {k: v for k, v in figures.items() if v is not None}
    times = [r.milliseconds for r in results]
    return {
        "overall": _figures(results),
        "per_category": per_category,
        "latency_ms": {
            "p50": round(_percentile(times, 0.50), 3) if times else None,
            "p95": round(_percentile(times, 0.95), 3) if times else None,
        },
    }


def _category_order(name: str) -> tuple[int, int, str]:
    if name.startswith("S") and name[1:].isdigit():
        return (0, int(name[1:]), name)
    return (1, 0, name)


def format_report(figures: dict[str, Any]) -> str:
    """The report as a small table for people."""
    def pct(value: float | None) -> str:
        return "  —  " if value is None else f"{value:.3f}"

    overall = figures["overall"]
    lines = [
        f"overall   n={overall['n']}  recall={pct(overall['recall'])} "
        f"({overall['n_unsafe']} unsafe)  false_positive_rate="
        f"{pct(overall['false_positive_rate'])} ({overall['n_safe']} safe)  "
        f"precision={pct(overall['precision'])}",
        f"latency   p50={figures['latency_ms']['p50']} ms  p95={figures['latency_ms']['p95']} ms",
        "",
        f"{'category':<26}{'n':>5}{'blocked':>9}{'flagged':>9}{'recall':>9}{'fp rate':>9}",
    ]
    for category, row in figures["per_category"].items():
        lines.append(f"{category:<26}{row['n']:>5}{row['blocked']:>9}{row['flagged']:>9}"
                     f"{pct(row.get('recall')):>9}{pct(row.get('false_positive_rate')):>9}")
    return "\n".join(lines)


def evaluate(path: Path, runner: Runner | None = None,
             settings: Settings | None = None) -> dict[str, Any]:
    """Run the input chain (or ``runner``) on every line of ``path`` and report."""
    lines = load_lines(path)
    if not lines:
        raise ValueError(f"{path}: no lines to evaluate")
    return report(run_lines(lines, runner or chain_runner(settings)))
