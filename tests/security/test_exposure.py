"""Attack: read what only operators should see (issue 15, item 7; OWASP LLM02).

``/docs``, ``/redoc``, ``/openapi.json``, ``/metrics`` and ``/readyz`` (worker host names) were
public, 503 bodies carried raw Redis and SQL error text, and worker metrics listened on every
interface. The real web app (``create_app``) on a real Valkey, in-process; no worker runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from assistant.settings import Settings
from tests.auxil.stack import free_port

OPS_PAGES = ["/docs", "/redoc", "/openapi.json", "/metrics"]
TOKEN = "an-operators-token-0123456789"


@pytest.fixture(autouse=True)
def _worker_app_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # worker.app reads it at import


def web(tmp_path: Path, redis_url: str, **overrides: str) -> TestClient:
    from integrations.web.app import create_app

    values = {"ASSISTANT_ENV": "test", "REDIS_URL": redis_url,
              "DATABASE_URL": f"sqlite:///{tmp_path / 'assistant.db'}",
              "ASSISTANT_REPLY_TIMEOUT": "2"} | overrides
    return TestClient(create_app(Settings(**values)))  # type: ignore[arg-type]


@pytest.fixture
def closed(tmp_path: Path, redis_server: str) -> Iterator[TestClient]:
    with web(tmp_path, f"{redis_server}/14", ASSISTANT_OPS_TOKEN=TOKEN) as http:
        yield http


def test_operator_pages_are_not_public_by_default(closed: TestClient) -> None:
    for path in OPS_PAGES:
        response = closed.get(path)
        assert response.status_code == 404, path
        assert "openapi" not in response.text.lower() and "assistant_" not in response.text
        wrong = closed.get(path, headers={"Authorization": "Bearer not-the-token"})
        assert wrong.status_code == 404, path
    assert closed.get("/healthz").json() == {"status": "ok"}


def test_readiness_says_only_whether_it_is_ready(closed: TestClient) -> None:
    ready = closed.get("/readyz")
    assert ready.status_code == 503  # no worker answers
    assert ready.json() == {"ready": False}
    detailed = closed.get("/readyz", headers={"Authorization": f"Bearer {TOKEN}"})
    assert detailed.json()["redis"] == "ok" and detailed.json()["workers"] == []


def test_operators_see_them_with_the_token_or_when_made_public(tmp_path: Path,
                                                               redis_server: str,
                                                               closed: TestClient) -> None:
    for path in OPS_PAGES:
        assert closed.get(path, headers={"Authorization": f"Bearer {TOKEN}"}
                          ).status_code == 200, path
    with web(tmp_path, f"{redis_server}/14", ASSISTANT_PUBLIC_OPS="true") as public:
        for path in OPS_PAGES:
            assert public.get(path).status_code == 200, path


def test_errors_from_redis_say_nothing_about_it(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    with web(tmp_path, f"redis://127.0.0.1:{port}/0") as down:
        responses = [down.post("/api/chat", json={"text": "hello"}),
                     down.post("/v1/chat/completions",
                               json={"messages": [{"role": "user", "content": "hi"}]}),
                     down.get("/api/conversations/abc"),
                     down.get("/readyz")]
    for response in responses:
        assert response.status_code == 503, response.text
        text = response.text.lower()
        for leak in (str(port), "127.0.0.1", "connect", "errno", "redis", "refused"):
            assert leak not in text, (leak, response.text)
    assert responses[0].json() == {"error": {
        "message": "The service is unavailable or busy; try again in a moment.",
        "type": "unavailable", "code": 503}}


def test_worker_metrics_listen_on_loopback_by_default(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from worker import metrics

    assert Settings().worker_metrics_host == "127.0.0.1"
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(tmp_path))
    server = metrics.serve(free_port(), Settings().worker_metrics_host)
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.shutdown()
        server.server_close()


def test_the_schema_is_not_reachable_through_another_spelling(closed: TestClient) -> None:
    for path in ("/openapi.json/", "/docs/", "/metrics/", "//openapi.json", "/OPENAPI.JSON"):
        response = closed.get(path, follow_redirects=True)
        assert response.status_code == 404 or "openapi" not in json.dumps(
            response.json() if response.headers.get("content-type", "").startswith(
                "application/json") else response.text), path
