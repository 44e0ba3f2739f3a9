"""Liveness and readiness (contract): ``/healthz`` and ``/readyz``."""

from __future__ import annotations

import logging
from typing import Any

import redis
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from assistant import selftest
from integrations.web.deps import State, WebState
from integrations.web.guards import ops_allowed

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


@router.get("/healthz")
async def get_healthz() -> dict[str, str]:
    """The web process is up."""
    return {"status": "ok"}


def _readiness(state: WebState) -> dict[str, Any]:
    details: dict[str, Any] = {"redis": "ok", "workers": []}
    try:
        state.client.ping()
    except redis.RedisError as exc:
        details["redis"] = f"unavailable: {exc}"
        return details
    try:
        replies = state.celery_app.control.ping(timeout=1.0) or []
    except Exception as exc:  # kombu's errors when the broker drops mid-ping
        details["workers_error"] = str(exc)
        replies = []
    details["workers"] = sorted(name for reply in replies for name in reply)
    try:
        # A worker that refused to start because its engine cannot decode here says why.
        failed = selftest.recent_failures(state.client)
    except redis.RedisError:
        failed = {}
    if failed:
        details["engine_selftest_failed"] = failed
    return details


@router.get("/readyz")
async def get_readyz(state: State, request: Request) -> JSONResponse:
    """200 when Redis answers and at least one worker answers a ping; 503 otherwise.

    The details (worker host names, error text) only for operators
    (``integrations.web.guards.ops_allowed``); everyone else gets ``{"ready": ...}``.
    """
    details = await run_in_threadpool(_readiness, state)
    ready = details["redis"] == "ok" and bool(details["workers"])
    if not ready:
        log.warning("not ready: %s", details)
    content = {"ready": ready, **details} if ops_allowed(request, state.settings) else {
        "ready": ready}
    return JSONResponse(status_code=200 if ready else 503, content=content)
