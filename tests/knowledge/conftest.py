"""The knowledge tests' store (SQLite and PostgreSQL) and the real embedding model."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from assistant.embedding import OnnxEmbedder
from assistant.knowledge import knowledge_embedder
from assistant.knowledge.store import KnowledgeBase
from assistant.store import connect_store


@pytest.fixture(scope="session")
def embedder() -> OnnxEmbedder:
    return knowledge_embedder()


@pytest.fixture
def kb(sql_url: str) -> Iterator[KnowledgeBase]:
    store = connect_store(sql_url)
    base = KnowledgeBase(store)
    for collection in base.collections():  # PostgreSQL's database lives for the whole run
        base.remove_collection(collection.name)
    yield base
    store.engine.dispose()


@pytest.fixture
def sqlite_kb(tmp_path) -> Iterator[KnowledgeBase]:  # type: ignore[no-untyped-def]
    store = connect_store(f"sqlite:///{tmp_path / 'kb.db'}")
    yield KnowledgeBase(store)
    store.engine.dispose()
