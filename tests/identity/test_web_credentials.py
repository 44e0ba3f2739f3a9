"""Who may call /api and /v1, in-process: API keys, sessions with CSRF, local mode.

A refused request must queue nothing: the fake Celery queue and the conversation's pending
list stay empty.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from fastapi.testclient import TestClient

from assistant import turns
from assistant.envelope import ConversationKey, Inbound
from assistant.errors import ConfigError
from assistant.store import Store
from assistant.store.keys import ApiKeys
from assistant.store.people import People
from tests.identity.conftest import QUEUE, build_app, identity_settings

CHAT = {"conversation_id": "c1", "text": "hello", "message_id": "m1"}


def new_key(store: Store, owner: str = "alice", **options: Any) -> tuple[str, str]:
    new, row = ApiKeys(store).create("test", owner, "test", **options)
    return new.token, row.prefix


def queued(client: fakeredis.FakeRedis) -> list[Any]:
    return [json.loads(item) for item in client.lrange(QUEUE, 0, -1)]


def pending_for(client: fakeredis.FakeRedis, owner: str | None, channel: str = "c1"
                ) -> list[Inbound]:
    return turns.pending(client, ConversationKey(platform="web", channel=channel, user=owner))


def assert_openai_401(response: Any) -> None:
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_api_key"
    assert error["message"]


@pytest.mark.parametrize("header", [
    None,                                   # missing (sign-in mode)
    "Basic YWxpY2U6c2VjcmV0",               # not Bearer
    "Bearer",                               # no token
    "Bearer not-a-key",                     # malformed
    "Bearer sk-ast-0123abcd-" + "A" * 43,   # well-formed, unknown
])
def test_bad_credentials_get_401_and_queue_nothing(http: TestClient, header: str | None,
                                                   redis_client: fakeredis.FakeRedis) -> None:
    headers = {"Authorization": header} if header is not None else {}
    for method, path, body in (("POST", "/api/chat", CHAT),
                               ("POST", "/v1/chat/completions",
                                {"messages": [{"role": "user", "content": "hi"}]}),
                               ("GET", "/v1/models", None),
                               ("GET", "/api/conversations/c1", None),
                               ("DELETE", "/api/conversations/c1", None)):
        response = http.request(method, path, json=body, headers=headers)
        assert_openai_401(response)
    assert queued(redis_client) == []


def test_a_revoked_key_is_refused_on_the_next_request(http: TestClient, store: Store) -> None:
    token, prefix = new_key(store)
    headers = {"Authorization": f"Bearer {token}"}
    assert http.get("/v1/models", headers=headers).status_code == 200
    ApiKeys(store).revoke(prefix, "test")
    assert_openai_401(http.get("/v1/models", headers=headers))
    # A key with one character changed is not the key.
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert_openai_401(http.get("/v1/models", headers={"Authorization": f"Bearer {forged}"}))


def test_the_body_cannot_name_another_user(http: TestClient, store: Store,
                                           redis_client: fakeredis.FakeRedis) -> None:
    token, prefix = new_key(store)
    response = http.post("/api/chat", json=CHAT | {"user_id": "bob"},
                         headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 504  # queued; nobody answers in this test
    [inbound] = pending_for(redis_client, prefix)
    assert inbound.user_id == prefix
    assert inbound.conversation.user == prefix
    response = http.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "hi"}], "user": "bob"},
        headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 504
    users = {inbound.user_id for inbound in
             (Inbound.model_validate(json.loads(raw)) for key in redis_client.keys(
                 "assistant:pending:*") for raw in redis_client.lrange(key, 0, -1))}
    assert users == {prefix}


def test_a_conversation_belongs_to_its_key(http: TestClient, store: Store,
                                           redis_client: fakeredis.FakeRedis) -> None:
    alice, alice_prefix = new_key(store, "alice")
    bob, _ = new_key(store, "bob")
    as_alice = {"Authorization": f"Bearer {alice}"}
    as_bob = {"Authorization": f"Bearer {bob}"}
    http.post("/api/chat", json=CHAT, headers=as_alice)
    assert http.get("/api/conversations/c1", headers=as_alice).status_code == 200
    assert http.get("/api/conversations/c1", headers=as_bob).status_code == 404
    assert http.delete("/api/conversations/c1", headers=as_bob).status_code == 404
    # Bob reusing Alice's conversation and message ids starts his own conversation; hers
    # still holds only her message, and his message got an id of its own.
    http.post("/api/chat", json=CHAT, headers=as_bob)
    [hers] = pending_for(redis_client, alice_prefix)
    assert hers.user_id == alice_prefix
    assert len(queued(redis_client)) == 2


def test_a_key_over_its_own_rate_limit_gets_429_and_queues_nothing(
        http: TestClient, store: Store, redis_client: fakeredis.FakeRedis) -> None:
    token, _ = new_key(store, rate_limit="1/minute")
    headers = {"Authorization": f"Bearer {token}"}
    assert http.post("/api/chat", json=CHAT, headers=headers).status_code == 504
    response = http.post("/api/chat", json=CHAT | {"message_id": "m2"}, headers=headers)
    assert response.status_code == 429 and int(response.headers["retry-after"]) > 0
    assert len(queued(redis_client)) == 1


def test_a_key_past_its_daily_tokens_gets_429(http: TestClient, store: Store,
                                              redis_client: fakeredis.FakeRedis) -> None:
    from assistant.limits import record_tokens

    token, prefix = new_key(store, daily_tokens=100)
    record_tokens(redis_client, "openai", "default", prefix, 60)
    record_tokens(redis_client, "web", "default", prefix, 40)  # /api and /v1 add up
    response = http.post("/api/chat", json=CHAT, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 429
    assert queued(redis_client) == []


# -- sessions ------------------------------------------------------------------------------------

def sign_in(http: TestClient, handle: str, password: str) -> str:
    """Signs in through the form; returns the session's CSRF token."""
    page = http.get("/auth/login")
    token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
    response = http.post("/auth/login", data={"csrf_token": token, "username": handle,
                                              "password": password, "next": "/"})
    assert response.status_code == 303, response.text
    session = http.get("/auth/session").json()
    assert session["signed_in"] and session["handle"] == handle
    return str(session["csrf_token"])


