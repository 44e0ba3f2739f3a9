"""The admin panel in-process: a fake Redis, a fake Celery (producer and remote control) and
an SQLite store in tmp_path; the whole stack with a real worker is in tests/browser."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from assistant.dispatch import Dispatcher
from assistant.limits import Limits
from assistant.settings import Settings
from integrations.web import admin, errors
from integrations.web.deps import WebState
from tests.auxil.fake_celery import FakeCelery, fake_backend

USERNAME = "root-admin"
PASSWORD = "correct horse battery staple"
WORKER = "w1@test"


class FakeInspect:
    def __init__(self, control: FakeControl) -> None:
        self.control = control

    def stats(self) -> dict[str, Any]:
        return {WORKER: {"pid": 4242, "pool": {"max-concurrency": self.control.pool_size,
                                               "processes": list(range(self.control.pool_size)),
                                               "implementation": "celery.concurrency.prefork"},
                         "total": {"assistant.answer_conversation": 7}, "uptime": 12}}

    def active(self) -> dict[str, Any]:
        return {WORKER: [{"id": "t1", "name": "assistant.answer_conversation",
                          "time_start": 1.0}]}


class FakeControl:
    """Celery's remote control for one worker: inspect, pool_grow, pool_shrink."""

    def __init__(self) -> None:
        self.pool_size = 2
        self.calls: list[tuple[str, int, list[str]]] = []

    def inspect(self, timeout: float = 1.0) -> FakeInspect:
        return FakeInspect(self)

    def pool_grow(self, n: int, destination: list[str], **_: Any) -> list[dict[str, Any]]:
        self.calls.append(("grow", n, destination))
        self.pool_size += n
        return [{WORKER: {"ok": f"pool will grow by {n}"}}]

    def pool_shrink(self, n: int, destination: list[str], **_: Any) -> list[dict[str, Any]]:
        self.calls.append(("shrink", n, destination))
        self.pool_size -= n
        return [{WORKER: {"ok": f"pool will shrink by {n}"}}]


def admin_settings(tmp_path: Path, **overrides: str) -> Settings:
    values = {"ASSISTANT_ENV": "test", "ADMIN_USERNAME": USERNAME, "ADMIN_PASSWORD": PASSWORD,
              "ADMIN_SESSION_SECRET": "test-session-secret-0123456789",
              "DATABASE_URL": f"sqlite:///{tmp_path / 'assistant.db'}",
              "ASSISTANT_REPLY_TIMEOUT": "1"} | overrides
    return Settings(**values)  # type: ignore[arg-type]


def build_app(settings: Settings, server: fakeredis.FakeServer) -> tuple[FastAPI, FakeControl]:
    client = fakeredis.FakeRedis(server=server)
    celery = FakeCelery(client)
    control = FakeControl()
    celery.control = control  # type: ignore[attr-defined]
    state = WebState(settings=settings, client=client,
                     aclient=fakeredis.FakeAsyncRedis(server=server),
                     backend=fake_backend(celery),  # type: ignore[arg-type]
                     dispatcher=Dispatcher(client, fake_backend(celery), limits=Limits()))  # type: ignore[arg-type]
    app = FastAPI()
    app.state.web = state
    errors.install(app)
    admin.install(app, state)
    return app, control


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return admin_settings(tmp_path)


@pytest.fixture
def app(settings: Settings, server: fakeredis.FakeServer) -> FastAPI:
    built, _ = build_app(settings, server)
    return built


@pytest.fixture
def control(app: FastAPI) -> FakeControl:
    celery = app.state.web.backend.celery_app
    found: FakeControl = celery.control
    return found


@pytest.fixture
def http(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, follow_redirects=False) as client:
        yield client


CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


def form_token(html: str) -> str:
    match = CSRF_INPUT.search(html)
    assert match, "the page has no CSRF field"
    return match.group(1)


def log_in(http: TestClient, username: str = USERNAME, password: str = PASSWORD,
           next_path: str = "/admin") -> Any:
    page = http.get("/admin/login")
    assert page.status_code == 200
    return http.post("/admin/login", data={"csrf_token": form_token(page.text),
                                           "username": username, "password": password,
                                           "next": next_path})


@pytest.fixture
def logged_in(http: TestClient) -> TestClient:
    response = log_in(http)
    assert response.status_code == 303, response.text
    return http


@pytest.fixture
def csrf(logged_in: TestClient) -> str:
    """The session's CSRF token, as every page's forms carry it."""
    return form_token(logged_in.get("/admin/settings").text)


@pytest.fixture
def store(app: FastAPI) -> Any:
    return app.state.admin.store


