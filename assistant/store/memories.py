"""Long-term memories: short facts a person asked the assistant to keep (docs/memory.md).

One row per memory, owned by the platform identity that told it (platform, workspace, user).
A person an admin linked to several identities (``linked_identities``, migration 0003) sees
the memories of all of them: ownership is resolved when reading (``identities_of``), so a link
made later applies to memories made before it, and an unlink stops the sharing at once.

The embedding is the float32 bytes of the shared local embedder's vector
(``assistant.embedding``), with the embedder's ``model_id``: vectors of another model are
re-embedded, never compared (``assistant.recall``).
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import (
    Boolean,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    and_,
    delete,
    func,
    or_,
    select,
)
from sqlalchemy.orm import Mapped, mapped_column

from assistant.store.db import Store
from assistant.store.identity_models import LinkedIdentity, Person
from assistant.store.models import Base, UTCDateTime, utcnow

Identity = tuple[str, str, str]  # (platform, workspace, user id)


class Memory(Base):
    """One remembered fact, in the person's words (screened and masked before it is stored)."""

    __tablename__ = "memories"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # The owner: the identity that told it (a linked person's identities share, see above).
    platform: Mapped[str] = mapped_column(String(32))
    workspace: Mapped[str] = mapped_column(String(128), default="default")
    user_id: Mapped[str] = mapped_column(String(256))
    text: Mapped[str] = mapped_column(Text)
    # Where it was said: the conversation (``ConversationKey.redis_id``), its channel, the
    # message, and whether that conversation was private (a DM, the person's web chat).
    source_channel: Mapped[str] = mapped_column(String(256), default="")
    source_conversation: Mapped[str] = mapped_column(String(64), default="")
    source_message: Mapped[str] = mapped_column(String(256), default="")
    private: Mapped[bool] = mapped_column(Boolean, default=True)
    # Noticed by the assistant after a turn (ASSISTANT_LONGTERM_AUTO), not asked for.
    automatic: Mapped[bool] = mapped_column(Boolean, default=False)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    embedding_model: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        # Covers the per-turn stamp query (count, newest edit, last id) without reading rows,
        # whose vectors would make it read every page of a person's memories.
        Index("ix_memories_owner", "platform", "workspace", "user_id", "updated_at"),
        Index("ix_memories_updated", "updated_at"),
        # Ids are never reused (SQLite would reuse a deleted last rowid), so a cached index
        # and a number someone saw never name another memory.
        {"sqlite_autoincrement": True},
    )


@dataclass(frozen=True)
class MemoryRow:
    """A memory as callers see it (detached from the session)."""

    id: int
    platform: str
    workspace: str
    user_id: str
    text: str
    source_channel: str
    source_conversation: str
    source_message: str
    private: bool
    embedding: bytes
    embedding_model: str
    created_at: datetime
    updated_at: datetime
    automatic: bool = False

    def public(self) -> dict[str, object]:
        """What the person sees and exports (no vector)."""
        return {"id": self.id, "text": self.text, "platform": self.platform,
                "channel": self.source_channel, "conversation": self.source_conversation,
                "message_id": self.source_message, "private": self.private,
                "automatic": self.automatic,
                "created_at": self.created_at.isoformat(),
                "updated_at": self.updated_at.isoformat()}


@dataclass(frozen=True)
class Stamp:
    """Changes whenever an owner's memories change: how many, the newest edit, the last id."""

    count: int
    newest: datetime | None
    last_id: int


def _row(memory: Memory) -> MemoryRow:
    return MemoryRow(memory.id, memory.platform, memory.workspace, memory.user_id, memory.text,
                     memory.source_channel, memory.source_conversation, memory.source_message,
                     memory.private, memory.embedding, memory.embedding_model,
                     memory.created_at, memory.updated_at, bool(memory.automatic))


