"""What an admin can do from the panel, as plain functions; each one writes the audit log.

Durable state goes to SQL first (``assistant.store``); what the hot path must see is then
mirrored in Redis: bans and per-user quotas (read by ``assistant.limits.check`` before a message
is queued), mutes (``assistant.safety.strikes``' key), the prompts' version counter
(``assistant.live_prompts``). ``sync_redis`` rebuilds the mirror from SQL (after Redis lost its
data). A Redis failure after the SQL write raises ``QueueUnavailable``; the SQL change stays
and ``sync_redis`` (or repeating the action) puts it into effect.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from assistant import keys
from assistant.conversations import Conversations
from assistant.envelope import ConversationKey
from assistant.errors import QueueUnavailable, ReplyTimeout
from assistant.limits import banned_key, user_quota_key
from assistant.live_prompts import announce
from assistant.safety.strikes import mute_key, strikes_key, user_ref
from assistant.store.archive import Archive, ConversationDetail
from assistant.store.audit import AuditLog
from assistant.store.db import Store
from assistant.store.models import ModerationEvent, PersonaVersion, User
from assistant.store.moderation import ModerationLog
from assistant.store.personas import Personas
from assistant.store.users import Users

log = logging.getLogger(__name__)

# How long a delete waits for a turn in progress in that conversation.
DELETE_WAIT_SECONDS = 30.0


@contextmanager
def _redis() -> Iterator[None]:
    try:
        yield
    except redis.RedisError as exc:
        raise QueueUnavailable(f"Redis is unavailable: {exc}") from exc


# -- users -----------------------------------------------------------------------------------

def ban_user(store: Store, client: redis.Redis, platform: str, workspace: str, user_id: str,
             actor: str) -> User:
    """Ban: every later message of the user is refused with a notice, before it is queued."""
    user = Users(store).set_banned(platform, workspace, user_id, True, by=actor)
    with _redis():
        client.set(banned_key(platform, workspace, user_id), actor)
    AuditLog(store).record(actor, "ban_user", user_ref(platform, workspace, user_id), {})
    return user


def unban_user(store: Store, client: redis.Redis, platform: str, workspace: str, user_id: str,
               actor: str) -> User:
    user = Users(store).set_banned(platform, workspace, user_id, False, by=actor)
    with _redis():
        client.delete(banned_key(platform, workspace, user_id))
    AuditLog(store).record(actor, "unban_user", user_ref(platform, workspace, user_id), {})
    return user


def mute_user(client: redis.Redis, store: Store, platform: str, workspace: str, user_id: str,
              seconds: int, actor: str) -> None:
    """Mute for ``seconds`` (the same key strikes set: refused with the muted notice once)."""
    if seconds < 1:
        raise ValueError("a mute lasts at least one second")
    with _redis():
        client.set(mute_key(user_ref(platform, workspace, user_id)), "1", ex=int(seconds))
    AuditLog(store).record(actor, "mute_user", user_ref(platform, workspace, user_id),
                           {"seconds": int(seconds)})


def unmute_user(client: redis.Redis, store: Store, platform: str, workspace: str, user_id: str,
                actor: str) -> None:
    ref = user_ref(platform, workspace, user_id)
    with _redis():
        client.delete(mute_key(ref), strikes_key(ref))
    AuditLog(store).record(actor, "unmute_user", ref, {})


def muted_for(client: redis.Redis, platform: str, workspace: str, user_id: str) -> int:
    """Seconds the user stays muted (0: not muted)."""
    with _redis():
        return max(0, int(client.ttl(mute_key(user_ref(platform, workspace, user_id)))))


def set_user_quota(store: Store, client: redis.Redis, platform: str, workspace: str,
                   user_id: str, tokens: int | None, actor: str) -> User:
    """The user's own daily token quota (None: back to ASSISTANT_USER_DAILY_TOKENS; 0: none)."""
    user = Users(store).set_quota(platform, workspace, user_id, tokens)
    with _redis():
        if tokens is None:
            client.delete(user_quota_key(platform, workspace, user_id))
        else:
            client.set(user_quota_key(platform, workspace, user_id), int(tokens))
    AuditLog(store).record(actor, "set_user_quota", user_ref(platform, workspace, user_id),
                           {"tokens": tokens})
    return user


