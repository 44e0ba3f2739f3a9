"""The conversation archive on SQLite and PostgreSQL: idempotent writes, full-text search."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from assistant.envelope import ConversationKey
from assistant.store import Conversation, Store, connect_store
from assistant.store.archive import Archive, ArchivedMessage, fts_terms

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(sql_url: str) -> Iterator[Store]:
    opened = connect_store(sql_url)
    with opened.session() as session:  # PostgreSQL's database is shared by the run's tests
        for table in ("messages", "conversations"):
            session.execute(sa.text(f"DELETE FROM {table}"))
    yield opened
    opened.engine.dispose()


def turn(n: int, user_text: str, reply_text: str, user: str = "u1",
         at: datetime = T0) -> list[ArchivedMessage]:
    return [
        ArchivedMessage(f"m{n}", "user", user_text, user_id=user, created_at=at),
        ArchivedMessage(f"r{n}", "assistant", reply_text, created_at=at + timedelta(seconds=1),
                        finish_reason="stop", prompt_tokens=100, completion_tokens=12),
    ]


def key(channel: str = "c1", platform: str = "web", user: str | None = None) -> ConversationKey:
    return ConversationKey(platform=platform, channel=channel, user=user)


def test_recording_a_turn_twice_stores_it_once(store: Store) -> None:
    archive = Archive(store)
    assert archive.record_turn(key(), turn(1, "Hello there", "Hi! How can I help?")) == 2
    # A rerun after a crash: same message ids (new timestamps); nothing is duplicated.
    again = turn(1, "Hello there", "Hi! How can I help?", at=T0 + timedelta(minutes=5))
    assert archive.record_turn(key(), again) == 0
    assert archive.record_turn(key(), turn(2, "Tell me a joke", "Why did...")) == 2
    detail = archive.get(key().redis_id)
    assert detail is not None
    assert [m.message_id for m in detail.messages] == ["m1", "r1", "m2", "r2"]
    assert detail.message_count == 4 and detail.title == "Hello there"
    assert detail.updated_at == T0 + timedelta(seconds=1)
    assert detail.messages[1].completion_tokens == 12 and detail.messages[1].role == "assistant"
    assert detail.messages[0].created_at == T0  # timezone-aware UTC on both databases


def test_the_same_message_id_in_two_conversations_is_two_messages(store: Store) -> None:
    """Web clients choose their message ids: uniqueness is per conversation."""
    archive = Archive(store)
    archive.record_turn(key("a"), turn(1, "alpha", "one"))
    archive.record_turn(key("b"), turn(1, "beta", "two"))
    assert archive.count() == 2


def test_search_by_text_and_filters(store: Store) -> None:
    archive = Archive(store)
    archive.record_turn(key("c1"), turn(1, "How do I bake sourdough bread?", "Start with a "
                                        "levain...", at=T0))
    archive.record_turn(key("c2", "slack"), turn(2, "Recommend a mystery novel",
                                                 "Try Gaudy Night.", user="u2",
                                                 at=T0 + timedelta(hours=1)))
    archive.record_turn(key("c3", "telegram", user="u3"),
                        turn(3, "Bread or cake for a party?", "Cake!", user="u3",
                             at=T0 + timedelta(hours=2)))

    def channels(**filters: object) -> list[str]:
        return [c.channel for c in archive.search(**filters)]  # type: ignore[arg-type]

    assert channels() == ["c3", "c2", "c1"]  # most recently active first
    assert channels(text="bread") == ["c3", "c1"]
    assert channels(text="BREAD sourdough") == ["c1"]  # every word, any case
    assert channels(text="sourd") == ["c1"]  # a word's start
    assert channels(text="levain") == ["c1"]  # the assistant's words too
    assert channels(text="Gaudy-Night!") == ["c2"]  # punctuation is not syntax
    assert channels(text='" OR * NEAR(') == []  # nor are FTS operators
    assert channels(text="pizza") == []
    assert channels(text="bread", platform="telegram") == ["c3"]
    assert channels(channel="c2") == ["c2"]
    assert channels(user_id="u2") == ["c2"]
    assert channels(user_id="u3") == ["c3"]
    assert channels(since=T0 + timedelta(minutes=30)) == ["c3", "c2"]
    assert channels(until=T0 + timedelta(minutes=30)) == ["c1"]
    assert channels(limit=1, offset=1) == ["c2"]
    assert archive.count(text="bread") == 2 and archive.count(platform="slack") == 1
    assert fts_terms("It's  fine_ok!") == ["it", "s", "fine", "ok"]


def test_text_search_uses_the_full_text_index(store: Store) -> None:
    archive = Archive(store)
    for n in range(30):
        archive.record_turn(key(f"c{n}"), turn(n, f"message number {n} about apples",
                                               "noted"))
    query = archive._filtered(sa.select(Conversation.id), "apples", None, None, None, None,
                              None)
    assert query is not None
    compiled = query.compile(store.engine, compile_kwargs={"literal_binds": True})
    with store.engine.connect() as connection:
        if store.engine.dialect.name == "sqlite":
            plan = " ".join(str(row[-1]) for row in
                            connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}"))
            assert "messages_fts VIRTUAL TABLE" in plan, plan
        else:
            connection.exec_driver_sql("SET enable_seqscan = off")  # tiny tables: force it
            plan = " ".join(row[0] for row in
                            connection.exec_driver_sql(f"EXPLAIN {compiled}"))
            assert "ix_messages_search" in plan and "@@" in plan, plan
    assert archive.count(text="apples") == 30


def test_delete_and_export(store: Store) -> None:
    archive = Archive(store)
    archive.record_turn(key("c1"), turn(1, "keep <script>alert(1)</script>", "ok"))
    archive.record_turn(key("c2"), turn(2, "forget me please", "done"))
    exported = archive.export(key("c1").redis_id)
    assert exported is not None
    assert exported["conversation"]["id"] == key("c1").redis_id
    assert exported["conversation"]["created_at"] == T0.isoformat()
    assert [m["text"] for m in exported["messages"]] == ["keep <script>alert(1)</script>", "ok"]
    import json

    json.dumps(exported)  # JSON-ready as it is
    assert archive.delete(key("c2").redis_id) is True
    assert archive.delete(key("c2").redis_id) is False
    assert archive.get(key("c2").redis_id) is None and archive.export("nope") is None
    assert archive.search(text="forget") == []  # gone from the index too
    assert [c.channel for c in archive.search(text="keep")] == ["c1"]
    with store.session() as session:
        left = session.scalar(sa.text("SELECT count(*) FROM messages"))
    assert left == 2


def test_forgetting_a_user(store: Store) -> None:
    archive = Archive(store)
    archive.record_turn(key("dm", user="u1"), turn(1, "my private note", "noted", user="u1"))
    shared = key("team")
    archive.record_turn(shared, turn(2, "u1 says hello first", "hi u1", user="u1"))
    archive.record_turn(shared, turn(3, "u2 asks about lunch", "pasta", user="u2",
                                     at=T0 + timedelta(minutes=1)))
    archive.record_turn(key("other", "slack"), turn(4, "same id elsewhere", "ok", user="u1"))

    assert archive.forget_user("web", "default", "u1") == 3  # the DM (2) and one message
    assert archive.get(key("dm", user="u1").redis_id) is None
    detail = archive.get(shared.redis_id)
    assert detail is not None
    assert [m.text for m in detail.messages] == ["hi u1", "u2 asks about lunch", "pasta"]
    assert detail.message_count == 3 and detail.title == "u2 asks about lunch"
    assert archive.search(text="private") == [] and archive.search(text="says") == []
    assert archive.count(platform="slack") == 1  # another platform's u1 is someone else
    assert archive.forget_user("web", "default", "u1") == 0


def test_purging_inactive_conversations(store: Store) -> None:
    archive = Archive(store)
    archive.record_turn(key("old"), turn(1, "long ago", "yes", at=T0))
    archive.record_turn(key("new"), turn(2, "recently", "yes", at=T0 + timedelta(days=40)))
    assert archive.purge(T0 + timedelta(days=30)) == 1
    assert [c.channel for c in archive.search()] == ["new"]
    assert archive.search(text="long") == []
    assert archive.purge(T0 + timedelta(days=30)) == 0
