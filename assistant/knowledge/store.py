"""The knowledge base's repository: collections, their places, documents and chunks, in the
SQL store (SQLite or PostgreSQL). A document's chunks are written, replaced or deleted in one
transaction with its status, so nothing is ever half indexed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa

from assistant.errors import InputRejected
from assistant.knowledge.chunk import Chunk
from assistant.knowledge.models import ChunkRow, Collection, Document, Scope
from assistant.store.db import Store
from assistant.store.models import utcnow

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\- ]{0,127}$")


@dataclass(frozen=True)
class CollectionInfo:
    id: int
    name: str
    description: str
    embedding_model: str
    generation: int
    places: tuple[str, ...] = ()
    documents: int = 0
    chunks: int = 0


@dataclass(frozen=True)
class DocumentInfo:
    id: int
    collection: str
    title: str
    source: str
    format: str
    status: str
    progress: int
    error: str
    pages: int
    chunk_count: int
    size_bytes: int
    updated_at: datetime


@dataclass(frozen=True)
class StoredChunk:
    """A chunk as retrieval hands it on: with its document's title and source."""

    id: int
    document_id: int
    collection_id: int
    title: str
    source: str
    section: str
    page: int | None
    position: int
    text: str


def _document_info(document: Document, collection: str) -> DocumentInfo:
    return DocumentInfo(document.id, collection, document.title, document.source,
                        document.format, document.status, document.progress, document.error,
                        document.pages, document.chunk_count, document.size_bytes,
                        document.updated_at)


