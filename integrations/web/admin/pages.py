"""Dashboard, workers, settings and the audit log: the panel's read-mostly pages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from assistant.store import shared_store
from assistant.store.audit import AuditLog
from assistant.store.memories import Memories
from integrations.web.admin import monitor
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

PAGE_SIZE = 50
MAX_POOL_STEP = 8


def dashboard_data(admin: AdminContext) -> dict[str, Any]:
    web = admin.web
    stats = monitor.live_summary(web.client, web.backend.queue_name)
    return {
        "generated_at": datetime.now(UTC).isoformat(),
        "window_s": monitor.DASHBOARD_WINDOW_S,
        "queue_depth": monitor.queue_depth(web.client, web.backend.queue_name),
        "workers": web.backend.workers(),
        "stats": stats,
        "safety": monitor.safety_counts(admin.store),
    }


@router.get("")
async def get_dashboard(request: Request, session: Session) -> HTMLResponse:
    return render(request, "dashboard.html", title="Dashboard")


@router.get("/api/dashboard")
async def get_dashboard_data(admin: Admin, session: Session) -> JSONResponse:
    data = await call(dashboard_data, admin)
    return JSONResponse(data, headers={"Cache-Control": "no-store"})


@router.get("/workers")
async def get_workers(request: Request, admin: Admin, session: Session) -> HTMLResponse:
    found = await call(admin.web.backend.workers)
    queue = await call(monitor.queue_depth, admin.web.client, admin.web.backend.queue_name)
    return render(request, "workers.html", title="Workers", workers=found, queue_depth=queue,
                  max_step=MAX_POOL_STEP)


@router.get("/api/workers")
async def get_workers_data(admin: Admin, session: Session) -> JSONResponse:
    found = await call(admin.web.backend.workers)
    return JSONResponse({"workers": found}, headers={"Cache-Control": "no-store"})


@router.post("/workers/pool")
async def post_worker_pool(admin: Admin, session: Session, form: Form) -> Response:
    """Grow or shrink one worker's pool by a few processes (Celery's pool_grow/pool_shrink)."""
    hostname = form.get("hostname", "").strip()
    try:
        delta = int(form.get("delta", ""))
    except ValueError:
        raise AdminError(422, "delta must be a whole number") from None
    if not hostname or delta == 0 or abs(delta) > MAX_POOL_STEP:
        raise AdminError(422, f"name a worker and a step between -{MAX_POOL_STEP} and "
                              f"{MAX_POOL_STEP} (not 0)")
    known = await call(admin.web.backend.workers)
    if hostname not in {worker["hostname"] for worker in known}:
        raise AdminError(404, f"no worker {hostname!r} answers")
    done = await call(admin.web.backend.resize_pool, hostname, delta)
    await call(audit, admin, session.username,
                            "pool_grow" if delta > 0 else "pool_shrink", hostname,
                            {"by": abs(delta), "acknowledged": done})
    return redirect("/admin/workers", "pool" if done else "pool-failed")


@router.get("/settings")
async def get_settings(request: Request, admin: Admin, session: Session) -> HTMLResponse:
    shown = admin.web.settings.public_dict()
    rows = [(name, "" if value is None else str(value)) for name, value in sorted(shown.items())]
    return render(request, "settings.html", title="Settings", rows=rows,
                  memories=await call(memory_counts, admin.web.settings.sql_url),
                  memory_contents=admin.web.settings.longterm_admin_contents)


def memory_counts(sql_url: str) -> dict[str, Any]:
    """Long-term memories kept, per platform and people: counts, never contents
    (docs/memory.md)."""
    memories = Memories(shared_store(sql_url))
    return {"by_platform": memories.counts(), "people": memories.people_count(),
            "automatic": memories.automatic_count()}


@router.get("/audit")
async def get_audit(request: Request, admin: Admin, session: Session,
                    actor: str = Query("", max_length=128),
                    action: str = Query("", max_length=64),
                    page: int = Query(1, ge=1, le=10_000)) -> HTMLResponse:
    def load() -> list[Any]:
        entries: list[Any] = AuditLog(admin.store).recent(
            PAGE_SIZE + 1, (page - 1) * PAGE_SIZE, actor=actor or None, action=action or None)
        return entries

    entries = await call(load)
    return render(request, "audit.html", title="Audit log", entries=entries[:PAGE_SIZE],
                  actor=actor, action=action, page=page, more=len(entries) > PAGE_SIZE)
