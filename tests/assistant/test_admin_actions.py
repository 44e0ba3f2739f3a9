"""Admin actions: bans refused before queueing, mutes, per-user quotas, deletes, the audit log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest

from assistant import admin_actions, limits, turns
from assistant.conversation import Runtime, answer_pending
from assistant.dispatch import Dispatcher
from assistant.envelope import ConversationKey, Inbound
from assistant.errors import Banned, Muted, PromptError, QuotaExceeded
from assistant.limits import Limits
from assistant.live_prompts import VERSION_KEY
from assistant.memory import RedisConversationHistory
from assistant.prompts import PromptLibrary
from assistant.settings import Settings
from assistant.store import Store, connect_store
from assistant.store.archive import Archive
from assistant.store.audit import AuditLog
from assistant.store.personas import Personas
from assistant.store.recorder import archive_observer
from assistant.store.users import Users
from tests.auxil.factories import inbound
from tests.auxil.fake_celery import QUEUE, FakeCelery, fake_backend


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = connect_store(f"sqlite:///{tmp_path / 'assistant.db'}")
    yield opened
    opened.engine.dispose()


def message(dedupe: str, user: str = "u1", channel: str = "c1") -> Inbound:
    return Inbound(dedupe_id=dedupe, user_id=user, text="hi",
                   conversation=ConversationKey(platform="web", channel=channel))


def from_settings(prompts: PromptLibrary, **env: str) -> Limits:
    values = {"ASSISTANT_USER_RATE_LIMIT": "", "ASSISTANT_CHANNEL_RATE_LIMIT": "",
              "ASSISTANT_USER_DAILY_TOKENS": "0", "ASSISTANT_STRIKE_LIMIT": "0", **env}
    return Limits.from_settings(Settings(**values), prompts)  # type: ignore[arg-type]


def test_a_banned_user_is_refused_before_queueing_every_time(
        fake_redis: fakeredis.FakeRedis, store: Store, prompts: PromptLibrary) -> None:
    dispatcher = Dispatcher(fake_redis, fake_backend(FakeCelery(fake_redis)),
                            limits=from_settings(prompts))
    assert dispatcher.submit(message("before"))
    admin_actions.ban_user(store, fake_redis, "web", "default", "u1", actor="alice")
    for dedupe in ("after-1", "after-2"):
        with pytest.raises(Banned) as refused:
            dispatcher.submit(message(dedupe))
        assert str(refused.value) == prompts.render("banned")
        assert refused.value.repeated is False  # told on each new message, unlike a mute
    with pytest.raises(Banned) as twin:
        dispatcher.submit(message("after-2"))  # the same platform message again (a retry)
    assert twin.value.repeated is True
    assert fake_redis.llen(QUEUE) == 1  # only the message from before the ban: no model time
    assert [i.dedupe_id for i in turns.pending(fake_redis, message("x").conversation)] == [
        "before"]
    assert dispatcher.submit(message("other user", user="u2"))  # others are not affected

    user = Users(store).get("web", "default", "u1")
    assert user is not None and user.banned and user.banned_by == "alice"
    admin_actions.unban_user(store, fake_redis, "web", "default", "u1", actor="bob")
    assert dispatcher.submit(message("after unban"))
    assert [e.action for e in AuditLog(store).recent()] == ["unban_user", "ban_user"]
    assert AuditLog(store).recent()[1].target == "web:default:u1"


def test_bans_survive_redis_losing_its_data(fake_redis: fakeredis.FakeRedis, store: Store,
                                            prompts: PromptLibrary) -> None:
    admin_actions.ban_user(store, fake_redis, "web", "default", "u1", actor="alice")
    admin_actions.set_user_quota(store, fake_redis, "web", "default", "u2", 5, actor="alice")
    fake_redis.flushdb()
    fake_redis.set(limits.banned_key("web", "default", "stale"), "x")
    assert admin_actions.sync_redis(store, fake_redis) == 2
    with pytest.raises(Banned):
        limits.check(fake_redis, from_settings(prompts), message("m"))
    assert fake_redis.get(limits.user_quota_key("web", "default", "u2")) == b"5"
    assert not fake_redis.exists(limits.banned_key("web", "default", "stale"))


def test_an_admin_mute_holds_even_with_strikes_off(fake_redis: fakeredis.FakeRedis,
                                                   store: Store, prompts: PromptLibrary) -> None:
    rules = from_settings(prompts)  # ASSISTANT_STRIKE_LIMIT=0: strikes never mute
    admin_actions.mute_user(fake_redis, store, "web", "default", "u1", 600, actor="alice")
    with pytest.raises(Muted):
        limits.check(fake_redis, rules, message("m1"))
    assert 0 < admin_actions.muted_for(fake_redis, "web", "default", "u1") <= 600
    admin_actions.unmute_user(fake_redis, store, "web", "default", "u1", actor="alice")
    limits.check(fake_redis, rules, message("m2"))
    assert AuditLog(store).recent()[1].details == {"seconds": 600}


def test_a_users_own_quota_replaces_the_global_one(fake_redis: fakeredis.FakeRedis,
                                                   store: Store, prompts: PromptLibrary) -> None:
    from tests.assistant.test_limits import stats

    settings = Settings(ASSISTANT_USER_DAILY_TOKENS="0")  # no global quota
    observe = limits.quota_observer(fake_redis, settings)
    rules = from_settings(prompts)
    admin_actions.set_user_quota(store, fake_redis, "web", "default", "u1", 40, actor="alice")
    assert limits.remaining_tokens(fake_redis, rules, "web", "default", "u1") == 40
    assert limits.remaining_tokens(fake_redis, rules, "web", "default", "u2") is None
    observe(stats(user="u1", completion=40))  # counted: the user has a quota of their own
    observe(stats(user="u2", completion=40))  # not counted: nobody's quota
    assert fake_redis.keys("assistant:quota:web:default:u2:*") == []
    with pytest.raises(QuotaExceeded):
        limits.check(fake_redis, rules, message("m1"))
    limits.check(fake_redis, rules, message("m2", user="u2"))

    # 0: no quota for this user, even under a global one.
    strict = from_settings(prompts, ASSISTANT_USER_DAILY_TOKENS="10")
    admin_actions.set_user_quota(store, fake_redis, "web", "default", "u1", 0, actor="alice")
    limits.check(fake_redis, strict, message("m3"))
    admin_actions.set_user_quota(store, fake_redis, "web", "default", "u1", None, actor="alice")
    with pytest.raises(QuotaExceeded):  # back to the global 10, and 40 were used today
        limits.check(fake_redis, strict, message("m4"))
    user = Users(store).get("web", "default", "u1")
    assert user is not None and user.daily_token_quota is None
    assert [e.details["tokens"] for e in AuditLog(store).recent()] == [None, 0, 40]


def test_deleting_a_conversation_removes_archive_and_memory(
        runtime: Runtime, store: Store) -> None:
    runtime.observers = [archive_observer(store)]
    first = inbound("remember my secret recipe")
    turns.submit(runtime.client, first)
    answer_pending(runtime, first.conversation)
    conversation_id = first.conversation.redis_id
    history = RedisConversationHistory(runtime.client, first.conversation, 60)
    assert history.exists() and Archive(store).get(conversation_id) is not None

    assert admin_actions.delete_conversation(store, runtime.client, conversation_id, "alice")
    assert not history.exists() and Archive(store).get(conversation_id) is None
    assert Archive(store).search(text="recipe") == []
    entry = AuditLog(store).recent()[0]
    assert (entry.action, entry.target, entry.details["archived"]) == (
        "delete_conversation", conversation_id, True)
    assert not admin_actions.delete_conversation(store, runtime.client, conversation_id, "a")


def test_saving_a_persona_announces_it_and_an_invalid_one_saves_nothing(
        fake_redis: fakeredis.FakeRedis, store: Store) -> None:
    with pytest.raises(PromptError):
        admin_actions.save_persona(store, fake_redis, "system", "no variables", "mallory")
    assert Personas(store).current("system") is None and not fake_redis.exists(VERSION_KEY)
    assert AuditLog(store).recent() == []
    text = "Be terse. {assistant_name} {platform} {today} {summary}"
    saved = admin_actions.save_persona(store, fake_redis, "system", text, "alice", "shorter")
    assert fake_redis.get(VERSION_KEY) == b"1"
    back = admin_actions.rollback_persona(store, fake_redis, "system", saved.id, "bob")
    assert back.template == text and fake_redis.get(VERSION_KEY) == b"2"
    assert [(e.action, e.details["version"]) for e in AuditLog(store).recent()] == [
        ("rollback_persona", back.id), ("save_persona", saved.id)]


def test_forgetting_a_user_everywhere_keeps_their_ban(runtime: Runtime, store: Store) -> None:
    runtime.observers = [archive_observer(store)]
    message = inbound("my address is somewhere")
    turns.submit(runtime.client, message)
    answer_pending(runtime, message.conversation)
    admin_actions.ban_user(store, runtime.client, "web", "default", "u1", actor="alice")
    assert admin_actions.forget_user(store, runtime.client, "web", "default", "u1", "alice",
                                     retention_seconds=60) == 1
    assert Archive(store).search(text="address") == []
    history = RedisConversationHistory(runtime.client, message.conversation, 60)
    assert [m.role for m in history.records()] == ["assistant"]  # a shared thread keeps replies
    user = Users(store).get("web", "default", "u1")
    assert user is not None and user.banned and user.message_count == 0
    assert AuditLog(store).recent()[0].details == {"archived_messages": 1, "memories": 0}