class KnowledgeBase:
    """Collections, places, documents and chunks (see the module docstring)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @property
    def dialect(self) -> str:
        return self.store.engine.dialect.name

    # -- collections and places ------------------------------------------------------------

    def ensure_collection(self, name: str, embedding_model: str,
                          description: str = "") -> CollectionInfo:
        """The collection of that name, made if it does not exist."""
        if not _NAME.match(name):
            raise InputRejected("a collection's name is 1-128 letters, digits, spaces and _.-")
        with self.store.session() as session:
            found = session.scalar(sa.select(Collection).where(Collection.name == name))
            if found is None:
                found = Collection(name=name, description=description,
                                   embedding_model=embedding_model, generation=0)
                session.add(found)
                session.flush()
            elif found.embedding_model != embedding_model:
                raise InputRejected(f"collection {name!r} was indexed with "
                                    f"{found.embedding_model}, not {embedding_model}: "
                                    "`assistant kb reembed` embeds it again")
            return CollectionInfo(found.id, found.name, found.description,
                                  found.embedding_model, found.generation)

    def collections(self) -> list[CollectionInfo]:
        with self.store.session() as session:
            rows = session.scalars(sa.select(Collection).order_by(Collection.name)).all()
            places: dict[int, list[str]] = {}
            for scope in session.scalars(sa.select(Scope).order_by(Scope.place)):
                places.setdefault(scope.collection_id, []).append(scope.place)
            documents = dict(session.execute(sa.select(
                Document.collection_id, sa.func.count()).group_by(Document.collection_id)).all())
            chunks = dict(session.execute(sa.select(
                Document.collection_id, sa.func.sum(Document.chunk_count))
                .group_by(Document.collection_id)).all())
            return [CollectionInfo(c.id, c.name, c.description, c.embedding_model, c.generation,
                                   tuple(places.get(c.id, ())), int(documents.get(c.id, 0)),
                                   int(chunks.get(c.id) or 0)) for c in rows]

    def collection(self, name: str) -> CollectionInfo | None:
        return next((c for c in self.collections() if c.name == name), None)

    def remove_collection(self, name: str) -> bool:
        """Delete a collection with its documents, chunks and places."""
        with self.store.session() as session:
            found = session.scalar(sa.select(Collection).where(Collection.name == name))
            if found is None:
                return False
            # Chunks first and explicitly: the FTS triggers see each row go.
            session.execute(sa.delete(ChunkRow).where(ChunkRow.collection_id == found.id))
            session.execute(sa.delete(Document).where(Document.collection_id == found.id))
            session.execute(sa.delete(Scope).where(Scope.collection_id == found.id))
            session.delete(found)
            return True

    def attach(self, name: str, place: str) -> None:
        """Let conversations at ``place`` use the collection (assistant/knowledge/scope.py)."""
        from assistant.knowledge.scope import validate_place

        place = validate_place(place)
        with self.store.session() as session:
            found = session.scalar(sa.select(Collection).where(Collection.name == name))
            if found is None:
                raise InputRejected(f"no collection named {name!r}")
            exists = session.scalar(sa.select(Scope).where(
                Scope.collection_id == found.id, Scope.place == place))
            if exists is None:
                session.add(Scope(collection_id=found.id, place=place))

    def detach(self, name: str, place: str) -> bool:
        with self.store.session() as session:
            found = session.scalar(sa.select(Collection).where(Collection.name == name))
            if found is None:
                return False
            result = session.execute(sa.delete(Scope).where(
                Scope.collection_id == found.id, Scope.place == place))
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def collections_at(self, places: Iterable[str]) -> list[CollectionInfo]:
        """The collections any of ``places`` may use (one query)."""
        wanted = sorted(set(places))
        if not wanted:
            return []
        with self.store.session() as session:
            rows = session.scalars(sa.select(Collection).where(Collection.id.in_(
                sa.select(Scope.collection_id).where(Scope.place.in_(wanted))))).all()
            return [CollectionInfo(c.id, c.name, c.description, c.embedding_model,
                                   c.generation) for c in rows]

    # -- documents -----------------------------------------------------------------------------

    def add_document(self, collection_id: int, source: str, title: str, format: str,
                     sha256: str, size_bytes: int, content: bytes | None = None) -> int:
        """A document row in status ``queued`` with its file (a re-added source is queued
        again)."""
        now = utcnow()
        with self.store.session() as session:
            found = session.scalar(sa.select(Document).where(
                Document.collection_id == collection_id, Document.source == source))
            if found is None:
                found = Document(collection_id=collection_id, source=source, created_at=now)
                session.add(found)
            found.title, found.format, found.sha256 = title[:300], format, sha256
            found.size_bytes, found.status = size_bytes, "queued"
            found.progress, found.error = 0, ""
            found.content = content
            found.updated_at = now
            session.flush()
            return found.id

    def document(self, document_id: int) -> DocumentInfo | None:
        with self.store.session() as session:
            found = session.get(Document, document_id)
            if found is None:
                return None
            collection = session.get(Collection, found.collection_id)
            return _document_info(found, collection.name if collection else "")

    def content(self, document_id: int) -> bytes | None:
        """The file a document was indexed from (None: gone, or added without it)."""
        with self.store.session() as session:
            return session.scalar(sa.select(Document.content).where(Document.id == document_id))

    def documents(self, collection: str | None = None) -> list[DocumentInfo]:
        with self.store.session() as session:
            query = (sa.select(Document, Collection.name)
                     .join(Collection, Collection.id == Document.collection_id)
                     .order_by(Collection.name, Document.source))
            if collection is not None:
                query = query.where(Collection.name == collection)
            return [_document_info(d, name) for d, name in session.execute(query).all()]

    def set_status(self, document_id: int, status: str, progress: int = 0,
                   error: str = "") -> None:
        with self.store.session() as session:
            session.execute(sa.update(Document).where(Document.id == document_id).values(
                status=status, progress=progress, error=error[:500], updated_at=utcnow()))

    def replace_chunks(self, document_id: int, title: str, pages: int,
                       chunks: Sequence[Chunk], vectors: npt.NDArray[np.float32]) -> None:
        """The document's chunks, all at once and in one transaction: the old ones go, the
        new ones come, the document is ready and its collection's generation grows."""
        if len(chunks) != len(vectors):
            raise ValueError("one vector per chunk")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with self.store.session() as session:
            document = session.get(Document, document_id)
            if document is None:
                raise InputRejected(f"document {document_id} was deleted meanwhile")
            session.execute(sa.delete(ChunkRow).where(ChunkRow.document_id == document_id))
            session.add_all([ChunkRow(document_id=document_id,
                                      collection_id=document.collection_id,
                                      position=c.position, title=title[:300],
                                      section=c.section[:500], page=c.page,
                                      text=c.text, embedding=vectors[i].tobytes())
                             for i, c in enumerate(chunks)])
            document.title, document.pages, document.chunk_count = title[:300], pages, len(chunks)
            document.status, document.progress, document.error = "ready", 100, ""
            document.updated_at = utcnow()
            self._bump(session, document.collection_id)
            session.flush()
            if self.dialect == "postgresql":
                write_pgvector(session, document_id)

    def delete_document(self, document_id: int) -> bool:
        """Delete a document with its chunks and vectors."""
        with self.store.session() as session:
            document = session.get(Document, document_id)
            if document is None:
                return False
            session.execute(sa.delete(ChunkRow).where(ChunkRow.document_id == document_id))
            self._bump(session, document.collection_id)
            session.delete(document)
            return True

    @staticmethod
    def _bump(session: sa.orm.Session, collection_id: int) -> None:
        session.execute(sa.update(Collection).where(Collection.id == collection_id)
                        .values(generation=Collection.generation + 1))

    # -- chunks --------------------------------------------------------------------------------

    def chunks(self, ids: Sequence[int]) -> dict[int, StoredChunk]:
        if not ids:
            return {}
        with self.store.session() as session:
            rows = session.execute(
                sa.select(ChunkRow.id, ChunkRow.document_id, ChunkRow.collection_id,
                          Document.title, Document.source, ChunkRow.section, ChunkRow.page,
                          ChunkRow.position, ChunkRow.text)
                .join(Document, Document.id == ChunkRow.document_id)
                .where(ChunkRow.id.in_(list(ids)))).all()
            return {row[0]: StoredChunk(*row) for row in rows}

    def chunk_count(self, document_id: int | None = None) -> int:
        with self.store.session() as session:
            query = sa.select(sa.func.count()).select_from(ChunkRow)
            if document_id is not None:
                query = query.where(ChunkRow.document_id == document_id)
            return int(session.scalar(query) or 0)

    def chunk_texts(self, collection_id: int) -> tuple[int, list[tuple[int, str, str, str]]]:
        """The collection's generation and every chunk's (id, title, section, text), to embed
        them again with another model (``replace_vectors``)."""
        with self.store.session() as session:
            generation = session.scalar(sa.select(Collection.generation)
                                        .where(Collection.id == collection_id))
            if generation is None:
                raise InputRejected(f"collection {collection_id} does not exist")
            rows = session.execute(sa.select(ChunkRow.id, ChunkRow.title, ChunkRow.section,
                                             ChunkRow.text)
                                   .where(ChunkRow.collection_id == collection_id)
                                   .order_by(ChunkRow.id)).all()
        return int(generation), [(r[0], r[1], r[2], r[3]) for r in rows]

    def replace_vectors(self, collection_id: int, generation: int, ids: Sequence[int],
                        vectors: npt.NDArray[np.float32], embedding_model: str) -> None:
        """Every chunk's vector and the collection's embedding model, in one transaction, so no
        search mixes two models' vectors; refused when the collection changed since
        ``generation`` was read (a document added or deleted meanwhile: run it again)."""
        if len(ids) != len(vectors):
            raise ValueError("one vector per chunk")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with self.store.session() as session:
            changed = cast(sa.CursorResult[Any], session.execute(
                sa.update(Collection)
                .where(Collection.id == collection_id, Collection.generation == generation)
                .values(generation=generation + 1, embedding_model=embedding_model)))
            if changed.rowcount != 1:
                raise InputRejected("the collection changed while its chunks were embedded "
                                    "again: run it again")
            for chunk_id, vector in zip(ids, vectors, strict=True):
                session.execute(sa.update(ChunkRow).where(ChunkRow.id == chunk_id)
                                .values(embedding=vector.tobytes()))
            session.flush()
            if self.dialect == "postgresql":
                documents = session.scalars(sa.select(Document.id).where(
                    Document.collection_id == collection_id)).all()
                for document_id in documents:
                    write_pgvector(session, document_id)

    def vectors(self, collection_id: int) -> tuple[npt.NDArray[np.int64],
                                                   npt.NDArray[np.float32]]:
        """Every chunk id of a collection and its vector (one row each), for brute force."""
        with self.store.session() as session:
            rows = session.execute(sa.select(ChunkRow.id, ChunkRow.embedding)
                                   .where(ChunkRow.collection_id == collection_id)
                                   .order_by(ChunkRow.id)).all()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        if not rows:
            return ids, np.zeros((0, 0), dtype=np.float32)
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32)
        return ids, matrix.reshape(len(rows), -1)


def write_pgvector(session: sa.orm.Session, document_id: int) -> None:
    """Copy a document's vectors into pgvector's column, when there is one (same transaction).
    pgvector reads a vector from its text form '[x,y,...]'."""
    exists = session.scalar(sa.text(
        "SELECT count(*) FROM information_schema.columns WHERE table_name = "
        "'knowledge_chunks' AND column_name = 'embedding_pg'"))
    if not exists:
        return
    rows = session.execute(sa.text("SELECT id, embedding FROM knowledge_chunks "
                                   "WHERE document_id = :d"), {"d": document_id}).all()
    for chunk_id, raw in rows:
        vector = np.frombuffer(raw, dtype=np.float32)
        session.execute(sa.text("UPDATE knowledge_chunks SET embedding_pg = CAST(:v AS vector) "
                                "WHERE id = :id"),
                        {"v": "[" + ",".join(f"{x:.7g}" for x in vector) + "]", "id": chunk_id})
