"""Answers from the company's own documents (docs/knowledge.md).

parse (files → blocks) → chunk (blocks → chunks) → ingest (embed, store in one transaction)
→ store (collections, places, documents, chunks in SQL) → retrieve (vectors + keywords, fused)
→ prompt (quoted passages, citations) → turn (the pipeline's ``ground`` hook); scope names the
places a collection is attached to; cli is ``assistant kb``.
"""

from __future__ import annotations

from assistant.embedding import OnnxEmbedder, minilm

# Chunks are longer than chat messages: the model reads up to 256 pieces of each (its
# training length), not the 128 the safety check's embedder stops at. Same vector space.
EMBED_MAX_TOKENS = 256


def knowledge_embedder() -> OnnxEmbedder:
    """The embedder for chunks and questions (all-MiniLM-L6-v2, loaded on first use)."""
    return minilm(max_tokens=EMBED_MAX_TOKENS)
