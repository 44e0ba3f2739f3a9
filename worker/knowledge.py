"""The knowledge base's ingestion task: index a document whose file the web process stored
(docs/knowledge.md). Thin: the work is ``assistant.knowledge.ingest.index_stored``; a file that
cannot be indexed is marked failed with its reason and is not retried (it would fail again).
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from assistant.errors import DocumentRejected
from assistant.knowledge import knowledge_embedder
from assistant.knowledge.ingest import Limits, index_stored
from assistant.knowledge.store import KnowledgeBase
from assistant.store import connect_store
from worker.app import INDEX_TASK, app, settings

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _knowledge() -> tuple[KnowledgeBase, Any]:
    return KnowledgeBase(connect_store(settings.sql_url)), knowledge_embedder()


@app.task(name=INDEX_TASK, acks_late=True, autoretry_for=(OSError,), retry_backoff=2,
          max_retries=3)
def index_document(document_id: int) -> str:
    """Index (or re-index) a stored document; returns its status: ready or failed."""
    kb, embedder = _knowledge()
    limits = Limits(max_bytes=int(settings.knowledge_max_mb * 1024 * 1024))
    try:
        index_stored(kb, embedder, document_id, limits)
    except DocumentRejected as exc:
        log.warning("document %d not indexed: %s", document_id, exc)
        return "failed"
    return "ready"