def accept(http: TestClient, store: Store, handle: str, password: str) -> None:
    invite = People(store).invite(handle, "test")
    page = http.get(f"/auth/invite/{invite}")
    token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
    response = http.post(f"/auth/invite/{invite}", data={"csrf_token": token,
                                                         "password": password})
    assert response.status_code == 303
    http.cookies.clear()


def test_a_session_needs_its_csrf_token_on_state_changing_calls(
        http: TestClient, store: Store, redis_client: fakeredis.FakeRedis) -> None:
    accept(http, store, "carol", "carol-password-1")
    csrf = sign_in(http, "carol", "carol-password-1")
    refused = http.post("/api/chat", json=CHAT)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf_failed"
    assert http.post("/api/chat", json=CHAT, headers={"X-CSRF-Token": "wrong"}
                     ).status_code == 403
    assert queued(redis_client) == []
    assert http.post("/api/chat", json=CHAT | {"user_id": "mallory"},
                     headers={"X-CSRF-Token": csrf}).status_code == 504
    [inbound] = pending_for(redis_client, "carol")
    assert inbound.user_id == "carol"
    assert http.get("/api/conversations/c1").status_code == 200  # a read needs no token


def test_signing_out_ends_the_session(http: TestClient, store: Store) -> None:
    accept(http, store, "dave", "dave-password-1")
    csrf = sign_in(http, "dave", "dave-password-1")
    assert http.post("/auth/logout", headers={"X-CSRF-Token": "nope"}).status_code == 403
    cookie = http.cookies.get("assistant_session")
    assert http.post("/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 303
    http.cookies.set("assistant_session", cookie or "")  # a copy of the old cookie is dead
    assert_openai_401(http.get("/api/conversations/c1"))


def test_wrong_passwords_and_unused_invitations_do_not_sign_in(http: TestClient,
                                                              store: Store) -> None:
    People(store).invite("erin", "test")  # invited, no password chosen yet
    for handle, password in (("erin", ""), ("erin", "whatever-password"),
                             ("nobody", "whatever-password")):
        page = http.get("/auth/login")
        token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
        response = http.post("/auth/login", data={"csrf_token": token, "username": handle,
                                                  "password": password})
        assert response.status_code == 401
        assert "Wrong name or password" in response.text
    assert http.get("/auth/session").json()["signed_in"] is False


def test_the_sign_in_form_is_limited_per_address(tmp_path: Path,
                                                 server: fakeredis.FakeServer) -> None:
    app = build_app(identity_settings(tmp_path, ASSISTANT_PUBLIC_RATE_LIMIT="2/minute"), server)
    with TestClient(app, follow_redirects=False) as http:
        statuses = []
        for _ in range(3):
            page = http.get("/auth/login")
            token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
            statuses.append(http.post("/auth/login", data={
                "csrf_token": token, "username": "x", "password": "y"}).status_code)
    assert statuses == [401, 401, 429]


# -- local mode ----------------------------------------------------------------------------------

def test_local_mode_answers_only_loopback(tmp_path: Path, server: fakeredis.FakeServer) -> None:
    app = build_app(identity_settings(tmp_path, ASSISTANT_AUTH="auto"), server)
    with TestClient(app, client=("127.0.0.1", 5000)) as local:
        assert local.get("/auth/session").json() == {"mode": "local", "signed_in": False}
        assert local.get("/v1/models").status_code == 200
        # OpenAI's clients send a key even when none is needed: one not of ours is ignored,
        # one of ours is checked.
        assert local.get("/v1/models", headers={"Authorization": "Bearer unused"}
                         ).status_code == 200
        assert_openai_401(local.get("/v1/models", headers={
            "Authorization": "Bearer sk-ast-0123abcd-" + "A" * 43}))
    with TestClient(app, client=("10.1.2.3", 5000)) as remote:
        response = remote.get("/v1/models")
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "local_mode"


def test_no_sign_in_on_a_public_address_refuses_to_start(tmp_path: Path,
                                                         server: fakeredis.FakeServer) -> None:
    with pytest.raises(ConfigError, match="ASSISTANT_AUTH=none"):
        build_app(identity_settings(tmp_path, ASSISTANT_AUTH="auto",
                                    ASSISTANT_HOST="0.0.0.0"), server)
    # On purpose: allowed, and then the API does not ask who is calling.
    app = build_app(identity_settings(tmp_path, ASSISTANT_AUTH="none",
                                      ASSISTANT_HOST="0.0.0.0"), server)
    with TestClient(app, client=("10.1.2.3", 5000)) as remote:
        assert remote.get("/v1/models").status_code == 200


def test_open_endpoints_are_limited_per_address(tmp_path: Path,
                                                server: fakeredis.FakeServer) -> None:
    from integrations.web import health

    app = build_app(identity_settings(tmp_path, ASSISTANT_OPEN_RATE_LIMIT="2/minute"), server)
    app.include_router(health.router)
    with TestClient(app, client=("10.0.0.5", 1)) as prober, \
            TestClient(app, client=("10.0.0.6", 1)) as other:
        statuses = [prober.get("/healthz").status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        assert int(prober.get("/healthz").headers["retry-after"]) > 0
        assert other.get("/healthz").status_code == 200  # another address has its own bucket
        assert prober.get("/auth/session").status_code == 200  # not an open endpoint


def test_disabling_a_person_ends_their_session_at_the_next_request(http: TestClient,
                                                                   store: Store) -> None:
    accept(http, store, "frank", "frank-password-1")
    sign_in(http, "frank", "frank-password-1")
    assert http.get("/api/conversations/c1").status_code == 404  # signed in: none yet
    People(store).set_disabled("frank", True)
    response = http.get("/api/conversations/c1")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "account_disabled"
