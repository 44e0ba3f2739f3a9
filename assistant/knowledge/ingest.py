"""A file into a collection: check its size, parse, chunk, embed, then store every chunk in
one transaction (``KnowledgeBase.replace_chunks``). A refused or failed file leaves its
document ``failed`` with the reason, and no chunk of it; a re-index that fails keeps the
chunks of the last good run.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assistant.embedding import Embedder
from assistant.errors import DocumentRejected, InputRejected
from assistant.knowledge.chunk import ChunkSize, chunk_blocks
from assistant.knowledge.parse import format_of, parse
from assistant.knowledge.store import DocumentInfo, KnowledgeBase

log = logging.getLogger(__name__)

MAX_BYTES = 25 * 1024 * 1024
MAX_CHUNKS = 20_000
CHARS_PER_PAGE = 3000  # a "page" of a format without pages, for the ingestion rate
EMBED_BATCH = 32

Progress = Callable[[int], None]


@dataclass(frozen=True)
class Limits:
    max_bytes: int = MAX_BYTES
    max_chunks: int = MAX_CHUNKS


def check_size(name: str, size: int, limits: Limits = Limits()) -> None:
    if size > limits.max_bytes:
        raise DocumentRejected(f"{name}: {size:,} bytes; the limit is {limits.max_bytes:,} "
                               "(ASSISTANT_KNOWLEDGE_MAX_MB)")
    if size == 0:
        raise DocumentRejected(f"{name}: the file is empty")


def read_file(path: Path, limits: Limits = Limits()) -> bytes:
    """A file's bytes, refused before reading when it is too big."""
    if not path.is_file():
        raise DocumentRejected(f"{path}: no such file")
    check_size(path.name, path.stat().st_size, limits)
    return path.read_bytes()


def embedding_text(title: str, section: str, text: str) -> str:
    """What is embedded for a chunk: where it stands, then what it says."""
    where = " › ".join(part for part in (title, section) if part)
    return f"{where}\n{text}" if where else text


def queue_document(kb: KnowledgeBase, model_id: str, collection: str, source: str,
                   data: bytes, limits: Limits = Limits()) -> int:
    """Check a file and record it, with its bytes, ``queued`` in its collection (made if
    new, for vectors of ``model_id``); its id. Needs no model: the web process calls it."""
    check_size(source, len(data), limits)
    kind = format_of(source)
    found = kb.ensure_collection(collection, model_id)
    return kb.add_document(found.id, source, Path(source).stem, kind,
                           hashlib.sha256(data).hexdigest(), len(data), data)


def index_stored(kb: KnowledgeBase, embedder: Embedder, document_id: int,
                 limits: Limits = Limits()) -> DocumentInfo:
    """Index (or re-index) a document from the file stored with it (the workers' task)."""
    data = kb.content(document_id)
    if data is None:
        if kb.document(document_id) is not None:
            kb.set_status(document_id, "failed", 0, "its file is not stored: add it again")
        raise DocumentRejected(f"document {document_id} has no stored file")
    return index_document(kb, embedder, document_id, data, limits)


def index_document(kb: KnowledgeBase, embedder: Embedder, document_id: int, data: bytes,
                   limits: Limits = Limits(), size: ChunkSize | None = None,
                   progress: Progress | None = None) -> DocumentInfo:
    """Parse, chunk, embed and store one queued document; raises ``DocumentRejected`` (and
    marks the document failed) when the file cannot be indexed."""
    document = kb.document(document_id)
    if document is None:
        raise DocumentRejected(f"document {document_id} does not exist (deleted meanwhile?)")
    started = time.perf_counter()
    kb.set_status(document_id, "indexing", 0)
    try:
        check_size(document.source, len(data), limits)
        parsed = parse(document.source, data)
        chunks = chunk_blocks(parsed.blocks, size or ChunkSize())
        if len(chunks) > limits.max_chunks:
            raise DocumentRejected(f"{document.source}: {len(chunks):,} chunks; the limit is "
                                   f"{limits.max_chunks:,} per document: split the file")
        texts = [embedding_text(parsed.title, c.section, c.text) for c in chunks]
        parts = []
        last_reported = 0
        for start in range(0, len(texts), EMBED_BATCH):
            parts.append(embedder.embed(texts[start:start + EMBED_BATCH]))
            percent = min(99, (start + EMBED_BATCH) * 100 // max(len(texts), 1))
            if percent - last_reported >= 10:
                kb.set_status(document_id, "indexing", percent)
                last_reported = percent
                if progress is not None:
                    progress(percent)
        vectors = np.concatenate(parts) if parts else np.zeros((0, embedder.dimensions),
                                                               dtype=np.float32)
        pages = parsed.pages if parsed.pages > 1 or document.format == "pdf" else max(
            1, -(-sum(len(b.text) for b in parsed.blocks) // CHARS_PER_PAGE))
        kb.replace_chunks(document_id, parsed.title, pages, chunks, vectors)
    except DocumentRejected as exc:
        kb.set_status(document_id, "failed", 0, str(exc))
        raise
    except Exception as exc:
        message = f"{document.source}: indexing failed ({type(exc).__name__}: {exc})"
        kb.set_status(document_id, "failed", 0, message)
        raise DocumentRejected(message) from exc
    log.info("indexed %s: %d chunk(s) in %.1f s", document.source, len(chunks),
             time.perf_counter() - started)
    info = kb.document(document_id)
    assert info is not None
    return info


def ingest(kb: KnowledgeBase, embedder: Embedder, collection: str, source: str, data: bytes,
           limits: Limits = Limits()) -> DocumentInfo:
    """Queue and index a file in this process (the CLI; the panel queues it for a worker)."""
    document_id = queue_document(kb, embedder.model_id, collection, source, data, limits)
    return index_document(kb, embedder, document_id, data, limits)


def reembed_collection(kb: KnowledgeBase, embedder: Embedder, name: str) -> int:
    """Embed every chunk of collection ``name`` again with ``embedder`` (after the embedding
    model changed: vectors of two models cannot be compared, so until then the collection is
    not searched); returns how many chunks. The texts are the stored chunks': no file is parsed
    again."""
    collection = kb.collection(name)
    if collection is None:
        raise InputRejected(f"no collection named {name!r}")
    generation, rows = kb.chunk_texts(collection.id)
    texts = [embedding_text(title, section, text) for _, title, section, text in rows]
    parts = [embedder.embed(texts[start:start + EMBED_BATCH])
             for start in range(0, len(texts), EMBED_BATCH)]
    vectors = (np.concatenate(parts) if parts
               else np.zeros((0, 0), dtype=np.float32))
    kb.replace_vectors(collection.id, generation, [r[0] for r in rows], vectors,
                       embedder.model_id)
    return len(rows)
