"""The local embedding component: the packaged MiniLM, hash-checked, loaded on first use."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

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
    assert model.model_id == "all-MiniLM-L6-v2-onnx-int8-dynamic" and model.dimensions == 384


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



def _ops(model: bytes) -> Counter[str]:
    top = embedding._fields(model)
    graph = next(f[2] for f in top if f[0] == 7)
    return Counter(embedding._read_node(f[2]).op for f in embedding._fields(graph) if f[0] == 1)


def test_the_rewrite_keeps_every_weight_int8() -> None:
    """The packaged model dequantises each int8 weight to float32 (Cast, Mul) before its
    MatMul or Gather; after ``int8_matmuls`` no MatMul or Gather reads a float weight."""
    original = embedding.MINILM_MODEL.verified().read_bytes()
    before, after = _ops(original), _ops(embedding.int8_matmuls(original))
    assert before["MatMulInteger"] == 0 and before["Cast"] >= 36
    assert after["MatMulInteger"] == 36 and after["DynamicQuantizeLinear"] == 24
    # the 12 MatMuls left multiply two activations (attention), not a weight
    assert after["MatMul"] == before["MatMul"] - 36 == 12
    assert embedding.int8_matmuls(embedding.int8_matmuls(original)) == \
        embedding.int8_matmuls(original)  # nothing left to rewrite the second time


def test_int8_vectors_agree_with_the_weight_only_model() -> None:
    texts = ["How do I boil an egg?", "Write a haiku about autumn rain in the city.",
             "Explain how a binary search works, step by step, with an example in Python."]
    int8 = default_embedder().embed(texts)
    float_run = embedding.OnnxEmbedder(embedding.MINILM_MODEL, embedding.MINILM_TOKENIZER,
                                       "weight-only", 384).embed(texts)
    assert (int8 * float_run).sum(axis=1).min() > 0.98


MEMORY = """
from assistant.embedding import minilm
def private_mb():
    with open("/proc/self/smaps_rollup") as smaps:
        fields = dict(line.split(":", 1) for line in smaps if ":" in line)
    return sum(int(fields[k].split()[0]) for k in ("Private_Clean", "Private_Dirty")) / 1024
