"""The local embedding component: the packaged MiniLM, hash-checked, loaded on first use."""

from __future__ import annotations

import numpy as np
import pytest

from assistant import embedding
from assistant.embedding import PackagedFile, default_embedder, minilm
from assistant.errors import ModelError


def test_importing_loads_nothing() -> None:
    """No model, no onnxruntime session at import: an embedder loads on its first embed."""
    fresh = minilm()
    assert fresh._session is None


def test_vectors_are_normalised_rows_that_put_meaning_close() -> None:
    model = default_embedder()
    vectors = model.embed(["How do I boil an egg?", "What is the way to cook an egg in water?",
                           "The quarterly tax return is due in April.", ""])
    assert vectors.shape == (4, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3
    assert model.model_id == "all-MiniLM-L6-v2-onnx-int8" and model.dimensions == 384


def test_a_batch_gives_the_same_vectors_as_one_by_one() -> None:
    """Padding in a batch must not change a text's vector (the mask excludes it)."""
    model = default_embedder()
    texts = ["short", "a much longer sentence with many more words than the first one has"]
    together = model.embed(texts)
    alone = np.concatenate([model.embed([t]) for t in texts])
    assert np.allclose(together, alone, atol=1e-5)
    assert model.embed([]).shape == (0, 384)


def test_long_texts_are_truncated_not_refused() -> None:
    model = minilm(max_tokens=16)
    start = "how do I bake bread at home"
    vectors = model.embed([start + " with extra words" * 2000, start + " with extra words" * 3])
    assert vectors.shape == (2, 384)
    assert np.allclose(vectors[0], vectors[1], atol=1e-5)  # both cut at the same 16 pieces


def test_a_changed_file_is_refused() -> None:
    real = embedding.MINILM_MODEL
    changed = PackagedFile(real.distribution, real.path, "0" * 64)
    with pytest.raises(ModelError, match="SHA-256"):
        changed.verified()


def test_a_missing_package_says_what_to_install() -> None:
    missing = PackagedFile("no-such-distribution-here", "x/model.onnx", "0" * 64)
    with pytest.raises(ModelError, match="pip install no-such-distribution-here"):
        missing.locate()

