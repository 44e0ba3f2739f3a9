"""Tables of the durable store. Every change here comes with an Alembic migration."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python.

    PostgreSQL keeps the zone (``timestamptz``); SQLite keeps text without one, so values are
    stored as UTC and marked UTC again when read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
            if dialect.name == "sqlite":
                value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect
                             ) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class ModerationEvent(Base):
    """One non-allow safety verdict: what tripped, where, for whom, and what was done.

    ``excerpt`` is already redacted (no PII, at most a couple of hundred characters): the log
    is for reviewing decisions, not a second copy of the conversation.
    """

    __tablename__ = "moderation_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
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
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        Index("ix_moderation_created", "created_at"),
        Index("ix_moderation_category", "category", "created_at"),
        Index("ix_moderation_user", "platform", "user_id", "created_at"),
    )


class Conversation(Base):
    """One archived conversation; ``id`` is ``ConversationKey.redis_id`` (the Redis memory's)."""

    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    workspace: Mapped[str] = mapped_column(String(128), default="")
    channel: Mapped[str] = mapped_column(String(256), default="")
    thread: Mapped[str | None] = mapped_column(String(256), nullable=True)
    dm_user: Mapped[str | None] = mapped_column(String(256), nullable=True)
    title: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    message_count: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (
        Index("ix_conversations_updated", "updated_at"),
        Index("ix_conversations_platform", "platform", "updated_at"),
        Index("ix_conversations_channel", "channel", "updated_at"),
    )


class Message(Base):
    """One archived message. The integer key is the full-text index's row id.

    Full-text search is the database's own (migration 0002): an FTS5 external-content table
    ``messages_fts`` kept in step by triggers on SQLite; a generated ``tsvector`` column
    ``search`` with a GIN index on PostgreSQL. Neither is mapped here (dialect-specific).
    """

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(256))
    conversation_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("conversations.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(16))  # user | assistant
    text: Mapped[str] = mapped_column(Text, default="")
    user_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finish_reason: Mapped[str | None] = mapped_column(String(16), nullable=True)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    completion_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)

    __table_args__ = (
        # Unique per conversation, not globally: web clients choose their message ids.
        UniqueConstraint("conversation_id", "message_id", name="uq_messages_message_id"),
        Index("ix_messages_conversation", "conversation_id", "id"),
        Index("ix_messages_user", "user_id"),
    )


class User(Base):
    """Someone the assistant talked to, per platform and workspace, with what admins set."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    platform: Mapped[str] = mapped_column(String(32))
    workspace: Mapped[str] = mapped_column(String(128), default="")
    user_id: Mapped[str] = mapped_column(String(256))
    display_name: Mapped[str | None] = mapped_column(String(256), nullable=True)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    message_count: Mapped[int] = mapped_column(Integer, default=0)
    token_count: Mapped[int] = mapped_column(Integer, default=0)
    banned: Mapped[bool] = mapped_column(Boolean, default=False)
    banned_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    banned_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # Tokens per UTC day for this user; None: ASSISTANT_USER_DAILY_TOKENS; 0: no quota.
    daily_token_quota: Mapped[int | None] = mapped_column(Integer, nullable=True)

    __table_args__ = (
        UniqueConstraint("platform", "workspace", "user_id", name="uq_users_identity"),
        Index("ix_users_last_seen", "last_seen"),
    )


class PersonaVersion(Base):
    """One saved text of an editable prompt (``name`` is the prompt file's stem)."""

    __tablename__ = "persona_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    template: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))
    comment: Mapped[str] = mapped_column(String(500), default="")

    __table_args__ = (Index("ix_persona_versions_name", "name", "id"),)


class AuditEntry(Base):
    """One admin action: who did what to what, with the details as JSON."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(512), default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    __table_args__ = (
        Index("ix_audit_created", "created_at"),
        Index("ix_audit_actor", "actor", "id"),
        Index("ix_audit_action", "action", "id"),
    )
