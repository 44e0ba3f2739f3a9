"""Guards in front of every route: the request body limit and the operators-only pages.

Both are plain ASGI middleware so they act before any route reads anything (docs/security.md):

- ``BodyLimitMiddleware``: a body larger than ``ASSISTANT_MAX_BODY_BYTES`` gets 413 in the
  project's JSON error shape without being read past the limit: at once from its
  ``Content-Length``, or, for a chunked body without one, as soon as the bytes received pass
  the limit (what was received so far is dropped).
- ``OpsGateMiddleware``: ``/docs``, ``/redoc``, ``/openapi.json`` and ``/metrics`` answer 404
  unless ``ASSISTANT_PUBLIC_OPS`` is true or the request carries ``ASSISTANT_OPS_TOKEN`` as a
  bearer token (Prometheus: ``authorization: {credentials: ...}``). ``/readyz`` stays public
  for load balancers but shows its details only to the same callers (``ops_allowed``).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from assistant.settings import Settings

OPS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/metrics"})


async def send_error(send: Send, status: int, kind: str, message: str,
                     headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """An error response in the shape of ``integrations.web.errors``: ``{"error": {...}}``."""
    body = json.dumps({"error": {"message": message, "type": kind, "code": status}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *headers]})
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with 413 before a route reads them."""

    def __init__(self, app: ASGIApp, max_bytes: int,
                 larger: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # Paths allowed a bigger body (exact match): the panel's knowledge-base upload.
        self.larger = larger or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        limit = self.larger.get(scope.get("path", ""), self.max_bytes)
        message = f"the request body is larger than {limit:,} bytes"
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await send_error(send, 400, "invalid_request", "bad Content-Length")
                return
            if length > limit:
                await send_error(send, 413, "request_too_large", message)
                return
            # The server (h11, httptools) refuses more bytes than Content-Length announced.
            await self.app(scope, receive, send)
            return
        if b"chunked" not in headers.get(b"transfer-encoding", b"").lower():
            await self.app(scope, receive, send)  # no body at all
            return
        # Chunked: read up to the limit before the route runs, then replay what was read.
        chunks: list[Message] = []
        received = 0
        while True:
            event = await receive()
            if event["type"] != "http.request":
                chunks.append(event)  # a disconnect: let the route see it
                break
            received += len(event.get("body", b""))
            if received > limit:
                await send_error(send, 413, "request_too_large", message)
                return
            chunks.append(event)
            if not event.get("more_body", False):
                break

        async def replay() -> Message:
            if chunks:
                return chunks.pop(0)
            return await receive()

        await self.app(scope, replay, send)


def ops_allowed(connection: HTTPConnection | Scope, settings: Settings) -> bool:
    """May this request see the operators' pages and details?"""
    if settings.public_ops:
        return True
    token = settings.ops_token.get_secret_value()
    if not token:
        return False
    scope = connection.scope if isinstance(connection, HTTPConnection) else connection
    headers = dict(scope.get("headers") or [])
    given = headers.get(b"authorization", b"")
    expected = f"Bearer {token}".encode()
    return hmac.compare_digest(given, expected)


class OpsGateMiddleware:
    """The operators' pages answer 404 to everyone else, as if they did not exist."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope.get("path") in OPS_PATHS
                and not ops_allowed(scope, self.settings)):
            await send_error(send, 404, "http_error", "Not Found")
            return
        await self.app(scope, receive, send)
