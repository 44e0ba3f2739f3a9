"""The audit log: every admin action, who did it, to what, and the details (as JSON)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, func, select

from assistant.store.db import Store
from assistant.store.models import AuditEntry


class AuditLog:
    def __init__(self, store: Store) -> None:
        self.store = store

    def record(self, actor: str, action: str, target: str,
               details: dict[str, Any] | None = None) -> AuditEntry:
        """Append one entry; ``details`` must be JSON-serialisable."""
        entry = AuditEntry(actor=actor, action=action, target=target, details=details or {})
        with self.store.session() as session:
            session.add(entry)
        return entry

    def recent(self, limit: int = 100, offset: int = 0, actor: str | None = None,
               action: str | None = None) -> list[AuditEntry]:
        """Newest first."""
        query = _filtered(select(AuditEntry), actor, action)
        query = query.order_by(AuditEntry.id.desc()).limit(limit).offset(offset)
        with self.store.session() as session:
            return list(session.scalars(query))

    def count(self, actor: str | None = None, action: str | None = None) -> int:
        query = _filtered(select(func.count()).select_from(AuditEntry), actor, action)
        with self.store.session() as session:
            return int(session.scalar(query) or 0)

    def actions(self) -> list[str]:
        """The distinct actions logged so far (for a filter menu)."""
        with self.store.session() as session:
            return sorted(session.scalars(select(AuditEntry.action).distinct()))


def _filtered(query: Select[Any], actor: str | None, action: str | None) -> Select[Any]:
    if actor:
        query = query.where(AuditEntry.actor == actor)
    if action:
        query = query.where(AuditEntry.action == action)
    return query
