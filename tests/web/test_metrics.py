"""The web server's /metrics: request counts by route template, queue depth at scrape time."""

from __future__ import annotations

import fakeredis
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient

from integrations.web import metrics

QUEUE = "assistant.turns"


def make_app(client: redis.Redis) -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def get_item(item_id: str) -> dict[str, str]:
        return {"id": item_id}

    metrics.install(app, client, QUEUE)
    return app


def sample(text: str, prefix: str) -> float:
    (line,) = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(line.rsplit(" ", 1)[1])


def test_requests_are_counted_by_route_template_and_queue_depth_is_read() -> None:
    client = fakeredis.FakeRedis()
    client.rpush(QUEUE, "a", "b", "c")
    with TestClient(make_app(client)) as http:
        for item in ("1", "2"):
            assert http.get(f"/items/{item}").status_code == 200
        assert http.get("/nowhere").status_code == 404
        response = http.get("/metrics")
        assert "/metrics" not in http.get("/openapi.json").json()["paths"]
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert sample(text, 'assistant_http_requests_total{method="GET",route="/items/{item_id}",'
                        'status="200"}') == 2
    assert sample(text, 'assistant_http_requests_total{method="GET",route="unmatched",'
                        'status="404"}') == 1
    assert sample(text, 'assistant_http_request_seconds_count{method="GET",'
                        'route="/items/{item_id}"}') == 2
    assert sample(text, 'assistant_queue_depth{queue="assistant.turns"}') == 3
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines()
             if line and not line.startswith("#")}
    assert all(name.startswith("assistant_") for name in names), names


def test_redis_down_leaves_queue_depth_out_but_serves_the_rest() -> None:
    down = redis.Redis(port=1, socket_connect_timeout=0.2)
    with TestClient(make_app(down)) as http:
        response = http.get("/metrics")
    assert response.status_code == 200
    assert "assistant_queue_depth{" not in response.text
    assert "assistant_http_requests_total" in response.text
