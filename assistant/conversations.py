"""The conversation service: start a conversation over and forget a person, one way for all.

The web API, the Slack and Telegram commands and the admin panel used to build these from
their halves, each a little differently (issue 14: two of the four resets left the archive copy
behind). Every edge now converts its platform's request to a ``ConversationKey`` or a person
and calls this.

- ``reset``: the conversation's queued messages, its memory (``assistant.memory``) and the
  admins' archive copy go, under the conversation's lock so a turn in progress cannot write
  it back; ``False`` when a turn still holds the lock after ``wait_seconds``.
- ``forget_person``: what is kept about a person on one platform: their private conversations
  whole, their lines in shared threads, the archive's copy and counts (a ban or a quota stays),
  audited.

Redis and SQL errors are raised as they are: each edge words its own "try again".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from assistant import keys, turns
from assistant.envelope import ConversationKey
from assistant.memory import RedisConversationHistory
from assistant.memory import forget_user as forget_in_memory
from assistant.store.archive import Archive
from assistant.store.audit import AuditLog
from assistant.store.db import Store
from assistant.store.memories import Memories
from assistant.store.users import Users

RESET_WAIT_SECONDS = 2.0  # a Slack slash command's answer is due within 3 s


@dataclass(frozen=True)
class Cleared:
    in_memory: bool  # the workers' memory had the conversation
    archived: bool  # the archive had a copy
    queued: bool = False  # messages were waiting for a turn

    @property
    def live(self) -> bool:
        """The conversation existed for the workers (memory or queued messages) when its lock
        was taken: two concurrent resets find it once (the second finds nothing)."""
        return self.in_memory or self.queued


@dataclass(frozen=True)
class Forgotten:
    conversations: int  # the person's conversations the memory touched
    archived_messages: int  # messages deleted from the admins' archive


@dataclass
class Conversations:
    client: redis.Redis
    store: Callable[[], Store]  # opened on first use (``assistant.store.db.shared_store``)
    retention_seconds: int

    def reset(self, conversation: ConversationKey, wait_seconds: float = 0.0
              ) -> Cleared | None:
        """Start the conversation over (see the module's docstring); what was there, or None
        if a turn still runs."""
        history = RedisConversationHistory(self.client, conversation, self.retention_seconds)
        deadline = time.monotonic() + wait_seconds
        with turns.holding(self.client, conversation, wait_until=deadline) as held:
            if not held:
                return None
            in_memory = history.exists()
            queued = bool(self.client.delete(turns.pending_key(conversation)))
            history.clear()
            # Still under the lock, so a turn cannot archive into it afterwards.
            archived = Archive(self.store()).delete(conversation.redis_id)
        return Cleared(in_memory, bool(archived), queued)

    def forget_person(self, platform: str, workspace: str, user_id: str, actor: str,
                      private: ConversationKey | None = None) -> Forgotten:
        """Forget a person (see the module's docstring). ``private``: their private
        conversation on a platform that does not index it (a Telegram private chat's id is
        the user's), reset too."""
        touched = forget_in_memory(self.client, platform, workspace, user_id,
                                   self.retention_seconds)
        archived = forget_archived_person(self.store(), platform, workspace, user_id, actor)
        if private is not None:
            self.reset(private, wait_seconds=RESET_WAIT_SECONDS)
        return Forgotten(touched, archived)


def forget_archived_person(store: Store, platform: str, workspace: str, user_id: str,
                           actor: str) -> int:
    """The archive's half of forgetting a person (their messages and counts; a ban or a quota
    stays) and their long-term memories (``assistant.recall``, docs/memory.md), audited.
    Returns the archived messages deleted."""
    deleted = Archive(store).forget_user(platform, workspace, user_id)
    Users(store).forget(platform, workspace, user_id)
    memories = Memories(store).forget_identity(platform, workspace, user_id)
    AuditLog(store).record(actor, "forget_user", keys.user_ref(platform, workspace, user_id),
                           {"archived_messages": deleted, "memories": memories})
    return deleted
