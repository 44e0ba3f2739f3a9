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
        details["workers"] = state.backend.ping(timeout=1.0)
    except Exception as exc:  # the broker's errors when it drops mid-ping
        details["workers_error"] = str(exc)
        details["workers"] = []
    try:
        # A worker that refused to start because its engine cannot decode here says why.
        failed = selftest.recent_failures(state.client)
    except redis.RedisError:
        failed = {}
    if failed:
        details["engine_selftest_failed"] = failed
    # A node that answers pings may still have a turn stuck (worker/watchdog.py): it is not
    # ready until its watchdog has recycled that process.
    stalled = _stalled(state, details["workers"])
    if stalled:
        details["stalled"] = stalled
        details["workers"] = [name for name in details["workers"] if name not in stalled]
    return details


def _stalled(state: WebState, nodes: list[str]) -> dict[str, list[int]]:
    """Per node, the pool processes whose running turn made no progress for too long."""
    found: dict[str, list[int]] = {}
    for node in nodes:
        try:
            pids = state.backend.stalled(node)
        except redis.RedisError:
            continue  # Redis answered the ping a moment ago; the next probe will know
        if pids:
            found[node] = pids
    return found


@router.get("/readyz")
async def get_readyz(state: State, request: Request) -> JSONResponse:
    """200 when Redis answers and at least one worker answers a ping and has no stalled turn
    (``stalled``: node → pool processes); 503 otherwise.

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
