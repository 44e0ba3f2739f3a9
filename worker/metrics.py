"""Prometheus metrics of a worker (to be built: issue 7)."""

from __future__ import annotations

from assistant.observe import TurnObserver
from assistant.settings import Settings


def turn_observers(settings: Settings) -> list[TurnObserver]:
    """Observers that turn each finished turn into metrics (none yet)."""
    return []
