"""The conversation archive: every answered turn, searchable, for the admin panel.

Workers write it after each turn (``record_turn``, idempotent per message id, so a rerun after a
crash adds nothing); the admin panel lists, searches, reads, exports and deletes. Text search is
the database's own full-text index (migration 0002), never a scan: FTS5 on SQLite, a GIN-indexed
``tsvector`` on PostgreSQL. Each word of the query must appear (as a word or a word's start).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.orm import Session

from assistant.envelope import ConversationKey, utcnow
from assistant.store.db import Store, dialect_insert
from assistant.store.models import Conversation, Message

TITLE_CHARS = 80
MAX_TERMS = 16  # words of a search that count (a pasted paragraph stays a cheap query)
_WORD = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class ArchivedMessage:
    """One message as archived: a user's, or the assistant's reply (with its token counts)."""

    message_id: str
    role: str  # "user" | "assistant"
    text: str
    user_id: str | None = None
    created_at: datetime = field(default_factory=utcnow)
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass(frozen=True)
class ConversationSummary:
    """A conversation as the list shows it."""

    id: str
    platform: str
    workspace: str
    channel: str
    thread: str | None
    dm_user: str | None
    title: str
    created_at: datetime
    updated_at: datetime
    message_count: int


@dataclass(frozen=True)
class ConversationDetail(ConversationSummary):
    """A conversation with its messages, oldest first."""

    messages: list[ArchivedMessage] = field(default_factory=list)


def fts_terms(text: str) -> list[str]:
    """The words of a search (letters and digits; punctuation and operators dropped)."""
    return _WORD.findall(text.lower())[:MAX_TERMS]


class Archive:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- writing (the worker) ------------------------------------------------------------------

    def record_turn(self, conversation: ConversationKey,
                    messages: Sequence[ArchivedMessage], transaction: Session | None = None) -> int:
        """Archive a turn's messages; returns how many were new (0 when it was archived before).

        With ``transaction``, the writes join that transaction (the recorder commits the turn and
        its users' counts together); otherwise they commit on return.
        """
        if not messages:
            return 0
        conversation_id = conversation.redis_id
        first_user = next((m for m in messages if m.role == "user"), None)
        title = _title(first_user.text) if first_user else ""
        earliest = min(_aware(m.created_at) for m in messages)
        newest = max(_aware(m.created_at) for m in messages)
        with self.store.session() if transaction is None else nullcontext(transaction) as session:
            session.execute(dialect_insert(session, Conversation).values(
                id=conversation_id, platform=conversation.platform,
                workspace=conversation.workspace, channel=conversation.channel,
                thread=conversation.thread, dm_user=conversation.user, title=title,
                created_at=earliest, updated_at=newest, message_count=0,
            ).on_conflict_do_nothing(index_elements=["id"]))
            before = _message_count(session, conversation_id)
            session.execute(dialect_insert(session, Message).values([
                dict(conversation_id=conversation_id, message_id=m.message_id, role=m.role,
                     text=m.text, user_id=m.user_id, created_at=m.created_at,
                     finish_reason=m.finish_reason, prompt_tokens=m.prompt_tokens,
                     completion_tokens=m.completion_tokens)
                for m in messages
            ]).on_conflict_do_nothing(index_elements=["conversation_id", "message_id"]))
            after = _message_count(session, conversation_id)
            row = session.get(Conversation, conversation_id, with_for_update=True)
            assert row is not None
            if after != before:  # a rerun's copies (with their own times) change nothing
                row.message_count = after
                row.updated_at = max(row.updated_at, newest)
                if not row.title and title:
                    row.title = title
        return after - before

    # -- reading (the admin panel) -------------------------------------------------------------

    def search(self, text: str | None = None, platform: str | None = None,
               channel: str | None = None, user_id: str | None = None,
               since: datetime | None = None, until: datetime | None = None,
               limit: int = 50, offset: int = 0) -> list[ConversationSummary]:
        """Conversations matching every given filter, most recently active first.

        ``text``: every word must occur in one of its messages (full-text, prefix per word);
        ``user_id``: someone who wrote in it (or whose DM it is); ``since``/``until``: it was
        active in that time (last message at or after ``since``, first before ``until``).
        """
        query = self._filtered(select(Conversation), text, platform, channel, user_id,
                               since, until)
        if query is None:
            return []
        query = query.order_by(Conversation.updated_at.desc(), Conversation.id.desc())
        query = query.limit(limit).offset(offset)
        with self.store.session() as session:
            return [_summary(row) for row in session.scalars(query)]

    def count(self, text: str | None = None, platform: str | None = None,
              channel: str | None = None, user_id: str | None = None,
              since: datetime | None = None, until: datetime | None = None) -> int:
        """How many conversations ``search`` would find with these filters (for paging)."""
        query = self._filtered(select(func.count()).select_from(Conversation), text, platform,
                               channel, user_id, since, until)
        if query is None:
            return 0
        with self.store.session() as session:
            return int(session.scalar(query) or 0)

    def get(self, conversation_id: str) -> ConversationDetail | None:
        with self.store.session() as session:
            row = session.get(Conversation, conversation_id)
            if row is None:
                return None
            messages = session.scalars(
                select(Message).where(Message.conversation_id == conversation_id)
                .order_by(Message.id))
            return ConversationDetail(**asdict(_summary(row)),
                                      messages=[_message(m) for m in messages])

    def delete(self, conversation_id: str) -> bool:
        """Delete the conversation and its messages; False when there was none."""
        with self.store.session() as session:
            # Messages first and explicitly: the FTS triggers see each row go.
            session.execute(sa.delete(Message).where(Message.conversation_id == conversation_id))
            deleted = session.execute(
                sa.delete(Conversation).where(Conversation.id == conversation_id))
            return bool(_rowcount(deleted))

    def purge(self, inactive_since: datetime) -> int:
        """Delete conversations with no message since ``inactive_since``; returns how many."""
        with self.store.session() as session:
            stale = select(Conversation.id).where(Conversation.updated_at < inactive_since)
            session.execute(sa.delete(Message).where(Message.conversation_id.in_(stale)))
            return _rowcount(session.execute(
                sa.delete(Conversation).where(Conversation.updated_at < inactive_since)))

    def forget_user(self, platform: str, workspace: str, user_id: str) -> int:
        """Delete what the archive keeps of a user ("forget me"); returns messages deleted.

        Their direct-message conversations go whole; in shared ones their own messages go
        (the thread and the others' messages stay), and a title taken from them is replaced.
        """
        with self.store.session() as session:
            in_scope = select(Conversation.id).where(Conversation.platform == platform,
                                                     Conversation.workspace == workspace)
            dms = list(session.scalars(in_scope.where(Conversation.dm_user == user_id)))
            shared = list(session.scalars(
                select(Message.conversation_id).distinct()
                .where(Message.user_id == user_id, Message.conversation_id.in_(in_scope))))
            deleted = 0
            if dms:
                deleted += _rowcount(session.execute(
                    sa.delete(Message).where(Message.conversation_id.in_(dms))))
                session.execute(sa.delete(Conversation).where(Conversation.id.in_(dms)))
            for conversation_id in set(shared) - set(dms):
                deleted += _rowcount(session.execute(sa.delete(Message).where(
                    Message.conversation_id == conversation_id, Message.user_id == user_id)))
                row = session.get(Conversation, conversation_id)
                assert row is not None
                row.message_count = _message_count(session, conversation_id)
                first_user = session.scalar(
                    select(Message.text).where(Message.conversation_id == conversation_id,
                                               Message.role == "user")
                    .order_by(Message.id).limit(1))
                row.title = _title(first_user) if first_user else ""
            return deleted

    def export(self, conversation_id: str) -> dict[str, Any] | None:
        """The conversation as JSON-ready data (ISO 8601 times), or None."""
        detail = self.get(conversation_id)
        if detail is None:
            return None
        data = asdict(detail)
        messages = data.pop("messages")
        return {"conversation": _jsonable(data), "messages": [_jsonable(m) for m in messages]}

    # -- queries -------------------------------------------------------------------------------

    def _filtered(self, query: Select[Any], text: str | None, platform: str | None,
                  channel: str | None, user_id: str | None, since: datetime | None,
                  until: datetime | None) -> Select[Any] | None:
        """``query`` with the filters applied; None when it can match nothing."""
        if platform:
            query = query.where(Conversation.platform == platform)
        if channel:
            query = query.where(Conversation.channel == channel)
        if user_id:
            wrote = select(Message.conversation_id).where(Message.user_id == user_id)
            query = query.where(or_(Conversation.dm_user == user_id, Conversation.id.in_(wrote)))
        if since is not None:
            query = query.where(Conversation.updated_at >= since)
        if until is not None:
            query = query.where(Conversation.created_at < until)
        if text is not None and text.strip():
            matching = self._matching_messages(text)
            if matching is None:
                return None
            query = query.where(Conversation.id.in_(
                select(Message.conversation_id).where(matching)))
        return query

    def _matching_messages(self, text: str) -> ColumnElement[bool] | None:
        """A condition on ``messages`` that the full-text index answers."""
        terms = fts_terms(text)
        if not terms:
            return None
        if self.store.engine.dialect.name == "postgresql":
            tsquery = " & ".join(f"{term}:*" for term in terms)
            return sa.literal_column("messages.search").op("@@")(
                func.to_tsquery(sa.literal_column("'simple'"), tsquery))
        # FTS5: each term quoted (no operators from user input), * for a prefix, AND between.
        match = " ".join(f'"{term}"*' for term in terms)
        matched_rows = sa.text("SELECT rowid FROM messages_fts WHERE messages_fts MATCH :match")
        return Message.id.in_(matched_rows.bindparams(match=match).columns(sa.column("rowid")))


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _title(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1].rstrip() + "…"


def _rowcount(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def _message_count(session: Session, conversation_id: str) -> int:
    return int(session.scalar(select(func.count()).select_from(Message)
                              .where(Message.conversation_id == conversation_id)) or 0)


def _summary(row: Conversation) -> ConversationSummary:
    return ConversationSummary(
        id=row.id, platform=row.platform, workspace=row.workspace, channel=row.channel,
        thread=row.thread, dm_user=row.dm_user, title=row.title, created_at=row.created_at,
        updated_at=row.updated_at, message_count=row.message_count)


def _message(row: Message) -> ArchivedMessage:
    return ArchivedMessage(
        message_id=row.message_id, role=row.role, text=row.text, user_id=row.user_id,
        created_at=row.created_at, finish_reason=row.finish_reason,
        prompt_tokens=row.prompt_tokens, completion_tokens=row.completion_tokens)


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return {key: value.isoformat() if isinstance(value, datetime) else value
            for key, value in data.items()}
