"""The trained head on top of the sentence embedding: is a request harmful, and in which
category. Plain NumPy on arrays shipped in ``assistant/safety/data/semantic/`` (written by
``fit``; read with ``allow_pickle=False``), so scoring needs no scikit-learn.

Two parts, both fitted by scikit-learn in ``fit``:

- ``unsafe``: a small multi-layer perceptron (ReLU hidden layers, logistic output) giving the
  probability that the text asks for harm, injection or the system prompt;
- ``category``: a multinomial logistic regression over the harmful categories (S1–S14,
  ``prompt_injection``), fitted on the harmful lines that carry one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float32]
META = "meta.json"


def sigmoid(logits: Array) -> Array:
    probabilities: Array = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    return probabilities


def default_dir() -> Path:
    return Path(str(resources.files("assistant.safety") / "data" / "semantic"))


@dataclass(frozen=True)
class Thresholds:
    """``block`` and above refuses; ``flag`` up to ``block`` is logged for review."""

    flag: float
    block: float


@dataclass(frozen=True)
class Head:
    model_id: str  # the embedder the head was fitted on (``assistant.embedding``)
    layers: tuple[tuple[Array, Array], ...]
    category_weights: Array  # dimensions × categories
    category_bias: Array
    categories: tuple[str, ...]
    thresholds: Thresholds
    meta: dict[str, Any]

    def logits(self, vectors: Array) -> Array:
        """The log-odds of harmful for each row of ``vectors``."""
        hidden = vectors
        for weights, bias in self.layers[:-1]:
            hidden = np.maximum(hidden @ weights + bias, 0.0)
        weights, bias = self.layers[-1]
        logits: Array = (hidden @ weights + bias).reshape(-1).astype(np.float32)
        return logits

    def unsafe(self, vectors: Array) -> Array:
        """P(harmful) for each row of ``vectors``."""
        return sigmoid(self.logits(vectors))

    def category(self, vectors: Array) -> list[str]:
        """The most likely harmful category of each row."""
        scores = vectors @ self.category_weights + self.category_bias
        return [self.categories[int(i)] for i in np.argmax(scores, axis=1)]

    def arrays(self) -> dict[str, Array]:
        named: dict[str, Array] = {}
        for n, (weights, bias) in enumerate(self.layers):
            named[f"layer{n}_weights"] = weights
            named[f"layer{n}_bias"] = bias
        named["category_weights"] = self.category_weights
        named["category_bias"] = self.category_bias
        return named

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.npy"):
            old.unlink()
        for name, array in self.arrays().items():
            np.save(folder / f"{name}.npy", np.ascontiguousarray(array, dtype=np.float32),
                    allow_pickle=False)
        meta = {**self.meta, "model_id": self.model_id, "layers": len(self.layers),
                "categories": list(self.categories),
                "thresholds": {"flag": self.thresholds.flag, "block": self.thresholds.block}}
        (folder / META).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n",
                                   encoding="utf-8")


def load(folder: Path | None = None) -> Head:
    """The head in ``folder`` (default: the shipped one). Raises ``OSError``/``ValueError``
    when it is missing or malformed."""
    folder = folder or default_dir()
    meta = json.loads((folder / META).read_text(encoding="utf-8"))

    def array(name: str) -> Array:
        loaded: Array = np.load(folder / f"{name}.npy", allow_pickle=False).astype(np.float32)
        return loaded

    layers = tuple((array(f"layer{n}_weights"), array(f"layer{n}_bias"))
                   for n in range(int(meta["layers"])))
    thresholds = Thresholds(float(meta["thresholds"]["flag"]),
                            float(meta["thresholds"]["block"]))
    if not 0.0 < thresholds.flag <= thresholds.block <= 1.0:
        raise ValueError(f"{folder / META}: thresholds must satisfy 0 < flag <= block <= 1")
    return Head(model_id=str(meta["model_id"]), layers=layers,
                category_weights=array("category_weights"),
                category_bias=array("category_bias"),
                categories=tuple(str(c) for c in meta["categories"]),
                thresholds=thresholds, meta=meta)
