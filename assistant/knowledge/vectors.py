"""Nearest chunks by cosine similarity: pgvector's HNSW index on a PostgreSQL server that has
the extension, else a search over the stored float32 vectors in this process.

The in-process index keeps each collection's matrix, keyed by the collection's ``generation``
(it grows with every document added, re-indexed or deleted), so a query reads the matrix from
SQL only after a change. Up to ``EXACT_MAX`` chunks it is exact (brute force); a larger
collection is clustered once per change (spherical k-means, √n lists, an inverted-file index)
and a query scans only the lists nearest to it, ``PROBES`` of them: a full scan of 100,000
vectors reads 150 MB per question. Its recall against the exact search is measured in
bench/knowledge.py. ``sqlite-vec`` was the first choice for
SQLite, but Python's ``sqlite3`` on this kind of machine is built without loadable extensions
(``enable_load_extension`` is missing): docs/knowledge.md, "Vector search".
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa

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


EXACT_MAX = 20_000
PROBES = 24
KMEANS_SAMPLE = 16_384
KMEANS_ROUNDS = 8


Matrix = npt.NDArray[np.float32]
Ids = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Clustered:
    """A collection's vectors: all of them (``ids``, ``matrix``), and for a large one its
    lists: ``centroids`` and where each list's rows start in the (reordered) matrix."""

    generation: int
    ids: Ids
    matrix: Matrix
    centroids: Matrix | None = None
    starts: npt.NDArray[np.int64] | None = None

    def scores(self, query: Matrix, probes: int | None) -> tuple[Ids, Matrix]:
        """Ids and their similarity to ``query``: every row, or (``probes`` lists of a
        clustered collection) the rows of the lists nearest to it, read in place."""
        if self.centroids is None or self.starts is None or probes is None:
            return self.ids, self.matrix @ query
        nearest = np.argpartition(-(self.centroids @ query), probes - 1)[:probes]
        spans = [(int(self.starts[c]), int(self.starts[c + 1])) for c in nearest]
        return (np.concatenate([self.ids[a:b] for a, b in spans]),
                np.concatenate([self.matrix[a:b] @ query for a, b in spans]))


def cluster(generation: int, ids: Ids, matrix: Matrix, seed: int = 0) -> Clustered:
    """Exact for a small collection; an inverted-file index (see the module) for a large one."""
    if len(ids) <= EXACT_MAX:
        return Clustered(generation, ids, matrix)
    rng = np.random.default_rng(seed)
    lists = int(np.sqrt(len(ids)))
    sample = matrix[rng.choice(len(ids), min(KMEANS_SAMPLE, len(ids)), replace=False)]
    centroids = sample[rng.choice(len(sample), lists, replace=False)].copy()
    for _ in range(KMEANS_ROUNDS):
        nearest = np.argmax(sample @ centroids.T, axis=1)
        for index in range(lists):
            members = sample[nearest == index]
            if len(members):
                centroids[index] = members.sum(axis=0)
        centroids /= np.clip(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12, None)
    assigned = np.concatenate([np.argmax(matrix[i:i + 8192] @ centroids.T, axis=1)
                               for i in range(0, len(matrix), 8192)])
    order = np.argsort(assigned, kind="stable")
    counts = np.bincount(assigned, minlength=lists)
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return Clustered(generation, ids[order], np.ascontiguousarray(matrix[order]),
                     centroids.astype(np.float32), starts)


class VectorIndex:
    """Top-k chunk ids by cosine similarity within some collections (see the module)."""

    def __init__(self, kb: KnowledgeBase) -> None:
        self.kb = kb
        self._cache: dict[int, Clustered] = {}
        self._lock = threading.Lock()
        self._pgvector: bool | None = None

    @property
    def backend(self) -> str:
        if self._pgvector is None:
            self._pgvector = has_pgvector(self.kb)
        return "pgvector" if self._pgvector else "brute-force"

    def search(self, query: npt.NDArray[np.float32], collections: Sequence[CollectionInfo],
               k: int, exact: bool = False) -> list[tuple[int, float]]:
        """The ``k`` nearest chunks; ``exact`` scans every vector even of a large collection
        (the bench's reference)."""
        if not collections:
            return []
        if self.backend == "pgvector":
            return self._search_pgvector(query, [c.id for c in collections], k)
        query = query.astype(np.float32)
        scored: list[tuple[int, float]] = []
        for collection in collections:
            clustered = self._clustered(collection)
            if not len(clustered.ids):
                continue
            ids, scores = clustered.scores(query, None if exact else PROBES)
            top = min(k, len(scores))
            if top == 0:
                continue
            best = np.argpartition(-scores, top - 1)[:top]
            scored.extend((int(ids[i]), float(scores[i])) for i in best)
        scored.sort(key=lambda item: -item[1])
        return scored[:k]

    def _clustered(self, collection: CollectionInfo) -> Clustered:
        with self._lock:
            cached = self._cache.get(collection.id)
            if cached is not None and cached.generation == collection.generation:
                return cached
        ids, matrix = self.kb.vectors(collection.id)
        built = cluster(collection.generation, ids, matrix)
        with self._lock:
            self._cache[collection.id] = built
        return built

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
