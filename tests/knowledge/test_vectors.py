"""The in-process vector index: exact for a small collection; clustered (inverted lists) for
a large one, where a stored vector is still its own nearest neighbour. And the keyword
search's common-word rule."""

from __future__ import annotations

import numpy as np
import pytest

from assistant.knowledge import keyword, vectors
from assistant.knowledge.chunk import Chunk
from assistant.knowledge.store import KnowledgeBase


def unit_rows(count: int, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(count, 16)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_small_collections_are_searched_exactly() -> None:
    matrix = unit_rows(100)
    clustered = vectors.cluster(1, np.arange(100, dtype=np.int64), matrix)
    assert clustered.centroids is None
    ids, scores = clustered.scores(matrix[7], vectors.PROBES)
    assert len(ids) == 100 and int(ids[int(np.argmax(scores))]) == 7


def test_large_collections_are_clustered_and_still_find_a_stored_vector(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vectors, "EXACT_MAX", 500)
    matrix = unit_rows(4000)
    clustered = vectors.cluster(1, np.arange(4000, dtype=np.int64) + 10, matrix)
    assert clustered.centroids is not None and clustered.starts is not None
    assert len(clustered.centroids) == int(np.sqrt(4000))
    assert sorted(clustered.ids.tolist()) == list(range(10, 4010))  # every row, reordered
    for row in (0, 123, 3999):
        ids, scores = clustered.scores(matrix[row], 8)
        assert len(ids) < 4000  # only the nearest lists were read
        assert int(ids[int(np.argmax(scores))]) == row + 10
        assert float(np.max(scores)) == pytest.approx(1.0, abs=1e-5)
    all_ids, _ = clustered.scores(matrix[0], None)  # exact: every row
    assert len(all_ids) == 4000


def test_a_word_in_most_chunks_is_left_out_of_the_keyword_query(
        sqlite_kb: KnowledgeBase, monkeypatch: pytest.MonkeyPatch) -> None:
    collection = sqlite_kb.ensure_collection("c", "test-model")
    document = sqlite_kb.add_document(collection.id, "a.md", "a", "markdown", "0" * 64, 1)
    chunks = [Chunk(i, f"common words here, chunk {i}" + (" zebra" if i == 3 else ""), "")
              for i in range(30)]
    sqlite_kb.replace_chunks(document, "A", 1, chunks, unit_rows(30))
    monkeypatch.setattr(keyword, "COMMON_MATCHES", 10)
    with sqlite_kb.store.session() as session:
        assert keyword._telling(session, ["common", "zebra", "absent"]) == ["zebra"]
        assert keyword._telling(session, ["common", "words"]) == ["common", "words"]
    [hit] = keyword.keyword_search(sqlite_kb, "common zebra", [collection.id], 5)
    assert sqlite_kb.chunks([hit])[hit].position == 3
