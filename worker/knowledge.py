"""The knowledge base's ingestion task: index a file an admin uploaded (docs/knowledge.md).

Thin: the bytes wait in Redis (``assistant.keys.knowledge_upload``), the work is
``assistant.knowledge.ingest.index_document``; a file that cannot be indexed is marked failed
with its reason and is not retried (retrying would fail the same way).
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from assistant import keys
from assistant.errors import DocumentRejected
from assistant.knowledge import knowledge_embedder
from assistant.knowledge.ingest import Limits, index_document
from assistant.knowledge.store import KnowledgeBase
from assistant.store import connect_store
from worker.app import INDEX_TASK, app, settings

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _knowledge() -> tuple[KnowledgeBase, Any]:
    return KnowledgeBase(connect_store(settings.sql_url)), knowledge_embedder()


@app.task(name=INDEX_TASK, acks_late=True, autoretry_for=(OSError,), retry_backoff=2,
          max_retries=3)
def index_uploaded(document_id: int) -> str:
    """Index an uploaded document; returns its status (ready, failed, gone)."""
    from worker.tasks import runtime_client

    client = runtime_client()
    kb, embedder = _knowledge()
    data = client.get(keys.knowledge_upload(document_id))
    if data is None:
        if kb.document(document_id) is not None:
            kb.set_status(document_id, "failed", 0, "the uploaded file expired before a "
                          "worker took it: upload it again")
            return "failed"
        return "gone"
    limits = Limits(max_bytes=int(settings.knowledge_max_mb * 1024 * 1024))
    try:
        index_document(kb, embedder, document_id, bytes(data), limits)
        status = "ready"
    except DocumentRejected as exc:
        log.warning("document %d not indexed: %s", document_id, exc)
        status = "failed"
    client.delete(keys.knowledge_upload(document_id))
    return status