def sync_redis(store: Store, client: redis.Redis) -> int:
    """Make Redis' copy of bans and per-user quotas match SQL; returns the users mirrored.

    For a start-up (the web server's) or after Redis lost its data. Flags SQL no longer has
    are removed.
    """
    flagged = Users(store).flagged()
    with _redis():
        stale = {*client.scan_iter(match=keys.BANNED_PATTERN),
                 *client.scan_iter(match=keys.USER_QUOTA_PATTERN)}
        keep: set[bytes] = set()
        with client.pipeline(transaction=False) as pipe:
            for user in flagged:
                if user.banned:
                    key = banned_key(user.platform, user.workspace, user.user_id)
                    pipe.set(key, user.banned_by or "admin")
                    keep.add(key.encode())
                if user.daily_token_quota is not None:
                    key = user_quota_key(user.platform, user.workspace, user.user_id)
                    pipe.set(key, user.daily_token_quota)
                    keep.add(key.encode())
            for key in stale:
                name = key if isinstance(key, bytes) else str(key).encode()
                if name not in keep:
                    pipe.delete(name)
            pipe.execute()
    return len(flagged)


# -- conversations ---------------------------------------------------------------------------

def delete_conversation(store: Store, client: redis.Redis, conversation_id: str, actor: str,
                        wait_seconds: float = DELETE_WAIT_SECONDS) -> bool:
    """Delete a conversation from the archive and from the workers' memory (Redis).

    Waits for a turn in progress (the conversation's lock) so it cannot write the conversation
    back; raises ``ReplyTimeout`` if the turn is still running after ``wait_seconds``.
    Returns False when neither store knew the conversation.
    """
    archive = Archive(store)
    detail = archive.get(conversation_id)
    with _redis():
        conversation = _conversation_key(client, conversation_id, detail)
        in_memory = False
        if conversation is not None:
            cleared = Conversations(client, lambda: store, retention_seconds=1).reset(
                conversation, wait_seconds)
            if cleared is None:
                raise ReplyTimeout("the conversation is busy with a reply; try again")
            in_memory, archived = cleared.in_memory, cleared.archived
        else:
            archived = archive.delete(conversation_id)
    if not (archived or in_memory):
        return False
    AuditLog(store).record(actor, "delete_conversation", conversation_id, {
        "archived": archived, "in_memory": in_memory,
        "platform": conversation.platform if conversation else None,
        "channel": conversation.channel if conversation else None})
    return True


def forget_user(store: Store, client: redis.Redis, platform: str, workspace: str,
                user_id: str, actor: str, retention_seconds: int) -> int:
    """Forget a user everywhere: their memory in Redis (``assistant.memory.forget_user``: DMs
    whole, their messages in shared threads) and the archive's copy; their counts too (a ban or
    a quota stays). ``retention_seconds``: the memory's (``Settings.retention_seconds``).
    Returns the archived messages deleted.
    """
    with _redis():
        forgotten = Conversations(client, lambda: store, retention_seconds).forget_person(
            platform, workspace, user_id, actor)
    return forgotten.archived_messages


def _conversation_key(client: redis.Redis, conversation_id: str,
                      detail: ConversationDetail | None) -> ConversationKey | None:
    """Where the conversation lives: from the archive, else from its memory's metadata."""
    if detail is not None:
        key = ConversationKey(platform=detail.platform, workspace=detail.workspace,
                              channel=detail.channel, thread=detail.thread, user=detail.dm_user)
        if key.redis_id == conversation_id:
            return key
    raw = client.hget(f"{keys.conversation(conversation_id)}:meta", "conversation")
    return ConversationKey.model_validate_json(raw) if raw else None


# -- prompts ---------------------------------------------------------------------------------

def save_persona(store: Store, client: redis.Redis, name: str, template: str, actor: str,
                 comment: str = "") -> PersonaVersion:
    """Save a new version (``PromptError`` if invalid: nothing saved) and tell the workers."""
    version = Personas(store).save(name, template, actor, comment)
    _announce(client)
    AuditLog(store).record(actor, "save_persona", name,
                           {"version": version.id, "comment": comment})
    return version


def rollback_persona(store: Store, client: redis.Redis, name: str, version_id: int,
                     actor: str) -> PersonaVersion:
    version = Personas(store).rollback(name, version_id, actor)
    _announce(client)
    AuditLog(store).record(actor, "rollback_persona", name,
                           {"version": version.id, "restored": version_id})
    return version


def _announce(client: redis.Redis) -> None:
    try:
        announce(client)
    except redis.RedisError:
        # Saved; workers also re-read the store every minute (LivePrompts.max_age_seconds).
        log.warning("could not announce a prompt change; workers pick it up within a minute",
                    exc_info=True)


# -- moderation ------------------------------------------------------------------------------

def review_moderation(store: Store, event_id: int, actor: str) -> ModerationEvent | None:
    """Mark a moderation log entry reviewed; None when there is no such entry."""
    event = ModerationLog(store).mark_reviewed(event_id, actor)
    if event is not None:
        AuditLog(store).record(actor, "review_moderation", str(event_id),
                               {"category": event.category, "user": event.user_id})
    return event
