"""The knowledge tests' store (SQLite and PostgreSQL) and the real embedding model."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from assistant.embedding import OnnxEmbedder
from assistant.knowledge import knowledge_embedder
from assistant.knowledge.store import KnowledgeBase
from assistant.store import connect_store
from tests.admin.conftest import (  # noqa: F401 - the panel's fixtures, for test_panel.py
    app,
    csrf,
    http,
    logged_in,
    server,
    settings,
)


@pytest.fixture(scope="session")
def embedder() -> OnnxEmbedder:
    return knowledge_embedder()


@pytest.fixture
def kb(sql_url: str) -> Iterator[KnowledgeBase]:
    opened = connect_store(sql_url)
    base = KnowledgeBase(opened)
    for collection in base.collections():  # PostgreSQL's database lives for the whole run
        base.remove_collection(collection.name)
    yield base
    opened.engine.dispose()


@pytest.fixture
def sqlite_kb(tmp_path) -> Iterator[KnowledgeBase]:  # type: ignore[no-untyped-def]
    opened = connect_store(f"sqlite:///{tmp_path / 'kb.db'}")
    yield KnowledgeBase(opened)
    opened.engine.dispose()
