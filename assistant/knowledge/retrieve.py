"""Hybrid retrieval: vector search and keyword search over the collections a place may use,
merged by reciprocal rank fusion (Cormack, Clarke and Büttcher, SIGIR 2009: each list adds
1 / (60 + rank) to a chunk's score).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from assistant.embedding import Embedder
from assistant.knowledge.keyword import keyword_search
from assistant.knowledge.store import CollectionInfo, KnowledgeBase, StoredChunk
from assistant.knowledge.vectors import VectorIndex

log = logging.getLogger(__name__)

RRF_K = 60
CANDIDATES = 30  # from each list, before fusion
# The vector list's votes against the keyword list's: on the labelled set the keyword side is
# the stronger (docs/knowledge.md, "Measured", the sweep over this weight).
VECTOR_WEIGHT = 0.5


@dataclass(frozen=True)
class Hit:
    chunk: StoredChunk
    score: float


def fuse(rankings: Sequence[Sequence[int]], k: int = RRF_K,
         weights: Sequence[float] | None = None) -> list[tuple[int, float]]:
    """Reciprocal rank fusion of ranked id lists, best first (ties: first seen first); each
    list's votes scaled by its weight (1 each by default)."""
    scores: dict[int, float] = {}
    for index, ranking in enumerate(rankings):
        weight = 1.0 if weights is None else weights[index]
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    return sorted(scores.items(), key=lambda pair: -pair[1])


class Retriever:
    """Finds the chunks that best answer a question within some collections."""

    def __init__(self, kb: KnowledgeBase, embedder: Embedder,
                 vector_weight: float = VECTOR_WEIGHT) -> None:
        self.kb = kb
        self.embedder = embedder
        self.vector_weight = vector_weight
        self.index = VectorIndex(kb)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def _keyword_pool(self) -> ThreadPoolExecutor:
        # Made on the first question, so in a worker's pool process, never before its fork.
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="kb-keyword")
            return self._pool

    def usable(self, collections: Sequence[CollectionInfo]) -> list[CollectionInfo]:
        """Those made with this embedder: vectors of another model cannot be compared."""
        usable = [c for c in collections if c.embedding_model == self.embedder.model_id]
        for skipped in set(c.name for c in collections) - set(c.name for c in usable):
            log.warning("collection %r was indexed with another embedding model, so it is "
                        "not searched: `assistant kb reembed` embeds it again", skipped)
        return usable

    def search(self, query: str, collections: Sequence[CollectionInfo],
               k: int = 5) -> list[Hit]:
        collections = self.usable(collections)
        if not collections or not query.strip():
            return []
        started = time.perf_counter()
        # The keyword search runs in a thread while this one embeds the question and searches
        # the vectors: SQLite and onnxruntime both release the GIL.
        keyword = self._keyword_pool().submit(keyword_search, self.kb, query,
                                              [c.id for c in collections], CANDIDATES)
        vector = self.embedder.embed([query])[0]
        by_vector = [i for i, _ in self.index.search(vector, collections, CANDIDATES)]
        by_keyword = keyword.result()
        fused = fuse([by_vector, by_keyword], weights=[self.vector_weight, 1.0])[:k]
        chunks = self.kb.chunks([i for i, _ in fused])
        hits = [Hit(chunks[i], score) for i, score in fused if i in chunks]
        log.debug("retrieved %d chunk(s) in %.1f ms", len(hits),
                  (time.perf_counter() - started) * 1000)
        return hits
