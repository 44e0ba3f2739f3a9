"""The knowledge base in the panel: collections and where they are used, documents with their
indexing progress; upload, re-index and delete (docs/knowledge.md).

Indexing never runs here: an upload is stored (``queue_document``) and a worker indexes it
from the ``assistant.knowledge`` queue. The upload is the file's raw bytes (``fetch`` from the
page, with the CSRF header), allowed up to ``ASSISTANT_KNOWLEDGE_MAX_MB`` by the body guard.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from assistant.embedding import MINILM_ID
from assistant.errors import InputRejected
from assistant.knowledge.ingest import Limits, queue_document
from assistant.knowledge.store import KnowledgeBase
from integrations.web.admin.core import (
    Admin,
    AdminContext,
    AdminError,
    Form,
    Session,
    audit,
    call,
    redirect,
    render,
)

router = APIRouter(prefix="/admin", include_in_schema=False)
UPLOAD_PATH = "/admin/knowledge/upload"


def _kb(admin: AdminContext) -> KnowledgeBase:
    return KnowledgeBase(admin.store)


def _documents(admin: AdminContext) -> list[dict[str, Any]]:
    return [asdict(d) | {"updated_at": d.updated_at.isoformat()}
            for d in _kb(admin).documents()]


@router.get("/knowledge")
async def get_knowledge(request: Request, admin: Admin, session: Session) -> HTMLResponse:
    collections = await call(lambda: _kb(admin).collections())
    documents = await call(lambda: _kb(admin).documents())
    return render(request, "knowledge.html", title="Knowledge", collections=collections,
                  documents=documents,
                  max_mb=admin.web.settings.knowledge_max_mb)


@router.get("/api/knowledge")
async def get_knowledge_data(admin: Admin, session: Session) -> JSONResponse:
    """The documents with their status and progress (the page polls it while indexing)."""
    return JSONResponse({"documents": await call(_documents, admin)},
                        headers={"Cache-Control": "no-store"})


def _queue(admin: AdminContext, collection: str, name: str, data: bytes) -> int:
    limits = Limits(max_bytes=int(admin.web.settings.knowledge_max_mb * 1024 * 1024))
    document_id = queue_document(_kb(admin), MINILM_ID, collection, name, data, limits)
    admin.web.backend.enqueue_index(document_id)
    return document_id


@router.post("/knowledge/upload")
async def post_upload(request: Request, admin: Admin, session: Session,
                      collection: str = Query(..., min_length=1, max_length=128),
                      name: str = Query(..., min_length=1, max_length=300)) -> JSONResponse:
    """One file as the raw request body; queued for a worker. 422 with the reason if the file
    cannot be taken (type, size, an empty file)."""
    data = await request.body()
    file_name = name.replace("\\", "/").rsplit("/", 1)[-1]
    try:
        document_id = await call(_queue, admin, collection.strip(), file_name, data)
    except InputRejected as exc:  # DocumentRejected is one
        raise AdminError(422, str(exc)) from exc
    await call(audit, admin, session.username, "kb_upload", f"{collection}/{file_name}",
               {"document_id": document_id, "bytes": len(data)})
    return JSONResponse({"document_id": document_id, "status": "queued"}, status_code=202)


def _document_id(form: dict[str, str]) -> int:
    try:
        return int(form.get("document_id", ""))
    except ValueError:
        raise AdminError(422, "document_id must be a number") from None


@router.post("/knowledge/reindex")
async def post_reindex(admin: Admin, session: Session, form: Form) -> Response:
    document_id = _document_id(form)
    found = await call(lambda: _kb(admin).document(document_id))
    if found is None:
        raise AdminError(404, f"no document {document_id}")
    await call(lambda: _kb(admin).set_status(document_id, "queued", 0))
    await call(admin.web.backend.enqueue_index, document_id)
    await call(audit, admin, session.username, "kb_reindex", found.source,
               {"document_id": document_id})
    return redirect("/admin/knowledge", "kb-queued")


@router.post("/knowledge/delete")
async def post_delete(admin: Admin, session: Session, form: Form) -> Response:
    document_id = _document_id(form)
    found = await call(lambda: _kb(admin).document(document_id))
    if found is None or not await call(lambda: _kb(admin).delete_document(document_id)):
        raise AdminError(404, f"no document {document_id}")
    await call(audit, admin, session.username, "kb_delete", found.source,
               {"document_id": document_id, "collection": found.collection})
    return redirect("/admin/knowledge", "kb-deleted")


@router.post("/knowledge/places")
async def post_places(admin: Admin, session: Session, form: Form) -> Response:
    """Attach a collection to a place, or detach it (``detach`` set)."""
    collection, place = form.get("collection", "").strip(), form.get("place", "").strip()
    detach = bool(form.get("detach"))
    try:
        if detach:
            done = await call(lambda: _kb(admin).detach(collection, place))
            if not done:
                raise AdminError(404, f"{collection} is not used in {place}")
        else:
            await call(lambda: _kb(admin).attach(collection, place))
    except InputRejected as exc:
        raise AdminError(422, str(exc)) from exc
    await call(audit, admin, session.username, "kb_detach" if detach else "kb_attach",
               collection, {"place": place})
    return redirect("/admin/knowledge", "kb-detached" if detach else "kb-attached")
