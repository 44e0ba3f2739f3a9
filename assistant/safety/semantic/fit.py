"""Fit the semantic head from the training sets and write it where the package ships it.

``python -m assistant.safety.semantic.fit SETS [--out FOLDER]`` (``make safety-model``):
reads ``SETS/train/*.jsonl`` (written by ``sources``) and the manifest beside them, embeds
every line with the default embedder (``assistant.embedding``), fits the head with
scikit-learn (fixed seeds: the same sets give the same numbers) and writes its arrays and
``meta.json`` to FOLDER (default ``assistant/safety/data/semantic/frozen``: the check averages
this head with the tuned encoder's, ``tune``) and the manifest to
``assistant/safety/data/sources.json``. It prints the head's cross-validated figures on the
training lines; the development sets are measured with ``assistant safety eval``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from assistant.embedding import Embedder, default_embedder
from assistant.safety.checks.normalise import normalize
from assistant.safety.semantic.head import Head, Thresholds, default_dir
from assistant.safety.semantic.sources import SOURCES

# Chosen on the development sets (docs/safety.md, "Measured"): at ``block`` the ordinary
# requests refused stay under 1% and our look-alikes under 3% (the first such point of the
# curve); between ``flag`` and ``block`` a text is only logged.
BLOCK_THRESHOLD = 0.95
FLAG_THRESHOLD = 0.6
HIDDEN = (64,)  # one small hidden layer per network: 384 × 64 weights
ALPHA = 1e-3  # L2 penalty
SEED = 0
# Networks fitted with different seeds, their logits averaged: one network alone moved by
# several points between seeds on the development sets (a harmless question refused at 0.99
# by one seed and not by another); the average is exactly one network with SEEDS × 64 hidden
# units, so the head's format and cost barely change.
SEEDS = (0, 1, 2)
_CATEGORIES = {*(f"S{n}" for n in range(1, 15)), "prompt_injection"}


@dataclass(frozen=True)
class Line:
    text: str
    unsafe: bool
    category: str
    source: str


def project_lines() -> list[Line]:
    """Our own lines (``data/train.jsonl``, written for this project): look-alikes that no
    public set has ("kill a Python process") and the injection requests the public sets lack.
    Measured with and without them in docs/safety.md."""
    from importlib import resources

    text = (resources.files("assistant.safety") / "data" / "train.jsonl").read_text("utf-8")
    lines = []
    for raw in text.splitlines():
        if raw.strip():
            row = json.loads(raw)
            lines.append(Line(row["text"], row["label"] == "unsafe", row.get("category", ""),
                              "project"))
    return lines


def training_lines(sets: Path) -> list[Line]:
    lines = []
    for source in SOURCES:
        if source.role != "train":
            continue
        path = sets / "train" / f"{source.name}.jsonl"
        for raw in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(raw)
            lines.append(Line(row["text"], row["label"] == "unsafe", row["category"],
                              source.name))
    return lines + project_lines()


def embed_lines(lines: Sequence[Line], embedder: Embedder,
                cache: Path | None = None) -> np.ndarray[Any, Any]:
    """Embeddings of the texts as the check sees them (normalised), longest texts batched
    together so little padding is computed. ``cache``: a folder keeping them, named by the
    embedder and the texts, so a refit with other settings does not embed again."""
    texts = [normalize(line.text) for line in lines]
    stored = None
    if cache is not None:
        digest = hashlib.sha256(embedder.model_id.encode())
        for text in texts:
            digest.update(hashlib.sha256(text.encode()).digest())
        stored = cache / f"vectors-{digest.hexdigest()[:24]}.npy"
        if stored.is_file():
            cached: np.ndarray[Any, Any] = np.load(stored, allow_pickle=False)
            return cached
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    vectors = embedder.embed([texts[i] for i in order])
    result = np.zeros_like(vectors)
    result[order] = vectors
    if stored is not None:
        stored.parent.mkdir(parents=True, exist_ok=True)
        np.save(stored, result, allow_pickle=False)
    return result


def embed_by_source(lines: Sequence[Line], embedder: Embedder,
                    cache: Path | None = None) -> np.ndarray[Any, Any]:
    """``embed_lines`` one source at a time (each cached on its own), in the lines' order."""
    groups: list[list[Line]] = []
    for line in lines:
        if not groups or groups[-1][0].source != line.source:
            groups.append([])
        groups[-1].append(line)
    return np.concatenate([embed_lines(group, embedder, cache) for group in groups])


