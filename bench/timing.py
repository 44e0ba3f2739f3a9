"""One timed streamed generation, measured the same way for both paths."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.stats import quantile


@dataclass
class Run:
    """A stream as the caller saw it: when each non-empty content piece arrived."""

    started: float  # perf_counter() when the request was made
    stamps: list[float] = field(default_factory=list)  # perf_counter() of each content piece
    pieces: list[str] = field(default_factory=list)
    finished: float = 0.0  # perf_counter() when the stream ended
    marks: dict[str, float] = field(default_factory=dict)  # other client-side moments
    # Tokens generated, when known (the pipeline reports usage; its token events are
    # coalesced, so pieces are not tokens there).
    tokens: int | None = None

    def add(self, now: float, text: str) -> None:
        self.stamps.append(now)
        self.pieces.append(text)

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def chunks(self) -> int:
        return len(self.pieces)

    @property
    def ttft_ms(self) -> float:
        return (self.stamps[0] - self.started) * 1e3

    @property
    def token_count(self) -> int:
        return self.tokens if self.tokens is not None else len(self.pieces)

    @property
    def decode_tps(self) -> float:
        """Tokens after the first, divided by the time from the first piece to the last.

        The first piece is one token in both paths (the worker sends the first token alone).
        """
        span = self.stamps[-1] - self.stamps[0]
        return (self.token_count - 1) / span if span > 0 else float("nan")

    def gaps_ms(self) -> list[float]:
        return [(b - a) * 1e3 for a, b in zip(self.stamps, self.stamps[1:], strict=False)]

    def as_dict(self) -> dict[str, Any]:
        if not self.stamps:
            return {"chunks": 0, "error": "no content"}
        gaps = self.gaps_ms()
        out: dict[str, Any] = {
            "ttft_ms": round(self.ttft_ms, 2),
            "decode_tps": round(self.decode_tps, 2),
            "chunks": self.chunks,
            "tokens": self.token_count,
            "total_ms": round((self.finished - self.started) * 1e3, 1),
            "gap_ms_p50": round(quantile(gaps, 0.5), 3) if gaps else None,
            "gap_ms_p99": round(quantile(gaps, 0.99), 3) if gaps else None,
            "gap_ms_max": round(max(gaps), 3) if gaps else None,
        }
        for name, moment in self.marks.items():
            out[f"{name}_ms"] = round((moment - self.started) * 1e3, 2)
        return out
