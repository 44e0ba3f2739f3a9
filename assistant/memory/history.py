"""A conversation's messages and running summary in plain Redis.

langchain-redis needs RediSearch, which plain Redis and Valkey lack, so this is a
``BaseChatMessageHistory`` over a Redis list. Every key expires after the retention period,
refreshed on each write.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from assistant import keys
from assistant.envelope import ChatMessage, ConversationKey, Role

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Summary:
    """Older turns folded into prose; ``covers`` is how many stored messages it replaces."""

    text: str = ""
    covers: int = 0


def to_langchain(message: ChatMessage) -> BaseMessage:
    kinds: dict[str, type[BaseMessage]] = {
        "user": HumanMessage, "assistant": AIMessage, "system": SystemMessage}
    return kinds[message.role](content=message.text, id=message.message_id)


def from_langchain(message: BaseMessage) -> ChatMessage:
    roles: dict[str, Role] = {"human": "user", "ai": "assistant", "system": "system"}
    extra: dict[str, Any] = {"message_id": message.id} if message.id else {}
    return ChatMessage(role=roles[message.type], text=str(message.content), **extra)


class RedisConversationHistory(BaseChatMessageHistory):
    """The full record of one conversation, plus its running summary."""

    def __init__(
        self, client: redis.Redis, conversation: ConversationKey, retention_seconds: int
    ) -> None:
        self.client = client
        self.conversation = conversation
        self.retention_seconds = retention_seconds
        base = keys.conversation(conversation.redis_id)
        self.messages_key = f"{base}:messages"
        self.summary_key = f"{base}:summary"
        self.saved_key = f"{base}:saved"  # reply ids already stored: saving a turn is idempotent
        self.meta_key = f"{base}:meta"

    # -- BaseChatMessageHistory -------------------------------------------------------------
    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        return [to_langchain(m) for m in self.records()]

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        self.append([from_langchain(m) for m in messages])

    def clear(self) -> None:
        self.client.delete(self.messages_key, self.summary_key, self.saved_key, self.meta_key)

    # -- the assistant's own API ------------------------------------------------------------
    def records(self) -> list[ChatMessage]:
        raw = self.client.lrange(self.messages_key, 0, -1)
        return [ChatMessage.model_validate_json(item) for item in raw]

    def exists(self) -> bool:
        return bool(self.client.exists(self.messages_key, self.meta_key))

    def append(self, messages: Sequence[ChatMessage], turn_id: str | None = None) -> bool:
        """Store messages; with ``turn_id``, only the first call for that turn stores anything."""
        pipe = self.client.pipeline(transaction=True)
        if turn_id is not None:
            if self.client.sismember(self.saved_key, turn_id):
                return False
            pipe.sadd(self.saved_key, turn_id)
        if messages:
            pipe.rpush(self.messages_key, *[m.model_dump_json() for m in messages])
        for user_id in {m.user_id for m in messages if m.user_id}:
            index = user_index_key(self.conversation.platform, self.conversation.workspace,
                                   user_id)
            pipe.sadd(index, self.conversation.model_dump_json())
            pipe.expire(index, self.retention_seconds)
        pipe.hset(self.meta_key, mapping={"conversation": self.conversation.model_dump_json()})
        self._expire(pipe)
        pipe.execute()
        return True

    def saved_reply(self, turn_id: str) -> ChatMessage | None:
        """The assistant message of a turn already stored under ``turn_id``, if any."""
        if not self.client.sismember(self.saved_key, turn_id):
            return None
        return next((m for m in reversed(self.records()) if m.message_id == turn_id), None)

    def summary(self) -> Summary:
        data = self.client.hgetall(self.summary_key)
        if not data:
            return Summary()
        return Summary(text=_s(data.get(b"text", b"")), covers=int(data.get(b"covers", 0)))

    def set_summary(self, summary: Summary) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.summary_key, mapping={"text": summary.text, "covers": summary.covers})
        self._expire(pipe)
        pipe.execute()

    def _expire(self, pipe: Any) -> None:
        for key in (self.messages_key, self.summary_key, self.saved_key, self.meta_key):
            pipe.expire(key, self.retention_seconds)


user_index_key = keys.user_conversations


def forget_user(client: redis.Redis, platform: str, workspace: str, user_id: str,
                retention_seconds: int, lock_wait_seconds: float = 5.0) -> int:
    """Delete what is kept about a user: their DMs whole, their messages in shared threads.

    Returns how many conversations were touched. Summaries of shared threads are dropped too,
    since they may repeat what the user said. Each conversation is edited under its lock
    (waiting up to ``lock_wait_seconds`` for a turn in progress), so a reply being generated
    cannot write the user's message back afterwards.
    """
    from assistant.turns import holding  # turns sits beside memory; import where needed

    index = user_index_key(platform, workspace, user_id)
    touched = 0
    for raw in client.smembers(index):
        conversation = ConversationKey.model_validate_json(raw)
        history = RedisConversationHistory(client, conversation, retention_seconds)
        deadline = time.monotonic() + lock_wait_seconds
        with holding(client, conversation, wait_until=deadline) as held:
            if not held:
                log.warning("forgetting %s in a busy conversation without its lock", user_id)
            touched += 1
            if conversation.user == user_id:
                history.clear()
                continue
            kept = [m for m in history.records() if m.user_id != user_id]
            pipe = client.pipeline(transaction=True)
            pipe.delete(history.messages_key, history.summary_key)
            if kept:
                pipe.rpush(history.messages_key, *[m.model_dump_json() for m in kept])
                pipe.expire(history.messages_key, retention_seconds)
            pipe.execute()
    client.delete(index)
    return touched


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
