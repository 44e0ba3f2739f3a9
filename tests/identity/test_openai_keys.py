"""The official ``openai`` client with a key made in the admin panel, against the full stack
(Valkey, a Celery worker, SmolLM2) with sign-in on; revoked in the panel, it gets 401 at once."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator

import httpx
import openai
import pytest
import redis
from openai import OpenAI

from assistant.store import connect_store
from assistant.store.audit import AuditLog
from assistant.store.users import Users
from tests.auxil.stack import Stack

pytestmark = pytest.mark.integration

ADMIN, PASSWORD = "root", "a-real-admin-password"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def signin_stack(make_stack: Callable[..., Stack]) -> Iterator[Stack]:
    stack = make_stack(ASSISTANT_AUTH="signin", ADMIN_USERNAME=ADMIN, ADMIN_PASSWORD=PASSWORD,
                       ADMIN_SESSION_SECRET="test-session-secret-0123456789")
    stack.start_worker("w1")
    stack.start_web()
    yield stack


def panel(stack: Stack) -> httpx.Client:
    http = httpx.Client(base_url=stack.url, follow_redirects=False, timeout=30)
    page = http.get("/admin/login")
    token = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
    response = http.post("/admin/login", data={"csrf_token": token, "username": ADMIN,
                                               "password": PASSWORD, "next": "/admin"})
    assert response.status_code == 303, response.text
    return http


def create_key(http: httpx.Client, owner: str) -> tuple[str, str]:
    page = http.get("/admin/keys")
    token = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
    response = http.post("/admin/keys", data={"csrf_token": token, "owner": owner,
                                              "owner_kind": "service", "name": "ci"})
    assert response.status_code == 200, response.text
    secret = re.search(r'data-testid="new-key-token">([^<]+)<', response.text)
    assert secret, "the panel did not show the new key"
    return secret.group(1), secret.group(1)[:15]


def revoke_key(http: httpx.Client, prefix: str) -> None:
    page = http.get("/admin/keys")
    token = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
    response = http.post("/admin/keys/revoke", data={"csrf_token": token, "prefix": prefix})
    assert response.status_code == 303


def ask(client: OpenAI) -> str:
    completion = client.chat.completions.create(
        model="smollm2", max_tokens=8, messages=[{"role": "user", "content": "Say hello."}],
        user="someone-else")  # the body's user is not who asks: the key is
    return completion.choices[0].message.content or ""


def test_a_panel_key_works_with_the_openai_client_until_revoked(signin_stack: Stack) -> None:
    stack = signin_stack
    with pytest.raises(openai.AuthenticationError):
        ask(OpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0))
    http = panel(stack)
    token, prefix = create_key(http, "reporting-service")
    client = OpenAI(base_url=f"{stack.url}/v1", api_key=token, max_retries=0)
    assert ask(client)
    assert "sk-ast-" not in http.get("/admin/keys").text.replace(prefix, "")  # shown once

    # The use is the key's: its prefix is the user the store counted.
    store = connect_store(stack.env["DATABASE_URL"])
    deadline = time.monotonic() + 30
    while Users(store).get("openai", "default", prefix) is None:
        assert time.monotonic() < deadline, "the key's use was not recorded"
        time.sleep(0.2)
    assert Users(store).get("openai", "default", "someone-else") is None

    revoke_key(http, prefix)
    queue = redis.Redis.from_url(stack.redis_url)
    before = queue.llen("assistant.turns")
    with pytest.raises(openai.AuthenticationError) as refused:
        ask(client)
    assert refused.value.status_code == 401
    assert queue.llen("assistant.turns") == before
    actions = [(entry.actor, entry.action, entry.target) for entry in AuditLog(store).recent()]
    assert (ADMIN, "key_created", prefix) in actions and (ADMIN, "key_revoked", prefix) in actions
    store.engine.dispose()
