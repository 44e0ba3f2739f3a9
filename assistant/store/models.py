"""Tables of the durable store. Every change here comes with an Alembic migration."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Boolean, DateTime, Float, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class ModerationEvent(Base):
    """One non-allow safety verdict: what tripped, where, for whom, and what was done.

    ``excerpt`` is already redacted (no PII, at most a couple of hundred characters): the log
    is for reviewing decisions, not a second copy of the conversation.
    """

    __tablename__ = "moderation_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    platform: Mapped[str] = mapped_column(String(32))
    workspace: Mapped[str] = mapped_column(String(128), default="")
    channel: Mapped[str] = mapped_column(String(256), default="")
    conversation: Mapped[str] = mapped_column(String(512))
    user_id: Mapped[str] = mapped_column(String(256), default="")
    message_id: Mapped[str] = mapped_column(String(256), default="")
    direction: Mapped[str] = mapped_column(String(8))  # input | output
    check_name: Mapped[str] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(8))  # flag | mask | block | mute
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    reason: Mapped[str] = mapped_column(String(256), default="")
    excerpt: Mapped[str] = mapped_column(Text, default="")
    reviewed: Mapped[bool] = mapped_column(Boolean, default=False)
    reviewed_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (
        Index("ix_moderation_created", "created_at"),
        Index("ix_moderation_category", "category", "created_at"),
        Index("ix_moderation_user", "platform", "user_id", "created_at"),
    )
