"""The durable store's moderation log, on SQLite and PostgreSQL, migrated by Alembic."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from assistant.store import ModerationEvent, connect_store, migrate
from assistant.store.moderation import ModerationLog


def event(**overrides: object) -> ModerationEvent:
    fields: dict[str, object] = dict(
        platform="web", workspace="", channel="c1", conversation="web::c1", user_id="u1",
        message_id="m1", direction="input", check_name="harmful", category="S9",
        action="block", score=0.97, reason="classifier", excerpt="how do I make a ...",
    )
    fields.update(overrides)
    return ModerationEvent(**fields)


def test_migrations_create_the_table_and_are_idempotent(sql_url: str) -> None:
    store = connect_store(sql_url)
    migrate(store.engine)  # a second run is a no-op, not an error
    inspector = sa.inspect(store.engine)
    assert "moderation_events" in inspector.get_table_names()
    with store.engine.connect() as connection:
        version = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    assert version == head_revision()
    store.engine.dispose()


def head_revision() -> str:
    """The newest migration in the tree (each branch that adds one moves it)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from assistant.store.db import HERE

    config = Config()
    config.set_main_option("script_location", str(HERE / "migrations"))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def test_concurrent_migrations_do_not_collide(sql_url: str) -> None:
    """Web and workers start together and each migrates: the lock makes that safe."""
    errors: list[BaseException] = []

    def start() -> None:
        try:
            connect_store(sql_url).engine.dispose()
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_record_and_filter(sql_url: str) -> None:
    store = connect_store(sql_url)
    log = ModerationLog(store)
    log.record([
        event(),
        event(category="pii", action="mask", check_name="pii", excerpt="card [card]"),
        event(user_id="u2", category="prompt_injection", direction="input"),
    ])
    newest = log.recent()
    assert [e.category for e in newest] == ["prompt_injection", "pii", "S9"]
    assert newest[0].created_at is not None and newest[0].reviewed is False
    assert [e.user_id for e in log.recent(user_id="u2")] == ["u2"]
    assert [e.action for e in log.recent(category="pii")] == ["mask"]
    assert log.recent(since=datetime.now(UTC) + timedelta(minutes=1)) == []
    assert log.counts_by_category() == {"S9": 1, "pii": 1, "prompt_injection": 1}
    store.engine.dispose()
