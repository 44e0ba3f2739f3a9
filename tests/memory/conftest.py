"""Fixtures of the long-term memory tests: the store on SQLite and PostgreSQL, the real
local embedder (shipped in a wheel; no download)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from assistant.embedding import OnnxEmbedder, default_embedder
from assistant.recall import LongTermMemory, RecallSettings
from assistant.store import Store, connect_store


@pytest.fixture
def store(sql_url: str) -> Iterator[Store]:
    opened = connect_store(sql_url)
    with opened.session() as session:  # PostgreSQL's database is shared by the run's tests
        for table in ("memories", "linked_identities", "people"):
            session.execute(sa.text(f"DELETE FROM {table}"))
    yield opened
    opened.engine.dispose()


@pytest.fixture(scope="session")
def embedder() -> OnnxEmbedder:
    return default_embedder()


@pytest.fixture
def recall(store: Store, embedder: OnnxEmbedder) -> LongTermMemory:
    return LongTermMemory(store, embedder, RecallSettings(
        group_channels=frozenset({"slack:T1:CSHARED"})))


@pytest.fixture
def recall_settings_sql(tmp_path: object) -> str:
    """An SQLite store of its own (the edges open theirs by URL)."""
    return f"sqlite:///{tmp_path}/edge.db"
