"""An in-process web app with sign-in on a fake Redis and a fake Celery producer: requests are
queued (or refused) but never answered, so tests read what was queued."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from assistant.dispatch import Dispatcher
from assistant.limits import Limits
from assistant.settings import Settings
from assistant.store import Store, shared_store
from integrations.web import admin, api, auth, errors, openai_api
from integrations.web.auth.principal import resolve_caller
from integrations.web.deps import WebState
from tests.auxil.fake_celery import QUEUE, FakeCelery, fake_backend

__all__ = ["QUEUE"]


def identity_settings(tmp_path: Path, **overrides: str) -> Settings:
    values = {"ASSISTANT_ENV": "test", "DATABASE_URL": f"sqlite:///{tmp_path / 'id.db'}",
              "ASSISTANT_REPLY_TIMEOUT": "0.2", "ASSISTANT_AUTH": "signin",
              "ADMIN_USERNAME": "root", "ADMIN_PASSWORD": "a-real-admin-password",
              "ADMIN_SESSION_SECRET": "test-session-secret-0123456789"} | overrides
    return Settings(**values)  # type: ignore[arg-type]


def build_app(settings: Settings, server: fakeredis.FakeServer) -> FastAPI:
    """What integrations/web/app.py mounts, minus metrics and static files."""
    client = fakeredis.FakeRedis(server=server)
    celery = FakeCelery(client)
    state = WebState(settings=settings, client=client,
                     aclient=fakeredis.FakeAsyncRedis(server=server),
                     backend=fake_backend(celery),  # type: ignore[arg-type]
                     dispatcher=Dispatcher(client, fake_backend(celery), limits=Limits()))  # type: ignore[arg-type]
    app = FastAPI()
    app.state.web = state
    errors.install(app)
    app.include_router(api.router, dependencies=[Depends(resolve_caller)])
    app.include_router(openai_api.router, dependencies=[Depends(resolve_caller)])
    admin.install(app, state)
    auth.install(app, state)
    return app


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return identity_settings(tmp_path)


@pytest.fixture
def app(settings: Settings, server: fakeredis.FakeServer) -> FastAPI:
    return build_app(settings, server)


@pytest.fixture
def http(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, follow_redirects=False) as client:
        yield client


@pytest.fixture
def store(settings: Settings) -> Store:
    return shared_store(settings.sql_url)


@pytest.fixture
def redis_client(server: fakeredis.FakeServer) -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=server)
