"""The moderation log: every non-allow safety verdict, for the admin panel to review."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select

from assistant.store.db import Store
from assistant.store.models import ModerationEvent, utcnow


class ModerationLog:
    def __init__(self, store: Store) -> None:
        self.store = store

    def record(self, events: Sequence[ModerationEvent]) -> None:
        if not events:
            return
        with self.store.session() as session:
            session.add_all(events)

    def recent(
        self,
        *,
        limit: int = 100,
        offset: int = 0,
        category: str | None = None,
        action: str | None = None,
        platform: str | None = None,
        user_id: str | None = None,
        conversation: str | None = None,
        since: datetime | None = None,
        reviewed: bool | None = None,
    ) -> list[ModerationEvent]:
        """Newest first, filtered by whichever arguments are given."""
        query = (select(ModerationEvent).order_by(ModerationEvent.id.desc())
                 .limit(limit).offset(offset))
        filters = {
            ModerationEvent.category: category,
            ModerationEvent.action: action,
            ModerationEvent.platform: platform,
            ModerationEvent.user_id: user_id,
            ModerationEvent.conversation: conversation,
            ModerationEvent.reviewed: reviewed,
        }
        for column, value in filters.items():
            if value is not None:
                query = query.where(column == value)
        if since is not None:
            query = query.where(ModerationEvent.created_at >= since)
        with self.store.session() as session:
            return list(session.scalars(query))

    def get(self, event_id: int) -> ModerationEvent | None:
        with self.store.session() as session:
            return session.get(ModerationEvent, event_id)

    def mark_reviewed(self, event_id: int, by: str) -> ModerationEvent | None:
        """Mark the entry reviewed by ``by`` (now); None when there is no such entry."""
        with self.store.session() as session:
            event = session.get(ModerationEvent, event_id)
            if event is not None:
                event.reviewed = True
                event.reviewed_by = by
                event.reviewed_at = utcnow()
            return event

    def counts_by_category(self, since: datetime | None = None) -> dict[str, int]:
        query = select(ModerationEvent.category, func.count()).group_by(ModerationEvent.category)
        if since is not None:
            query = query.where(ModerationEvent.created_at >= since)
        with self.store.session() as session:
            return {category: count for category, count in session.execute(query)}
