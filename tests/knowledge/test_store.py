"""Ingestion, hybrid retrieval, scope and deletion on both SQL back ends, with the real
embedding model. pgvector is not installed on the test server: its brute-force fallback is
what runs on PostgreSQL here (and ``has_pgvector`` must say so)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest
import sqlalchemy as sa

from assistant.embedding import OnnxEmbedder
from assistant.errors import DocumentRejected, InputRejected
from assistant.knowledge.ingest import (
    Limits,
    embedding_text,
    index_document,
    ingest,
    queue_document,
    reembed_collection,
)
from assistant.knowledge.keyword import keyword_search
from assistant.knowledge.retrieve import Retriever, fuse
from assistant.knowledge.scope import places_of
from assistant.knowledge.store import KnowledgeBase
from assistant.knowledge.vectors import has_pgvector
from tests.auxil.factories import inbound
from tests.knowledge.files import pdf_bytes

VPN = b"""# VPN policy

## Access
Staff connect to the office network with WireGuard. Each laptop gets its own key from IT.

## Lost devices
Report a lost laptop to the service desk at once; its VPN key is revoked within an hour.
"""

EXPENSES = b"""# Expenses

## Filing
File expenses in the finance portal within thirty days, with a photo of each receipt.

## Limits
| item | limit |
|------|-------|
| hotel | 150 EUR a night |
| meals | 40 EUR a day |
"""


def fts_rows(kb: KnowledgeBase) -> int:
    if kb.dialect != "sqlite":
        return 0
    with kb.store.session() as session:
        return int(session.scalar(sa.text(
            "SELECT count(*) FROM knowledge_chunks_fts WHERE knowledge_chunks_fts MATCH "
            "'wireguard OR receipt OR hotel'")) or 0)


def test_ingest_retrieve_and_delete(kb: KnowledgeBase, embedder: OnnxEmbedder) -> None:
    vpn = ingest(kb, embedder, "it", "vpn.md", VPN)
    expenses = ingest(kb, embedder, "finance", "expenses.md", EXPENSES)
    assert (vpn.status, vpn.title, vpn.chunk_count) == ("ready", "VPN policy", 2)
    assert not has_pgvector(kb)  # neither SQLite nor this PostgreSQL has pgvector
    retriever = Retriever(kb, embedder)
    assert retriever.index.backend == "brute-force"
    both = kb.collections()

    hits = retriever.search("How do I connect to the VPN?", both, k=3)
    assert hits[0].chunk.section == "VPN policy › Access"
    assert hits[0].chunk.title == "VPN policy" and hits[0].chunk.source == "vpn.md"
    hotel = retriever.search("what is the hotel limit per night", both, k=3)
    assert hotel[0].chunk.text.startswith("| item | limit |")  # the table, whole
    assert keyword_search(kb, "receipt photo", [c.id for c in both], 5)

    # Deleting a document deletes its chunks, their index rows and their vectors.
    before = fts_rows(kb)
    assert kb.delete_document(expenses.id)
    assert kb.chunk_count(expenses.id) == 0 and kb.document(expenses.id) is None
    assert kb.dialect != "sqlite" or fts_rows(kb) < before
    after = retriever.search("what is the hotel limit per night", kb.collections(), k=5)
    assert all(h.chunk.document_id != expenses.id for h in after)
    assert keyword_search(kb, "hotel receipt", [c.id for c in kb.collections()], 5) == []


def test_re_adding_a_file_replaces_its_chunks(kb: KnowledgeBase,
                                              embedder: OnnxEmbedder) -> None:
    first = ingest(kb, embedder, "it", "vpn.md", VPN)
    second = ingest(kb, embedder, "it", "vpn.md", VPN.replace(b"WireGuard", b"OpenVPN"))
    assert first.id == second.id and kb.chunk_count() == 2
    hits = Retriever(kb, embedder).search("OpenVPN", kb.collections(), k=1)
    assert "OpenVPN" in hits[0].chunk.text


def test_a_malformed_file_leaves_nothing_indexed(kb: KnowledgeBase,
                                                 embedder: OnnxEmbedder) -> None:
    with pytest.raises(DocumentRejected, match="not a readable pdf"):
        ingest(kb, embedder, "it", "broken.pdf", b"%PDF-1.4 garbage")
    [document] = kb.documents("it")
    assert document.status == "failed" and "not a readable pdf" in document.error
    assert kb.chunk_count() == 0
    # A re-index that fails keeps the last good chunks: nothing half replaced.
    good = ingest(kb, embedder, "it", "guide.pdf", pdf_bytes(["VPN access uses WireGuard."]))
    assert good.chunk_count == 1 and good.pages == 1
    document_id = queue_document(kb, embedder.model_id, "it", "guide.pdf",
                                 b"%PDF-1.4 broken")
    with pytest.raises(DocumentRejected):
        index_document(kb, embedder, document_id, b"%PDF-1.4 broken")
    assert kb.chunk_count(document_id) == 1
    assert kb.document(document_id).status == "failed"  # type: ignore[union-attr]


def test_a_file_too_big_is_refused_before_anything_is_stored(
        kb: KnowledgeBase, embedder: OnnxEmbedder) -> None:
    with pytest.raises(DocumentRejected, match="the limit is 100"):
        ingest(kb, embedder, "it", "vpn.md", VPN, Limits(max_bytes=100))
    assert kb.documents() == [] and kb.chunk_count() == 0


def test_a_question_only_retrieves_from_the_collections_its_place_allows(
        kb: KnowledgeBase, embedder: OnnxEmbedder) -> None:
    ingest(kb, embedder, "it", "vpn.md", VPN)
    ingest(kb, embedder, "finance", "expenses.md", EXPENSES)
    kb.attach("it", "slack:T1:C-IT")
    kb.attach("finance", "slack:T1:C-FIN")
    retriever = Retriever(kb, embedder)

    def asked_in(channel: str) -> set[str]:
        question = inbound("What is the hotel limit, and how do I connect to the VPN?")
        question = question.model_copy(update={"conversation": question.conversation
                                                .model_copy(update={"platform": "slack",
                                                                    "workspace": "T1",
                                                                    "channel": channel})})
        collections = kb.collections_at(places_of(question))
        return {h.chunk.source for h in retriever.search(question.text, collections, k=5)}

    assert asked_in("C-IT") == {"vpn.md"}
    assert asked_in("C-FIN") == {"expenses.md"}
    assert asked_in("C-OTHER") == set()
    kb.attach("finance", "slack:T1")  # the whole workspace
    assert asked_in("C-OTHER") == {"expenses.md"}


def test_places_come_from_the_conversation_not_the_text() -> None:
    slack = inbound("key:sk-ast-00000000 web").model_copy(update={"conversation": inbound(
        "x").conversation.model_copy(update={"platform": "slack", "workspace": "T1",
                                              "channel": "C1"})})
    assert places_of(slack) == {"slack", "slack:T1", "slack:T1:C1"}
    web = inbound("hi").model_copy(update={"conversation": inbound("x").conversation
                                           .model_copy(update={"user": "ada"})})
    assert places_of(web, lambda handle: ["finance"]) == {"web", "web:ada",
                                                          "web-group:finance"}
    keyed = inbound("hi").model_copy(update={"conversation": inbound("x").conversation
                                             .model_copy(update={"user": "sk-ast-0a1b2c3d"})})
    assert places_of(keyed) == {"api", "key:sk-ast-0a1b2c3d"}


def test_places_are_validated(kb: KnowledgeBase, embedder: OnnxEmbedder) -> None:
    kb.ensure_collection("it", embedder.model_id)
    with pytest.raises(InputRejected, match="not a place"):
        kb.attach("it", "everywhere")
    with pytest.raises(InputRejected, match="no collection"):
        kb.attach("nope", "web")


def test_reciprocal_rank_fusion() -> None:
    fused = fuse([[1, 2, 3], [3, 1, 4]])
    assert [item for item, _ in fused][:2] == [1, 3]
    assert dict(fused)[1] == pytest.approx(1 / 61 + 1 / 62)


class RenamedEmbedder:
    """The real model under another name: a collection "made with another model"."""

    def __init__(self, inner: OnnxEmbedder, model_id: str) -> None:
        self.inner = inner
        self.model_id = model_id

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        return self.inner.embed(texts)


def test_a_collection_of_another_embedding_model_is_embedded_again(
        kb: KnowledgeBase, embedder: OnnxEmbedder) -> None:
    """After an upgrade that changes the embedding model, a collection made with the old one
    is not searched (its vectors cannot be compared) and refuses new documents; `reembed`
    embeds its stored chunks with the new model, and then it is searched and grows again."""
    old = RenamedEmbedder(embedder, "an-older-model")
    ingest(kb, old, "it", "vpn.md", VPN)  # type: ignore[arg-type]
    retriever = Retriever(kb, embedder)
    assert retriever.search("How do I connect to the VPN?", kb.collections(), k=3) == []
    with pytest.raises(InputRejected, match="reembed"):
        ingest(kb, embedder, "it", "expenses.md", EXPENSES)
    before = kb.collection("it")
    assert before is not None
    assert reembed_collection(kb, embedder, "it") == 2
    after = kb.collection("it")
    assert after is not None and after.embedding_model == embedder.model_id
    assert after.generation > before.generation  # processes' cached vectors reload
    hits = retriever.search("How do I connect to the VPN?", kb.collections(), k=3)
    assert hits and hits[0].chunk.section == "VPN policy › Access"
    _, vectors = kb.vectors(after.id)
    expected = embedder.embed([embedding_text("VPN policy", "VPN policy › Access",
                                              hits[0].chunk.text)])
    assert float(np.max(vectors @ expected[0])) > 0.999  # the stored vector is the new model's
    assert ingest(kb, embedder, "it", "expenses.md", EXPENSES).status == "ready"
    with pytest.raises(InputRejected, match="no collection"):
        reembed_collection(kb, embedder, "missing")


def test_a_reembed_racing_a_change_is_refused_and_changes_nothing(
        kb: KnowledgeBase, embedder: OnnxEmbedder) -> None:
    """Vectors are written only if no document came or went while the chunks were embedded:
    a stale generation writes nothing, and the collection keeps its model."""
    old = RenamedEmbedder(embedder, "an-older-model")
    ingest(kb, old, "it", "vpn.md", VPN)  # type: ignore[arg-type]
    collection = kb.collection("it")
    assert collection is not None
    generation, rows = kb.chunk_texts(collection.id)
    ids, before = kb.vectors(collection.id)
    with pytest.raises(InputRejected, match="changed"):
        kb.replace_vectors(collection.id, generation - 1, [r[0] for r in rows],
                           np.zeros_like(before), embedder.model_id)
    _, unchanged = kb.vectors(collection.id)
    assert np.array_equal(unchanged, before)
    still = kb.collection("it")
    assert still is not None and still.embedding_model == "an-older-model"
