"""Nearest chunks by cosine similarity: pgvector's HNSW index on a PostgreSQL server that has
the extension, else an exact brute-force search over the stored float32 vectors.

The brute-force index keeps each collection's matrix in this process, keyed by the
collection's ``generation`` (it grows with every document added, re-indexed or deleted), so a
query reads the matrix from SQL only after a change. ``sqlite-vec`` was the first choice for
SQLite, but Python's ``sqlite3`` on this kind of machine is built without loadable extensions
(``enable_load_extension`` is missing): docs/knowledge.md, "Vector search".
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from sqlalchemy.orm import Session

from assistant.knowledge.store import CollectionInfo, KnowledgeBase


def has_pgvector(kb: KnowledgeBase) -> bool:
    """Whether the store is PostgreSQL with the ``embedding_pg`` column (migration 0005 adds
    it where the server has pgvector)."""
    if kb.dialect != "postgresql":
        return False
    with kb.store.session() as session:
        found = session.scalar(sa.text(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = "
            "'knowledge_chunks' AND column_name = 'embedding_pg'"))
    return bool(found == 1)


def write_pgvector(session: Session, document_id: int) -> None:
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


class VectorIndex:
    """Top-k chunk ids by cosine similarity within some collections (see the module)."""

    def __init__(self, kb: KnowledgeBase) -> None:
        self.kb = kb
        self._cache: dict[int, tuple[int, npt.NDArray[np.int64], npt.NDArray[np.float32]]] = {}
        self._lock = threading.Lock()
        self._pgvector: bool | None = None

    @property
    def backend(self) -> str:
        if self._pgvector is None:
            self._pgvector = has_pgvector(self.kb)
        return "pgvector" if self._pgvector else "brute-force"

    def search(self, query: npt.NDArray[np.float32], collections: Sequence[CollectionInfo],
               k: int) -> list[tuple[int, float]]:
        if not collections:
            return []
        if self.backend == "pgvector":
            return self._search_pgvector(query, [c.id for c in collections], k)
        ids_parts, matrices = [], []
        for collection in collections:
            ids, matrix = self._matrix(collection)
            if len(ids):
                ids_parts.append(ids)
                matrices.append(matrix)
        if not ids_parts:
            return []
        scored: list[tuple[int, float]] = []
        for ids, matrix in zip(ids_parts, matrices, strict=True):
            scores = matrix @ query.astype(np.float32)
            top = min(k, len(scores))
            best = np.argpartition(-scores, top - 1)[:top]
            scored.extend((int(ids[i]), float(scores[i])) for i in best)
        scored.sort(key=lambda item: -item[1])
        return scored[:k]

    def _matrix(self, collection: CollectionInfo
                ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        with self._lock:
            cached = self._cache.get(collection.id)
            if cached is not None and cached[0] == collection.generation:
                return cached[1], cached[2]
        ids, matrix = self.kb.vectors(collection.id)
        with self._lock:
            self._cache[collection.id] = (collection.generation, ids, matrix)
        return ids, matrix

    def _search_pgvector(self, query: npt.NDArray[np.float32], collection_ids: list[int],
                         k: int) -> list[tuple[int, float]]:
        literal = "[" + ",".join(f"{x:.7g}" for x in query) + "]"
        with self.kb.store.session() as session:
            rows = session.execute(sa.text(
                "SELECT id, 1 - (embedding_pg <=> CAST(:q AS vector)) AS score "
                "FROM knowledge_chunks WHERE collection_id = ANY(:ids) "
                "ORDER BY embedding_pg <=> CAST(:q AS vector) LIMIT :k"),
                {"q": literal, "ids": collection_ids, "k": k}).all()
        return [(int(r[0]), float(r[1])) for r in rows]
