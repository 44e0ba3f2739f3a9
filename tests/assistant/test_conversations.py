"""The conversation service (issue 14): one reset and one "forget me" for every edge.

A reset empties the queue, the memory and the admins' archive copy, under the conversation's
lock; a turn holding the lock makes it wait, then say "busy" without touching anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest

from assistant import turns
from assistant.conversation import Runtime, answer_pending
from assistant.conversations import Conversations
from assistant.envelope import ConversationKey
from assistant.memory import RedisConversationHistory
from assistant.store import Store, connect_store
from assistant.store.archive import Archive
from assistant.store.audit import AuditLog
from assistant.store.recorder import archive_observer
from tests.auxil.factories import inbound


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = connect_store(f"sqlite:///{tmp_path / 'assistant.db'}")
    yield opened
    opened.engine.dispose()


def answered(runtime: Runtime, store: Store, text: str) -> ConversationKey:
    runtime.observers = [archive_observer(store)]
    message = inbound(text)
    turns.submit(runtime.client, message)
    answer_pending(runtime, message.conversation)
    return message.conversation


def test_a_reset_empties_queue_memory_and_archive(runtime: Runtime, store: Store) -> None:
    conversation = answered(runtime, store, "hello there")
    turns.submit(runtime.client, inbound("queued meanwhile"))
    assert Archive(store).get(conversation.redis_id) is not None
    service = Conversations(runtime.client, lambda: store, 60)
    cleared = service.reset(conversation)
    assert cleared is not None and cleared.in_memory and cleared.archived and cleared.queued
    assert cleared.live
    assert turns.pending(runtime.client, conversation) == []
    assert not RedisConversationHistory(runtime.client, conversation, 60).exists()
    assert Archive(store).get(conversation.redis_id) is None
    again = service.reset(conversation)  # nothing left: still a success, nothing found
    assert again is not None and not again.in_memory and not again.archived
    assert not again.live  # two concurrent DELETEs: the second one answers 404


def test_a_reset_during_a_turn_touches_nothing(runtime: Runtime, store: Store,
                                               fake_redis: fakeredis.FakeRedis) -> None:
    conversation = answered(runtime, store, "hello there")
    fake_redis.set(turns.lock_key(conversation), "a running turn")
    service = Conversations(runtime.client, lambda: store, 60)
    assert service.reset(conversation, wait_seconds=0.2) is None
    assert RedisConversationHistory(runtime.client, conversation, 60).exists()
    assert Archive(store).get(conversation.redis_id) is not None


def test_forgetting_a_person_clears_memory_archive_and_their_private_chat(
        runtime: Runtime, store: Store) -> None:
    conversation = answered(runtime, store, "my address is somewhere")
    private = ConversationKey(platform="web", channel="dm-u1", user="u1")
    turns.submit(runtime.client, inbound("queued in private").model_copy(
        update={"conversation": private}))
    service = Conversations(runtime.client, lambda: store, 60)
    forgotten = service.forget_person("web", "default", "u1", actor="user:u1", private=private)
    assert forgotten.archived_messages == 1
    assert Archive(store).search(text="address") == []
    assert turns.pending(runtime.client, private) == []
    history = RedisConversationHistory(runtime.client, conversation, 60)
    assert "user" not in [m.role for m in history.records()]
    assert AuditLog(store).recent()[0].action == "forget_user"
