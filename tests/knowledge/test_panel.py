"""The panel's Knowledge page: upload (queued for a worker, never indexed in the web process),
list with status, attach a place, re-index, delete; a bad file is refused with its reason."""

from __future__ import annotations

import json
from typing import Any

import fakeredis
from fastapi import FastAPI
from fastapi.testclient import TestClient

from assistant.embedding import OnnxEmbedder
from assistant.knowledge.ingest import index_stored
from assistant.knowledge.store import KnowledgeBase
from tests.auxil.fake_celery import QUEUE

DOC = b"# Travel\n\n## Hotels\nHotels up to 150 EUR a night, booked through the travel desk.\n"


def queued_tasks(server: fakeredis.FakeServer) -> list[dict[str, Any]]:
    client = fakeredis.FakeRedis(server=server)
    return [json.loads(item) for item in client.lrange(QUEUE, 0, -1)]


def upload(http: TestClient, csrf: str, name: str, data: bytes, collection: str = "hr") -> Any:
    return http.post("/admin/knowledge/upload", params={"collection": collection, "name": name},
                     content=data, headers={"X-CSRF-Token": csrf,
                                            "Content-Type": "application/octet-stream"})


def test_upload_queues_a_task_and_the_page_shows_the_worker_progress(
        logged_in: TestClient, csrf: str, server: fakeredis.FakeServer, app: FastAPI,
        embedder: OnnxEmbedder) -> None:
    response = upload(logged_in, csrf, "C:\\docs\\travel.md", DOC)
    assert response.status_code == 202, response.text
    document_id = response.json()["document_id"]
    assert queued_tasks(server) == [{"task": "assistant.index_document", "args": [document_id]}]
    kb = KnowledgeBase(app.state.admin.store)
    assert kb.chunk_count() == 0  # not indexed in the web process
    page = logged_in.get("/admin/knowledge")
    assert page.status_code == 200 and 'data-status="queued"' in page.text
    assert "travel.md" in page.text

    index_stored(kb, embedder, document_id)  # what the worker's task does
    data = logged_in.get("/admin/api/knowledge").json()["documents"]
    assert [(d["source"], d["status"], d["chunk_count"]) for d in data] == [
        ("travel.md", "ready", 1)]

    attached = logged_in.post("/admin/knowledge/places", data={
        "csrf_token": csrf, "collection": "hr", "place": "slack:T1:C1"})
    assert attached.status_code == 303
    assert kb.collections_at(["slack:T1:C1"])[0].name == "hr"
    bad_place = logged_in.post("/admin/knowledge/places", data={
        "csrf_token": csrf, "collection": "hr", "place": "anywhere"})
    assert bad_place.status_code == 422

    again = logged_in.post("/admin/knowledge/reindex",
                           data={"csrf_token": csrf, "document_id": str(document_id)})
    assert again.status_code == 303
    assert queued_tasks(server)[0] == {"task": "assistant.index_document",
                                       "args": [document_id]}
    gone = logged_in.post("/admin/knowledge/delete",
                          data={"csrf_token": csrf, "document_id": str(document_id)})
    assert gone.status_code == 303
    assert kb.documents() == [] and kb.chunk_count() == 0


def test_a_bad_file_is_refused_with_its_reason_and_nothing_queued(
        logged_in: TestClient, csrf: str, server: fakeredis.FakeServer) -> None:
    refused = upload(logged_in, csrf, "tool.exe", b"MZ...")
    assert refused.status_code == 422
    assert "unsupported file type" in refused.json()["error"]["message"]
    empty = upload(logged_in, csrf, "empty.md", b"")
    assert empty.status_code == 422 and "empty" in empty.json()["error"]["message"]
    assert queued_tasks(server) == []


def test_an_upload_needs_the_csrf_token(logged_in: TestClient,
                                        server: fakeredis.FakeServer) -> None:
    response = logged_in.post("/admin/knowledge/upload",
                              params={"collection": "hr", "name": "a.md"}, content=DOC)
    assert response.status_code == 403
    assert queued_tasks(server) == []


def test_the_body_guard_lets_only_the_upload_path_take_a_bigger_body() -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def echo(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(len(await request.body())))

    from integrations.web.guards import BodyLimitMiddleware

    inner = Starlette(routes=[Route("/small", echo, methods=["POST"]),
                              Route("/admin/knowledge/upload", echo, methods=["POST"])])
    guarded = BodyLimitMiddleware(inner, max_bytes=1024,
                                  larger={"/admin/knowledge/upload": 4096})
    with TestClient(guarded) as client:  # type: ignore[arg-type]
        assert client.post("/small", content=b"x" * 2000).status_code == 413
        assert client.post("/admin/knowledge/upload", content=b"x" * 2000).text == "2000"
        assert client.post("/admin/knowledge/upload", content=b"x" * 5000).status_code == 413
