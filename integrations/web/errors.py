"""Errors become JSON at this edge, in the OpenAI error shape: ``{"error": {...}}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from assistant.errors import (
    AssistantError,
    Banned,
    ConversationBusy,
    ConversationNotFound,
    InputRejected,
    InvalidParameter,
    ModelNotFound,
    Muted,
    Overloaded,
    QueueUnavailable,
    QuotaExceeded,
    ReplyTimeout,
    Throttled,
)

log = logging.getLogger(__name__)

STATUS = {
    ConversationNotFound: (404, "not_found"),
    ModelNotFound: (404, "invalid_request_error"),
    InvalidParameter: (400, "invalid_request_error"),
    QuotaExceeded: (429, "quota_exceeded"),
    Muted: (429, "muted"),
    Banned: (403, "banned"),
    Throttled: (429, "rate_limited"),
    InputRejected: (422, "invalid_request"),
    ConversationBusy: (409, "conflict"),
    Overloaded: (503, "overloaded"),
    QueueUnavailable: (503, "unavailable"),
    ReplyTimeout: (504, "timeout"),
}


def error_body(exc: AssistantError) -> tuple[int, dict[str, object]]:
    status, code = 500, "internal_error"
    for kind, (kind_status, kind_code) in STATUS.items():
        if isinstance(exc, kind):
            status, code = kind_status, kind_code
            break
    if (isinstance(exc, InputRejected) and not isinstance(exc, InvalidParameter)
            and "limit" in str(exc)):
        status = 413
    # Server-side failures say what kind of failure, never its text (Redis and SQL errors
    # name hosts, tables and queries): the handler logs the details (docs/security.md).
    if status < 500 or status == 504:  # a timeout's text is ours ("no reply within 120 s")
        message = str(exc)
    else:
        message = UNAVAILABLE_MESSAGE if status == 503 else "internal error"
    if isinstance(exc, InvalidParameter):  # OpenAI's own shape, which its clients read
        return status, {"error": {"message": message, "type": code, "param": exc.param,
                                  "code": exc.code}}
    if isinstance(exc, ModelNotFound):
        return status, {"error": {"message": message, "type": code, "param": "model",
                                  "code": "model_not_found"}}
    return status, {"error": {"message": message, "type": code, "code": status}}


UNAVAILABLE_MESSAGE = "The service is unavailable or busy; try again in a moment."


def retry_after_header(exc: AssistantError) -> dict[str, str] | None:
    """``Retry-After`` for refusals that say when to come back."""
    if isinstance(exc, (Throttled, Overloaded)):
        return {"Retry-After": str(exc.retry_after_seconds)}
    return None


def install(app: FastAPI) -> None:
    @app.exception_handler(AssistantError)
    async def on_assistant_error(request: Request, exc: AssistantError) -> JSONResponse:
        status, body = error_body(exc)
        if status >= 500:
            log.warning("%s %s -> %d: %s", request.method, request.url.path, status, exc)
        return JSONResponse(status_code=status, content=body, headers=retry_after_header(exc))

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
            problems.append(f"{where or 'body'}: {error.get('msg')}")
        if request.url.path.startswith("/v1/"):
            # OpenAI answers an invalid parameter with 400, naming the first one.
            first = exc.errors()[0].get("loc", ()) if exc.errors() else ()
            param = ".".join(str(p) for p in first if p != "body") or None
            return JSONResponse(status_code=400, content={"error": {
                "message": "; ".join(problems), "type": "invalid_request_error",
                "param": param, "code": "invalid_value"}})
        body = {"error": {"message": "; ".join(problems), "type": "invalid_request",
                          "code": 422}}
        return JSONResponse(status_code=422, content=body)

    @app.exception_handler(HTTPException)
    async def on_http(request: Request, exc: HTTPException) -> JSONResponse:
        body = {"error": {"message": str(exc.detail), "type": "http_error",
                          "code": exc.status_code}}
        return JSONResponse(status_code=exc.status_code, content=body, headers=exc.headers)
