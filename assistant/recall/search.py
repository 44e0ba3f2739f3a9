"""Hybrid search over one person's memories: meaning (cosine of embeddings) plus words
(BM25), merged by weighted reciprocal rank fusion (Cormack et al., SIGIR 2009:
``weight / (k + rank)`` summed over the lists). k = 10 and half weight for the words, not the
paper's k = 60 and equal weights: on our own labelled set (bench/memory.py, chosen on a seed
other than the one reported) that recalled 92 % at six lines against 85 %, because the words
alone find the right memory only half the time (docs/memory.md).

An ``Index`` is built once from a person's rows and kept per process until their memories
change (``assistant.recall.service``), so a turn only embeds its question and does a matrix
product and a few dictionary lookups (docs/memory.md has the timings).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from assistant.recall.text import words
from assistant.store.memories import MemoryRow

RRF_K = 10
WORDS_WEIGHT = 0.5
BM25_K1 = 1.2
BM25_B = 0.75


@dataclass(frozen=True)
class Hit:
    row: MemoryRow
    score: float  # fused
    cosine: float
    bm25: float


@dataclass
class Index:
    """The vectors and the word statistics of one person's memories."""

    rows: list[MemoryRow]
    vectors: npt.NDArray[np.float32]
    postings: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    lengths: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros(0, np.float32))
    idf: dict[str, float] = field(default_factory=dict)

    @classmethod
    def build(cls, rows: Sequence[MemoryRow], dimensions: int) -> Index:
        vectors = (np.stack([np.frombuffer(r.embedding, dtype=np.float32) for r in rows])
                   if rows else np.zeros((0, dimensions), np.float32))
        postings: dict[str, list[tuple[int, int]]] = defaultdict(list)
        lengths = np.zeros(len(rows), np.float32)
        for position, row in enumerate(rows):
            terms = words(row.text)
            lengths[position] = len(terms)
            for term, count in Counter(terms).items():
                postings[term].append((position, count))
        n = len(rows)
        idf = {term: math.log(1 + (n - len(docs) + 0.5) / (len(docs) + 0.5))
               for term, docs in postings.items()}
        return cls(list(rows), vectors, dict(postings), lengths, idf)

    def bm25(self, query: str) -> npt.NDArray[np.float32]:
        scores = np.zeros(len(self.rows), np.float32)
        if not self.rows:
            return scores
        average = float(self.lengths.mean()) or 1.0
        for term in set(words(query)):
            for position, count in self.postings.get(term, ()):
                norm = BM25_K1 * (1 - BM25_B + BM25_B * self.lengths[position] / average)
                scores[position] += self.idf[term] * count * (BM25_K1 + 1) / (count + norm)
        return scores

    def search(self, query: str, query_vector: npt.NDArray[np.float32], limit: int,
               min_cosine: float = 0.0, depth: int = 50) -> list[Hit]:
        """The best ``limit`` memories by fused rank; a memory with neither a shared word nor
        a cosine of at least ``min_cosine`` is left out (small talk recalls nothing)."""
        if not self.rows:
            return []
        cosine = self.vectors @ query_vector.astype(np.float32)
        lexical = self.bm25(query)
        fused: dict[int, float] = defaultdict(float)
        by_meaning = np.argsort(-cosine)[:depth]
        for rank, position in enumerate(by_meaning):
            if cosine[position] >= min_cosine:
                fused[int(position)] += 1.0 / (RRF_K + rank + 1)
        by_words = [p for p in np.argsort(-lexical)[:depth] if lexical[p] > 0]
        for rank, position in enumerate(by_words):
            fused[int(position)] += WORDS_WEIGHT / (RRF_K + rank + 1)
        best = sorted(fused.items(), key=lambda item: -item[1])[:limit]
        return [Hit(self.rows[p], score, float(cosine[p]), float(lexical[p])) for p, score in best]
