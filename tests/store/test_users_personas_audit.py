"""Users, persona versions, the audit log and moderation review, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from assistant.errors import PromptError
from assistant.prompts import PromptLibrary
from assistant.store import ModerationEvent, Store, connect_store
from assistant.store.audit import AuditLog
from assistant.store.moderation import ModerationLog
from assistant.store.personas import Personas
from assistant.store.users import Users


@pytest.fixture
def store(sql_url: str) -> Iterator[Store]:
    opened = connect_store(sql_url)
    with opened.session() as session:  # PostgreSQL's database is shared by the run's tests
        for table in ("users", "persona_versions", "audit_log", "moderation_events"):
            session.execute(sa.text(f"DELETE FROM {table}"))
    yield opened
    opened.engine.dispose()


def test_users_are_counted_and_listed(store: Store) -> None:
    users = Users(store)
    users.seen("slack", "T1", "U1", messages=1, tokens=30, display_name="Ada")
    users.seen("slack", "T1", "U1", messages=2, tokens=12)
    users.seen("telegram", "default", "42", messages=1)
    ada = users.get("slack", "T1", "U1")
    assert ada is not None
    assert (ada.message_count, ada.token_count, ada.display_name) == (3, 42, "Ada")
    assert ada.first_seen <= ada.last_seen and ada.first_seen.tzinfo is not None
    assert not ada.banned and ada.daily_token_quota is None
    assert [u.user_id for u in users.list()] == ["42", "U1"]  # last seen first
    assert [u.user_id for u in users.list(platform="slack")] == ["U1"]
    assert [u.user_id for u in users.list(query="ad")] == ["U1"]  # display name, any case
    assert [u.user_id for u in users.list(query="%")] == []  # LIKE wildcards are literal
    assert users.count() == 2 and users.count(platform="telegram") == 1
    assert users.get("slack", "T2", "U1") is None  # a workspace is part of who someone is


def test_bans_and_quotas(store: Store) -> None:
    users = Users(store)
    banned = users.set_banned("web", "default", "never-seen", True, by="admin")
    assert banned.banned and banned.banned_by == "admin" and banned.banned_at is not None
    assert [u.user_id for u in users.list(banned=True)] == ["never-seen"]
    assert users.set_quota("web", "default", "never-seen", 500).daily_token_quota == 500
    unbanned = users.set_banned("web", "default", "never-seen", False, by="admin")
    assert not unbanned.banned and unbanned.banned_at is None
    assert [u.user_id for u in users.flagged()] == ["never-seen"]  # still has a quota
    users.set_quota("web", "default", "never-seen", None)
    assert users.flagged() == []
    with pytest.raises(ValueError):
        users.set_quota("web", "default", "x", -1)


def test_persona_save_validate_and_rollback(store: Store, prompts: PromptLibrary) -> None:
    personas = Personas(store, prompts)
    assert personas.names()[0] == "system"
    assert {"refusal", "refusal_injection", "refusal_self_harm"} <= set(personas.names())
    assert "summarise" not in personas.names()
    assert personas.current("system") is None
    assert "{assistant_name}" in personas.template("system")  # the file's text
    variables = "{assistant_name} {platform} {today} {summary}"
    first = personas.save("system", f"You are a pirate. {variables}", "alice", "arr")
    second = personas.save("system", f"You are a poet. {variables}", "bob")
    assert personas.current("system") is not None
    assert personas.current("system").id == second.id  # type: ignore[union-attr]
    assert personas.template("system").startswith("You are a poet.")
    for bad in ["You are {assistant_name}, no other variables",  # missing variables
                f"{variables} {{unknown}}",  # an undeclared one
                f"{variables} {{broken",  # not a template
                "   "]:
        with pytest.raises(PromptError):
            personas.save("system", bad, "mallory")
    with pytest.raises(PromptError):
        personas.save("summarise", "not editable", "mallory")
    personas.save("refusal", "Nope, sorry.", "alice")
    assert [v.created_by for v in personas.history("system")] == ["bob", "alice"]
    restored = personas.rollback("system", first.id, "carol")
    assert restored.id > second.id and restored.template == first.template
    assert restored.comment == f"rollback to version {first.id}"
    assert personas.current("system").template == first.template  # type: ignore[union-attr]
    assert {n: v.id for n, v in personas.newest().items()} == {
        "system": restored.id, "refusal": personas.current("refusal").id}  # type: ignore[union-attr]
    with pytest.raises(PromptError):
        personas.rollback("refusal", first.id, "carol")  # a version of another prompt
    assert len(personas.history("system")) == 3


def test_audit_log(store: Store) -> None:
    audit = AuditLog(store)
    audit.record("alice", "ban_user", "slack:T1:U1", {"reason": "spam", "n": 1})
    audit.record("bob", "save_persona", "system", {"version": 3})
    audit.record("alice", "delete_conversation", "abc", {})
    entries = audit.recent()
    assert [e.action for e in entries] == ["delete_conversation", "save_persona", "ban_user"]
    assert entries[2].details == {"reason": "spam", "n": 1}
    assert entries[0].created_at.tzinfo is not None
    assert [e.target for e in audit.recent(actor="alice", limit=1, offset=1)] == ["slack:T1:U1"]
    assert [e.actor for e in audit.recent(action="save_persona")] == ["bob"]
    assert audit.count(actor="alice") == 2 and audit.count() == 3
    assert audit.actions() == ["ban_user", "delete_conversation", "save_persona"]


def test_moderation_entries_are_reviewed(store: Store) -> None:
    log = ModerationLog(store)
    log.record([ModerationEvent(platform="web", conversation="c", direction="input",
                                check_name="harmful", category="S9", action="block")])
    event = log.recent()[0]
    assert log.get(event.id) is not None and log.get(event.id + 1000) is None
    reviewed = log.mark_reviewed(event.id, "alice")
    assert reviewed is not None and reviewed.reviewed and reviewed.reviewed_by == "alice"
    assert reviewed.reviewed_at is not None
    assert log.recent(reviewed=False) == [] and log.mark_reviewed(event.id + 1000, "x") is None