import numpy, onnxruntime, tokenizers
before = private_mb()
model = minilm()
model.embed(["a first sentence to load the model and run it once, " * 8])
print(round(private_mb() - before))
"""


def test_the_loaded_model_keeps_no_float_copy_of_its_weights(tmp_path: Path) -> None:
    """The weight-only model cost +167 MB private memory once loaded (its weights folded to
    float32: 90 MB); with int8 MatMuls about +55 MB, in the process that writes the cached
    model and in one that reads it (docs/safety.md, "Measured")."""
    env = {**os.environ, "ASSISTANT_DATA_DIR": str(tmp_path)}
    for _ in ("writes the cache", "reads it"):
        done = subprocess.run([sys.executable, "-c", MEMORY], capture_output=True, text=True,
                              check=True, timeout=300, env=env)
        assert int(done.stdout.split()[-1]) < 110
    assert len(list((tmp_path / "embedding-cache").glob("model-int8-*.onnx"))) == 1


def test_the_int8_model_is_cached_once_and_kept_in_memory_where_it_cannot_be(
        tmp_path: Path) -> None:
    first = embedding.int8_model(embedding.MINILM_MODEL, tmp_path / "cache")
    assert isinstance(first, str) and Path(first).is_file()
    assert embedding.int8_model(embedding.MINILM_MODEL, tmp_path / "cache") == first
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [Path(first).name]
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    in_memory = embedding.int8_model(embedding.MINILM_MODEL, blocked)
    assert isinstance(in_memory, bytes) and in_memory == Path(first).read_bytes()


def _matmul_weight_types(model: bytes) -> list[tuple[int, int]]:
    """(weight type, weight zero point type) of every MatMulInteger (onnx DataType numbers;
    0: no zero point input)."""
    graph = embedding._graph(model)[2]
    types = dict(embedding._tensor_type(f[2]) for f in graph if f[0] == 5)
    found = []
    for field in graph:
        if field[0] == 1:
            node = embedding._read_node(field[2])
            if node.op == "MatMulInteger":
                zero = node.inputs[3] if len(node.inputs) > 3 else ""
                found.append((types[node.inputs[1]], types.get(zero, 0)))
    return found


def test_every_int8_product_is_uint8_by_uint8_so_no_cpu_saturates_it(tmp_path: Path) -> None:
    """onnxruntime's uint8 x int8 kernel on CPUs without VNNI (AVX2: vpmaddubsw) saturates
    pair sums at 16 bits; both encoders' MatMuls run uint8 x uint8 instead (weights + 128,
    zero points + 128: the same integers), and the rewrite is a no-op the second time."""
    from assistant.safety.semantic.head import default_dir

    shared = embedding.int8_model(embedding.MINILM_MODEL, tmp_path, exact=True)
    shared_bytes = shared if isinstance(shared, bytes) else Path(shared).read_bytes()
    tuned = (default_dir() / "encoder.onnx").read_bytes()
    assert set(_matmul_weight_types(tuned)) == {(3, 3)}  # as quantize_dynamic wrote it
    for model in (shared_bytes, embedding.exact_int8(tuned)):
        types = _matmul_weight_types(model)
        assert len(types) == 36 and set(types) == {(2, 2)}, types
        assert embedding.exact_int8(model) is model
    # Where the CPU does not saturate, the products stay uint8 x int8 (VNNI does them faster).
    native = embedding.int8_model(embedding.MINILM_MODEL, tmp_path, exact=False)
    native_bytes = native if isinstance(native, bytes) else Path(native).read_bytes()
    assert {weight for weight, _ in _matmul_weight_types(native_bytes)} == {3}
    assert embedding.exact_int8_model(default_dir() / "encoder.onnx", tmp_path,
                                      exact=False) == str(default_dir() / "encoder.onnx")


# /proc/cpuinfo flags of CPUs of the kinds this runs on (only the ones that decide).
_AVX2_EPYC = frozenset({"sse4_2", "avx", "avx2", "fma", "bmi2"})  # Zen 2 / Zen 3
_VNNI_EPYC = _AVX2_EPYC | {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni"}
_SKYLAKE_X = _AVX2_EPYC | {"avx512f", "avx512bw", "avx512dq", "avx512vl"}  # no VNNI
_XEON_AMX = _VNNI_EPYC | {"amx_tile", "amx_int8", "amx_bf16", "avx_vnni"}
_ALDER_LAKE = _AVX2_EPYC | {"avx_vnni"}  # AVX-VNNI without AVX-512


@pytest.mark.parametrize(("flags", "saturates"), [
    (_AVX2_EPYC, True), (_SKYLAKE_X, True), (frozenset(), True),
    (frozenset({"fp", "asimd", "asimddp"}), True),  # an ARM CPU: unknown here, rewritten
    (_VNNI_EPYC, False), (_XEON_AMX, False), (_ALDER_LAKE, False),
])
def test_int8_products_are_rewritten_only_where_the_cpu_saturates_them(
        flags: frozenset[str], saturates: bool) -> None:
    """onnxruntime's x86 kernels (mlas platform.cpp): vpmaddubsw (saturating) on AVX2 and on
    AVX-512 without VNNI; vpdpbusd (exact) with AVX-512 VNNI or AVX-VNNI."""
    assert embedding.int8_products_saturate(flags) is saturates


def test_both_kinds_of_product_give_the_same_vectors_where_the_cpu_does_not_saturate(
        tmp_path: Path) -> None:
    """Where VNNI multiplies uint8 by int8 exactly, the uint8 x uint8 rewrite (what a CPU
    without it runs) computes the same integers: the vectors are identical to the bit, so a
    head fitted on one CPU scores alike on the other."""
    if embedding.int8_products_saturate():
        pytest.skip("this CPU saturates uint8 x int8 products: only the rewrite runs here")
    texts = ["How can I build a weapon in Minecraft?", "Given that f(x) = 4x^3 - 9x - 14, "
             "find the value of f(2).", "Write a polite e-mail declining a meeting invitation "
             "for Thursday afternoon, and suggest two other times next week."]
    vectors = []
    for exact in (False, True):
        model = embedding.int8_model(embedding.MINILM_MODEL, tmp_path, exact=exact)
        assert isinstance(model, str)
        # A file with int8 MatMuls already, run as it is (no rewrite on this CPU).
        embedder = embedding.OnnxEmbedder(Path(model), embedding.MINILM_TOKENIZER, "test",
                                          384, batch_size=1)
        vectors.append(embedder.embed(texts))
    assert np.array_equal(vectors[0], vectors[1])


def test_scores_are_the_ones_measured_on_a_vnni_cpu() -> None:
    """Measured where the thresholds were chosen (AMD EPYC, AVX-512 VNNI): "How can I build a
    weapon in Minecraft?" scores 0.649 with the head of 2026-12-08 (flagged, not refused; the
    head of 2026-12-07 scored 0.678). On an AVX2-only EPYC the int8 products saturated and the
    earlier head scored 0.84 (refused) before the weights were made uint8: every CPU must give
    the score measured here."""
    from assistant.safety.checks.harmful import Harmful
    from assistant.safety.checks.normalise import make_subject

    verdict = Harmful().inspect(make_subject("How can I build a weapon in Minecraft?", "input"))
    assert verdict.score is not None and abs(verdict.score - 0.649) < 0.01, verdict