class Memories:
    """The memories repository. ``owners`` is always a list of identities (``identities_of``)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- who ---------------------------------------------------------------------------------

    def identities_of(self, platform: str, workspace: str, user_id: str) -> list[Identity]:
        """The identity itself, and every identity of the person it is linked to (a web
        user id is a signed-in person's handle)."""
        own: Identity = (platform, workspace, user_id)
        with self.store.session() as session:
            if platform == "web":
                person_id = session.scalar(select(Person.id).where(Person.handle == user_id))
            else:
                person_id = session.scalar(select(LinkedIdentity.person_id).where(
                    LinkedIdentity.platform == platform, LinkedIdentity.workspace == workspace,
                    LinkedIdentity.user_id == user_id))
            if person_id is None:
                return [own]
            handle = session.scalar(select(Person.handle).where(Person.id == person_id))
            links = session.execute(select(LinkedIdentity.platform, LinkedIdentity.workspace,
                                           LinkedIdentity.user_id).where(
                LinkedIdentity.person_id == person_id)).all()
        found = {own, *((str(p), str(w), str(u)) for p, w, u in links)}
        if handle:
            found.add(("web", "default", handle))
        return sorted(found)

    @staticmethod
    def _owned(owners: Sequence[Identity]) -> object:
        # OR of ANDs, not a row-value IN: SQLite uses ix_memories_owner for this form only.
        return or_(*(and_(Memory.platform == platform, Memory.workspace == workspace,
                          Memory.user_id == user_id) for platform, workspace, user_id in owners))

    # -- write -------------------------------------------------------------------------------

    def add(self, owner: Identity, text: str, embedding: bytes, embedding_model: str, *,
            source_channel: str = "", source_conversation: str = "", source_message: str = "",
            private: bool = True, automatic: bool = False) -> MemoryRow:
        now = utcnow()
        memory = Memory(platform=owner[0], workspace=owner[1], user_id=owner[2], text=text,
                        source_channel=source_channel, source_conversation=source_conversation,
                        source_message=source_message, private=private, automatic=automatic,
                        embedding=embedding,
                        embedding_model=embedding_model, created_at=now, updated_at=now)
        with self.store.session() as session:
            session.add(memory)
            session.flush()
            return _row(memory)

    def find_by_message(self, owners: Sequence[Identity], message_id: str) -> MemoryRow | None:
        """The memory a message made (a rerun of its turn must not save it twice)."""
        with self.store.session() as session:
            memory = session.scalar(select(Memory).where(
                self._owned(owners), Memory.source_message == message_id))  # type: ignore[arg-type]
            return _row(memory) if memory is not None else None

    def update(self, owners: Sequence[Identity], memory_id: int, text: str, embedding: bytes,
               embedding_model: str) -> MemoryRow | None:
        with self.store.session() as session:
            memory = session.scalar(select(Memory).where(
                Memory.id == memory_id, self._owned(owners)))  # type: ignore[arg-type]
            if memory is None:
                return None
            memory.text = text
            memory.embedding = embedding
            memory.embedding_model = embedding_model
            memory.updated_at = utcnow()
            session.flush()
            return _row(memory)

    def delete(self, owners: Sequence[Identity], memory_ids: Iterable[int]) -> int:
        ids = builtins.list(memory_ids)
        if not ids:
            return 0
        with self.store.session() as session:
            result = session.execute(delete(Memory).where(
                Memory.id.in_(ids), self._owned(owners)))  # type: ignore[arg-type]
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def delete_all(self, owners: Sequence[Identity]) -> int:
        with self.store.session() as session:
            result = session.execute(delete(Memory).where(self._owned(owners)))  # type: ignore[arg-type]
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def forget_identity(self, platform: str, workspace: str, user_id: str) -> int:
        """"Forget me": what this identity told (a linked person's other identities keep
        theirs; each forgets on its own platform, or the person does it on the web)."""
        return self.delete_all([(platform, workspace, user_id)])

    def purge_older_than(self, days: float) -> int:
        """Retention: drop memories not written to for ``days`` days (0: keep them all)."""
        if days <= 0:
            return 0
        cutoff = utcnow() - timedelta(days=days)
        with self.store.session() as session:
            result = session.execute(delete(Memory).where(Memory.updated_at < cutoff))
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    # -- read --------------------------------------------------------------------------------

    def list(self, owners: Sequence[Identity], *, channel: tuple[str, str, str] | None = None
             ) -> builtins.list[MemoryRow]:
        """Oldest first (the numbering ``/memory`` shows and ``/forget N`` uses). With
        ``channel`` (platform, workspace, channel): only what was said in that channel."""
        query = select(Memory).where(self._owned(owners))  # type: ignore[arg-type]
        if channel is not None:
            query = query.where(self._in_channel(channel))  # type: ignore[arg-type]
        with self.store.session() as session:
            return [_row(m) for m in session.scalars(query.order_by(Memory.created_at,
                                                                    Memory.id))]

    @staticmethod
    def _in_channel(channel: tuple[str, str, str]) -> object:
        platform, workspace, name = channel
        return and_(Memory.platform == platform, Memory.workspace == workspace,
                    Memory.source_channel == name, Memory.private.is_(False))

    def stamp(self, owners: Sequence[Identity], *,
              channel: tuple[str, str, str] | None = None) -> Stamp:
        """One cheap query: whether there is anything to recall, and whether it changed."""
        query = select(func.count(Memory.id), func.max(Memory.updated_at),
                       func.max(Memory.id)).where(self._owned(owners))  # type: ignore[arg-type]
        if channel is not None:
            query = query.where(self._in_channel(channel))  # type: ignore[arg-type]
        with self.store.session() as session:
            count, newest, last_id = session.execute(query).one()
        if isinstance(newest, str):  # SQLite returns max() of a timestamp as text
            newest = datetime.fromisoformat(newest)
        return Stamp(int(count or 0), newest, int(last_id or 0))

    def count(self, owners: Sequence[Identity]) -> int:
        return self.stamp(owners).count

    def counts(self) -> dict[str, int]:
        """Memories per platform (what admins see: counts, never contents)."""
        with self.store.session() as session:
            rows = session.execute(select(Memory.platform, func.count(Memory.id)).group_by(
                Memory.platform)).all()
        return {str(platform): int(n) for platform, n in rows}

    def automatic_count(self) -> int:
        """Memories the assistant noticed by itself (ASSISTANT_LONGTERM_AUTO)."""
        with self.store.session() as session:
            return int(session.scalar(select(func.count(Memory.id)).where(
                Memory.automatic.is_(True))) or 0)

    def people_count(self) -> int:
        with self.store.session() as session:
            owners = select(Memory.platform, Memory.workspace, Memory.user_id).distinct()
            return int(session.scalar(select(func.count()).select_from(owners.subquery()))
                       or 0)


__all__ = ["Identity", "Memories", "Memory", "MemoryRow", "Stamp"]
