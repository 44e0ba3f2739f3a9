"""The admin store end to end: a real worker archives each turn into the stack's database, takes
a new persona version on its next turn without a restart, and a banned user is refused by the
web API before anything is queued."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa

from assistant import admin_actions
from assistant.envelope import ConversationKey
from assistant.live_prompts import traced_versions
from assistant.store import Store, connect_store
from assistant.store.archive import Archive, ConversationDetail
from assistant.store.users import Users
from tests.auxil.stack import Stack

pytestmark = pytest.mark.integration

PERSONA = ("You are Quill, a very brief assistant on {platform}. Today is {today}. "
           "Your name is {assistant_name}.\n{summary}")


@pytest.fixture(params=["sqlite", "postgresql"])
def admin_stack(make_stack: Callable[..., Stack], request: pytest.FixtureRequest
                ) -> Iterator[Stack]:
    """A private stack; its store is SQLite beside its logs, or this run's PostgreSQL."""
    env = {"ASSISTANT_TRACE_PROMPTS": "true", "ASSISTANT_SAFETY": "false"}
    if request.param == "postgresql":
        env["DATABASE_URL"] = request.getfixturevalue("postgres_url")
    stack = make_stack(**env)
    stack.start_worker("w1")
    stack.start_web()
    yield stack


@pytest.fixture
def store(admin_stack: Stack) -> Iterator[Store]:
    opened = connect_store(admin_stack.env["DATABASE_URL"])
    with opened.session() as session:  # the run's PostgreSQL database is shared: no old
        session.execute(sa.text("DELETE FROM persona_versions"))  # persona from other tests
    yield opened
    opened.engine.dispose()


@pytest.fixture
def client(admin_stack: Stack) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(admin_stack.redis_url)
    yield connection
    connection.close()


def chat(stack: Stack, text: str, user: str, conversation_id: str | None = None
         ) -> httpx.Response:
    body: dict[str, Any] = {"text": text, "user_id": user}
    if conversation_id:
        body["conversation_id"] = conversation_id
    return httpx.post(f"{stack.url}/api/chat", json=body, timeout=120)


def archived(store: Store, conversation_id: str, messages: int) -> ConversationDetail:
    """The archived conversation once it holds ``messages`` messages (written after delivery)."""
    key = ConversationKey(platform="web", channel=conversation_id)
    deadline = time.monotonic() + 30
    while True:
        detail = Archive(store).get(key.redis_id)
        if detail is not None and len(detail.messages) >= messages:
            return detail
        assert time.monotonic() < deadline, f"turn not archived: {detail}"
        time.sleep(0.2)


def test_turns_are_archived_personas_go_live_and_bans_refuse(
        admin_stack: Stack, store: Store, client: redis.Redis) -> None:
    user = f"archive-user-{uuid.uuid4().hex[:8]}"
    first = chat(admin_stack, "Please remember the word marmalade.", user)
    assert first.status_code == 200, first.text
    conversation_id = first.json()["conversation_id"]
    detail = archived(store, conversation_id, 2)
    assert [m.role for m in detail.messages] == ["user", "assistant"]
    assert detail.messages[0].text == "Please remember the word marmalade."
    assert detail.messages[0].user_id == user
    assert detail.messages[1].message_id == first.json()["message_id"]
    assert detail.messages[1].text == first.json()["reply"]
    assert detail.messages[1].completion_tokens and detail.messages[1].completion_tokens > 0
    assert detail.id in [c.id for c in Archive(store).search(text="marmalade", user_id=user)]
    assert traced_versions(client, first.json()["message_id"]) == {}  # the file's persona

    # A new persona version: the same worker's next turn uses it, no restart.
    version = admin_actions.save_persona(store, client, "system", PERSONA, "admin")
    second = chat(admin_stack, "Who are you?", user, conversation_id)
    assert second.status_code == 200, second.text
    reply_id = second.json()["message_id"]
    system = admin_stack.traced_prompt(reply_id)[0]
    assert system["role"] == "system" and system["text"].startswith("You are Quill")
    assert traced_versions(client, reply_id) == {"system": version.id}
    assert len(archived(store, conversation_id, 4).messages) == 4
    counted = Users(store).get("web", "default", user)
    assert counted is not None and counted.message_count == 2 and counted.token_count > 0

    # A ban: refused at the edge (403, the notice), nothing queued, no model time.
    admin_actions.ban_user(store, client, "web", "default", user, "admin")
    refused = chat(admin_stack, "Hello again?", user, conversation_id)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["type"] == "banned"
    assert len(Archive(store).get(detail.id).messages) == 4  # type: ignore[union-attr]
    admin_actions.unban_user(store, client, "web", "default", user, "admin")
    assert chat(admin_stack, "And now?", user, conversation_id).status_code == 200

    # Deleting it from the admin side removes the archive and the chat's memory.
    assert admin_actions.delete_conversation(store, client, detail.id, "admin")
    assert Archive(store).get(detail.id) is None
    gone = httpx.get(f"{admin_stack.url}/api/conversations/{conversation_id}", timeout=10)
    assert gone.status_code == 404
