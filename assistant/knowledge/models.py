"""The knowledge base's tables (migration ``0005_knowledge``).

The full-text index (FTS5 on SQLite, a ``tsvector`` column on PostgreSQL) and pgvector's
``embedding_pg`` column are dialect-specific and not mapped here.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from assistant.store.models import Base, UTCDateTime, utcnow


class Collection(Base):
    """A named set of documents. ``generation`` grows with every change of its chunks, so a
    process' cached vectors know when to reload (assistant/knowledge/vectors.py)."""

    __tablename__ = "knowledge_collections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(String(500), default="")
    embedding_model: Mapped[str] = mapped_column(String(128))
    generation: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (UniqueConstraint("name", name="uq_knowledge_collections_name"),)


class Scope(Base):
    """One place where a collection may be used (assistant/knowledge/scope.py names them)."""

    __tablename__ = "knowledge_scopes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    collection_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("knowledge_collections.id", ondelete="CASCADE"))
    place: Mapped[str] = mapped_column(String(300))

    __table_args__ = (UniqueConstraint("collection_id", "place", name="uq_knowledge_scope"),)


class Document(Base):
    """One file of a collection. ``status``: queued → indexing → ready, or failed (with
    ``error``); ``progress`` is a percentage while indexing."""

    __tablename__ = "knowledge_documents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    collection_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("knowledge_collections.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(300))
    source: Mapped[str] = mapped_column(String(1000))
    format: Mapped[str] = mapped_column(String(16))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    pages: Mapped[int] = mapped_column(Integer, default=0)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16))
    progress: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(String(500), default="")
    # The file itself (any worker indexes it, an admin can re-index it); loaded only on demand.
    content: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, deferred=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        UniqueConstraint("collection_id", "source", name="uq_knowledge_document_source"),
    )


class ChunkRow(Base):
    """One chunk: its text, section and position, and its embedding as float32 bytes."""

    __tablename__ = "knowledge_chunks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    document_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("knowledge_documents.id", ondelete="CASCADE"))
    collection_id: Mapped[int] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(String(300), default="")
    section: Mapped[str] = mapped_column(String(500), default="")
    page: Mapped[int | None] = mapped_column(Integer, nullable=True)
    text: Mapped[str] = mapped_column(Text)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
