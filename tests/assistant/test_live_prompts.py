"""Live prompts: the next turn uses the newest persona version, read from SQL only on change;
and the worker's archive of each turn."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from assistant import admin_actions, turns
from assistant.conversation import Runtime, answer_pending, trace_key
from assistant.envelope import reply_id_for
from assistant.live_prompts import LivePrompts, announce, persona_versions, traced_versions
from assistant.observe import TurnStats
from assistant.prompts import PromptLibrary
from assistant.store import Store, connect_store
from assistant.store.archive import Archive
from assistant.store.recorder import archive_observer
from assistant.store.users import Users
from tests.auxil.factories import inbound
from tests.auxil.fake_engine import FakeEngine

PERSONA = "{assistant_name} {platform} {today} {summary}"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = connect_store(f"sqlite:///{tmp_path / 'assistant.db'}")
    yield opened
    opened.engine.dispose()


class CountingLive(LivePrompts):
    """Counts how often the store is read."""

    reads = 0

    def current(self) -> PromptLibrary:
        newest = self.personas.newest

        def counted() -> Any:
            self.reads += 1
            return newest()

        self.personas.newest = counted  # type: ignore[method-assign]
        try:
            return super().current()
        finally:
            self.personas.newest = newest  # type: ignore[method-assign]


def test_the_store_is_read_only_when_the_version_moves(
        fake_redis: fakeredis.FakeRedis, store: Store, prompts: PromptLibrary) -> None:
    live = CountingLive(store, fake_redis, prompts, max_age_seconds=3600)
    first = live.current()
    assert persona_versions(first) == {} and live.reads == 1
    assert live.current() is first and live.reads == 1  # no change: one GET, no SQL
    saved = admin_actions.save_persona(store, fake_redis, "system", f"Pirate! {PERSONA}", "a")
    second = live.current()
    assert live.reads == 2 and persona_versions(second) == {"system": saved.id}
    assert second.render("system", assistant_name="A", platform="web", today="t",
                         summary="").startswith("Pirate!")
    assert second.render("refusal") == prompts.render("refusal")  # the rest from the files
    assert live.current() is second and live.reads == 2


def test_a_stale_copy_is_refreshed_even_without_an_announcement(
        fake_redis: fakeredis.FakeRedis, store: Store, prompts: PromptLibrary) -> None:
    live = LivePrompts(store, fake_redis, prompts, max_age_seconds=0)
    live.current()
    from assistant.store.personas import Personas

    saved = Personas(store, prompts).save("refusal", "No.", "a")  # saved, never announced
    assert persona_versions(live.current()) == {"refusal": saved.id}


def runtime_with(runtime: Runtime, store: Store, **changes: Any) -> Runtime:
    live = LivePrompts(store, runtime.client, runtime.prompts)
    return dataclasses.replace(runtime, live_prompts=live, trace_prompts=True, **changes)


def test_the_next_turn_uses_the_new_persona(runtime: Runtime, engine: FakeEngine,
                                            store: Store) -> None:
    live_runtime = runtime_with(runtime, store)
    client = runtime.client

    def ask(text: str) -> tuple[str, dict[str, int] | None, list[dict[str, Any]]]:
        message = inbound(text)
        turns.submit(client, message)
        answer_pending(live_runtime, message.conversation)
        reply_id = reply_id_for([message.message_id])
        trace = json.loads(client.get(trace_key(reply_id)))  # type: ignore[arg-type]
        return engine.requests[-1].messages[0].text, traced_versions(client, reply_id), trace

    system, versions, trace = ask("hello")
    assert "Pirate" not in system and versions == {}
    saved = admin_actions.save_persona(store, client, "system", f"You are a Pirate. {PERSONA}",
                                       "alice")
    system, versions, trace = ask("hello again")
    assert system.startswith("You are a Pirate.") and versions == {"system": saved.id}
    assert trace[0]["role"] == "system" and trace[0]["text"].startswith("You are a Pirate.")
    back = admin_actions.rollback_persona(store, client, "system", saved.id, "bob")
    assert ask("and again")[1] == {"system": back.id}


def test_the_safety_refusals_follow_too(runtime: Runtime, store: Store) -> None:
    @dataclasses.dataclass
    class Safety:  # what LivePrompts.apply needs of assistant.safety.service.SafetyService
        prompts: PromptLibrary

    base = Safety(runtime.prompts)
    live_runtime = runtime_with(runtime, store, safety=base)
    live = live_runtime.live_prompts
    admin_actions.save_persona(store, runtime.client, "refusal", "Nope.", "alice")
    applied = live.apply(live_runtime)
    assert applied.safety is not base and applied.safety.prompts.render("refusal") == "Nope."
    assert live.apply(live_runtime).safety is applied.safety  # built once per version
    assert base.prompts.render("refusal") != "Nope."  # the shared service is not changed


def test_each_turn_is_archived_once_and_counted(runtime: Runtime, engine: FakeEngine,
                                                store: Store) -> None:
    seen: list[TurnStats] = []
    runtime.observers = [archive_observer(store), seen.append]
    engine.answers.append("Sourdough needs a starter.")
    message = inbound("How do I bake sourdough?")
    turns.submit(runtime.client, message)
    answer_pending(runtime, message.conversation)

    detail = Archive(store).get(message.conversation.redis_id)
    assert detail is not None
    assert [(m.role, m.text) for m in detail.messages] == [
        ("user", "How do I bake sourdough?"), ("assistant", "Sourdough needs a starter.")]
    reply = detail.messages[1]
    assert reply.message_id == reply_id_for([message.message_id])
    assert reply.completion_tokens == 4 and reply.finish_reason == "stop"
    assert detail.messages[0].user_id == "u1"
    assert [c.id for c in Archive(store).search(text="starter")] == [detail.id]
    user = Users(store).get("web", "default", "u1")
    assert user is not None and (user.message_count, user.token_count) == (1, 4)

    archive_observer(store)(seen[0])  # the same turn reported again (a rerun)
    assert Archive(store).get(detail.id).message_count == 2  # type: ignore[union-attr]
    user = Users(store).get("web", "default", "u1")
    assert user is not None and user.message_count == 1


def test_a_turn_is_archived_and_counted_together_or_not_at_all(
        runtime: Runtime, engine: FakeEngine, store: Store,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure between archiving the turn and counting its user (a worker killed there, a
    database error) leaves neither, so the rerun files both; and a reader never sees the turn
    archived but its user not yet counted."""
    seen: list[TurnStats] = []
    runtime.observers = [seen.append]
    engine.answers.append("Sourdough needs a starter.")
    message = inbound("How do I bake sourdough?")
    turns.submit(runtime.client, message)
    answer_pending(runtime, message.conversation)

    def dies(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("worker lost between the two writes")

    with monkeypatch.context() as patch:
        patch.setattr(Users, "seen", dies)
        with pytest.raises(RuntimeError):
            archive_observer(store)(seen[0])
    assert Archive(store).get(message.conversation.redis_id) is None
    assert Users(store).get("web", "default", "u1") is None

    archive_observer(store)(seen[0])  # the rerun
    detail = Archive(store).get(message.conversation.redis_id)
    assert detail is not None and detail.message_count == 2
    user = Users(store).get("web", "default", "u1")
    assert user is not None and (user.message_count, user.token_count) == (1, 4)


def test_a_failing_archive_never_fails_the_turn(runtime: Runtime, tmp_path: Path) -> None:
    unmigrated = connect_store(f"sqlite:///{tmp_path / 'empty.db'}", upgrade=False)
    runtime.observers = [archive_observer(unmigrated)]  # no tables: every write fails
    message = inbound("hi")
    turns.submit(runtime.client, message)
    assert answer_pending(runtime, message.conversation).turns == 1
    unmigrated.engine.dispose()


def test_announce_counts(fake_redis: fakeredis.FakeRedis) -> None:
    assert [announce(fake_redis), announce(fake_redis)] == [1, 2]


def test_the_archive_is_purged_by_one_worker_per_period(fake_redis: fakeredis.FakeRedis,
                                                        store: Store) -> None:
    from datetime import timedelta

    from assistant.envelope import ConversationKey, utcnow
    from assistant.store.archive import ArchivedMessage
    from assistant.store.recorder import purge_if_due

    archive = Archive(store)
    old = utcnow() - timedelta(days=100)
    archive.record_turn(ConversationKey(platform="web", channel="old"),
                        [ArchivedMessage("m1", "user", "old news", created_at=old)])
    archive.record_turn(ConversationKey(platform="web", channel="new"),
                        [ArchivedMessage("m2", "user", "fresh news")])
    assert purge_if_due(archive, fake_redis, retention_days=90) == 1
    archive.record_turn(ConversationKey(platform="web", channel="old"),
                        [ArchivedMessage("m1", "user", "old news", created_at=old)])
    assert purge_if_due(archive, fake_redis, retention_days=90) == 0  # claimed for an hour
    assert archive.count() == 2


def test_a_real_safety_service_refuses_and_cuts_with_the_new_texts(
        runtime: Runtime, engine: FakeEngine, store: Store, prompts: PromptLibrary) -> None:
    from assistant.stream import stored_reply
    from tests.assistant.safety.test_service import service

    safety, sink = service(runtime.client, prompts)
    live_runtime = runtime_with(runtime, store, safety=safety)
    admin_actions.save_persona(store, runtime.client, "refusal", "Not that, sorry.", "alice")
    admin_actions.save_persona(store, runtime.client, "output_cut", "[cut by the filters]",
                               "alice")

    blocked = inbound("how do I build a bomb")
    turns.submit(runtime.client, blocked)
    answer_pending(live_runtime, blocked.conversation)
    refusal = stored_reply(runtime.client, blocked.conversation, blocked.message_id)
    assert refusal is not None and refusal.text == "Not that, sorry."

    engine.answers.append("Sure thing. First you get a bomb casing and then more words")
    cut = inbound("tell me a story", channel="c2")
    turns.submit(runtime.client, cut)
    answer_pending(live_runtime, cut.conversation)
    reply = stored_reply(runtime.client, cut.conversation, cut.message_id)
    assert reply is not None and reply.text == "Sure thing. First you get a [cut by the filters]"
    assert [e.direction for e in sink.events] == ["input", "output"]  # still logged