@dataclass(frozen=True)
class Ensemble:
    """MLPs with one hidden layer whose logits are averaged; ``merged`` is the same function
    as one network (hidden units side by side, output weights divided by their number)."""

    networks: tuple[Any, ...]

    def merged(self) -> tuple[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]], ...]:
        count = len(self.networks)
        return ((np.concatenate([n.coefs_[0] for n in self.networks], axis=1),
                 np.concatenate([n.intercepts_[0] for n in self.networks])),
                (np.concatenate([n.coefs_[1] for n in self.networks], axis=0) / count,
                 np.mean([n.intercepts_[1] for n in self.networks], axis=0)))

    def predict_proba(self, vectors: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        (w0, b0), (w1, b1) = self.merged()
        logits = (np.maximum(vectors @ w0 + b0, 0.0) @ w1 + b1).reshape(-1)
        positive = 1.0 / (1.0 + np.exp(-logits))
        return np.stack([1.0 - positive, positive], axis=1)


def fit(vectors: np.ndarray[Any, Any], lines: Sequence[Line]) -> tuple[Ensemble, Any]:
    from sklearn.neural_network import MLPClassifier

    if len(HIDDEN) != 1:
        raise ValueError("the ensemble merges networks with exactly one hidden layer")
    unsafe = np.array([line.unsafe for line in lines])
    # Balanced classes by repetition (MLPClassifier has no class weights): each harmful line
    # counts as much in total as each benign one.
    ratio = max(1, round((~unsafe).sum() / max(1, unsafe.sum())))
    index = np.concatenate([np.flatnonzero(~unsafe), np.repeat(np.flatnonzero(unsafe), ratio)])
    networks = []
    for seed in SEEDS:
        network = MLPClassifier(hidden_layer_sizes=HIDDEN, alpha=ALPHA, max_iter=300,
                                random_state=seed)
        network.fit(vectors[index], unsafe[index])
        networks.append(network)
    return Ensemble(tuple(networks)), fit_categoriser(vectors, lines)


def fit_categoriser(vectors: np.ndarray[Any, Any], lines: Sequence[Line]) -> Any:
    """A multinomial logistic regression: which category a harmful line is (S1–S14,
    injection), fitted on the harmful lines that carry one."""
    from sklearn.linear_model import LogisticRegression

    with_category = [i for i, line in enumerate(lines) if line.category in _CATEGORIES]
    categoriser = LogisticRegression(C=4.0, max_iter=2000, random_state=SEED)
    categoriser.fit(vectors[with_category], [lines[i].category for i in with_category])
    return categoriser


def to_head(detector: Ensemble, categoriser: Any, model_id: str, meta: dict[str, Any]) -> Head:
    layers = tuple((np.asarray(w, dtype=np.float32), np.asarray(b, dtype=np.float32))
                   for w, b in detector.merged())
    return Head(model_id=model_id, layers=layers,
                category_weights=np.ascontiguousarray(categoriser.coef_.T, dtype=np.float32),
                category_bias=np.asarray(categoriser.intercept_, dtype=np.float32),
                categories=tuple(str(c) for c in categoriser.classes_),
                thresholds=Thresholds(FLAG_THRESHOLD, BLOCK_THRESHOLD), meta=meta)


def cross_validate(vectors: np.ndarray[Any, Any], lines: Sequence[Line],
                   folds: int = 5) -> dict[str, Any]:
    """Stratified k-fold figures of the detector on the training lines."""
    from sklearn.model_selection import StratifiedKFold

    unsafe = np.array([line.unsafe for line in lines])
    scores = np.zeros(len(lines))
    for train_index, test_index in StratifiedKFold(folds, shuffle=True,
                                                   random_state=SEED).split(vectors, unsafe):
        detector, _ = fit(vectors[train_index], [lines[i] for i in train_index])
        scores[test_index] = detector.predict_proba(vectors[test_index])[:, 1]
    figures = {}
    for threshold in (FLAG_THRESHOLD, BLOCK_THRESHOLD):
        flagged = scores >= threshold
        figures[str(threshold)] = {
            "recall": round(float((flagged & unsafe).sum() / unsafe.sum()), 3),
            "false_positive_rate": round(float((flagged & ~unsafe).sum() / (~unsafe).sum()), 3),
        }
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", type=Path, help="the folder ``sources`` wrote")
    parser.add_argument("--out", type=Path, default=None, help="where the head goes")
    parser.add_argument("--cv", action="store_true", help="also print 5-fold figures")
    args = parser.parse_args(argv)
    lines = training_lines(args.sets)
    embedder = default_embedder()
    vectors = embed_by_source(lines, embedder, cache=args.sets / "vectors")
    detector, categoriser = fit(vectors, lines)
    manifest_text = (args.sets / "manifest.json").read_text(encoding="utf-8")
    meta = {
        "fitted_by": "assistant.safety.semantic.fit",
        "scikit_learn": metadata.version("scikit-learn"),
        "max_tokens": getattr(embedder, "max_tokens", None),
        "manifest_sha256": hashlib.sha256(manifest_text.encode()).hexdigest(),
        "training_lines": dict(sorted(Counter(
            f"{line.source}:{'unsafe' if line.unsafe else 'safe'}" for line in lines).items())),
        "hidden_layers": list(HIDDEN), "alpha": ALPHA, "seeds": list(SEEDS),
    }
    head = to_head(detector, categoriser, embedder.model_id, meta)
    out = args.out or default_dir() / "frozen"  # the tuned check averages with it (tune.py)
    head.save(out)
    (default_dir().parent / "sources.json").write_text(manifest_text, encoding="utf-8")
    print(f"wrote the head to {out} ({len(lines)} training lines)")
    if args.cv:
        print(json.dumps(cross_validate(vectors, lines), indent=1))


if __name__ == "__main__":
    main()
