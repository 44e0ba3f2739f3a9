"""A per-address limit on the endpoints that stay open without sign-in: health checks, metrics,
and the platforms' webhooks (which keep their own signatures, checked after this).

One token bucket per client address (``assistant:open:<address>``,
ASSISTANT_OPEN_RATE_LIMIT, 600/minute: far above a prober's or a platform's pace, far below a
flood). When Redis is down the request goes through: ``/readyz`` must be able to say so.
"""

from __future__ import annotations

import json
import logging
import math

import redis
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from assistant import keys
from assistant.limits import Rate, take_tokens
from integrations.web.admin.auth import client_ip

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/slack/events",
                        "/telegram/webhook"})


class OpenEndpointLimit:
    def __init__(self, app: ASGIApp, client: redis.Redis, rate: Rate | None,
                 proxies: frozenset[str]) -> None:
        self.app = app
        self.client = client
        self.rate = rate
        self.proxies = proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.rate is None or scope["path"] not in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        ip = client_ip(Request(scope), self.proxies)
        try:
            refused, wait = await run_in_threadpool(
                take_tokens, self.client, [(keys.open_bucket(ip), self.rate)])
        except redis.RedisError:
            refused, wait = 0, 0.0
        if not refused:
            await self.app(scope, receive, send)
            return
        seconds = max(1, math.ceil(wait))
        body = json.dumps({"error": {"message": "Too many requests from your address.",
                                     "type": "rate_limited", "code": 429}}).encode()
        await send({"type": "http.response.start", "status": 429,
                    "headers": [(b"content-type", b"application/json"),
                                (b"retry-after", str(seconds).encode()),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
