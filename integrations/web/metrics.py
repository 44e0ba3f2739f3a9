"""Prometheus metrics of the web server: ``GET /metrics`` (not in the OpenAPI schema).

Each app has its own registry, so several apps in one process (tests) never collide. HTTP
requests are counted by a small ASGI middleware, by route template (``/api/conversations/
{conversation_id}``, never the raw path) so the number of series stays bounded. Queue depth
is read from Redis when Prometheus scrapes, not kept up to date by hand.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import redis
from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)


class QueueDepthCollector(Collector):
    """``assistant_queue_depth``: turns waiting in the Celery queue, read at scrape time."""

    def __init__(self, client: redis.Redis, queue: str) -> None:
        self.client = client
        self.queue = queue

    def collect(self) -> Iterable[Metric]:
        try:
            depth = int(self.client.llen(self.queue))
        except redis.RedisError as exc:
            # No sample rather than a wrong one; /readyz tells that Redis is down.
            log.warning("queue depth unavailable: %s", exc)
            return
        gauge = GaugeMetricFamily(
            "assistant_queue_depth",
            "Conversation turns waiting in the Celery queue for a worker", labels=["queue"])
        gauge.add_metric([self.queue], depth)
        yield gauge


class WebMetrics:
    """The web server's registry and metrics."""

    def __init__(self, client: redis.Redis, queue: str) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "assistant_http_requests_total", "HTTP requests answered",
            ("method", "route", "status"), registry=self.registry)
        self.request_seconds = Histogram(
            "assistant_http_request_seconds", "Time to answer an HTTP request (to the end of "
            "its body, so streamed replies count whole)", ("method", "route"),
            buckets=REQUEST_BUCKETS, registry=self.registry)
        self.registry.register(QueueDepthCollector(client, queue))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def route_of(scope: Scope) -> str:
    """The matched route's template; "unmatched" for 404s so scanners add no series."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else "unmatched"


class RequestMetricsMiddleware:
    """Counts every HTTP request by method, route and status, and times it."""

    def __init__(self, app: ASGIApp, metrics: WebMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_see(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_see)
        finally:
            route = route_of(scope)
            method = scope.get("method", "")
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.request_seconds.labels(method, route).observe(
                time.perf_counter() - started)


def install(app: FastAPI, client: redis.Redis, queue: str) -> WebMetrics:
    """Count requests and serve ``GET /metrics`` on ``app``; ``queue``: the Celery queue."""
    metrics = WebMetrics(client, queue)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)

    async def get_metrics(request: Request) -> Response:
        body: Any = await run_in_threadpool(metrics.exposition)  # LLEN is a blocking call
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    app.add_api_route("/metrics", get_metrics, methods=["GET"], include_in_schema=False)
    return metrics
