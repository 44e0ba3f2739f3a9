"""Each admin page against an SQLite store and a fake Redis: what it shows, what it changes,
and that user- or model-written text is always shown as text."""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from markupsafe import escape

from assistant import live_stats
from assistant.envelope import ConversationKey
from assistant.limits import banned_key, user_quota_key
from assistant.observe import TurnStats
from assistant.safety.strikes import mute_key, user_ref
from assistant.settings import Settings
from assistant.store import connect_store
from assistant.store.archive import Archive, ArchivedMessage
from assistant.store.audit import AuditLog
from assistant.store.models import ModerationEvent
from assistant.store.moderation import ModerationLog
from assistant.store.personas import Personas
from assistant.store.users import Users
from tests.admin.conftest import PASSWORD, WORKER, FakeControl, admin_settings

TABLES = ("messages", "conversations", "users", "persona_versions", "audit_log",
          "moderation_events")


@pytest.fixture
def settings(sql_url: str, tmp_path: Path) -> Settings:
    """Every page test on SQLite and on PostgreSQL (whose database the run's tests share: the
    tables are emptied first)."""
    if sql_url.startswith("postgresql"):
        store = connect_store(sql_url)
        with store.session() as session:
            for table in TABLES:
                session.execute(sa.text(f"DELETE FROM {table}"))
        store.engine.dispose()
    return admin_settings(tmp_path, DATABASE_URL=sql_url)


SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
WEB = ConversationKey(platform="web", workspace="default", channel="c-1", user="ada")


def archive(store: Any, key: ConversationKey = WEB, user_text: str = "hello there",
            reply: str = "Hi! How can I help?", user: str = "ada", n: int = 1) -> str:
    now = datetime.now(UTC)
    Archive(store).record_turn(key, [
        ArchivedMessage(message_id=f"m{n}", role="user", text=user_text, user_id=user,
                        created_at=now),
        ArchivedMessage(message_id=f"r{n}", role="assistant", text=reply,
                        created_at=now + timedelta(seconds=1), completion_tokens=7),
    ])
    return key.redis_id


def audit_actions(store: Any) -> list[str]:
    return [entry.action for entry in AuditLog(store).recent(50)]


def moderation_event(store: Any, **overrides: Any) -> int:
    values: dict[str, Any] = dict(platform="web", workspace="default", channel="c-1",
                                  conversation=WEB.redis_id, user_id="mallory", message_id="m9",
                                  direction="input", check_name="toxicity", category="S10",
                                  action="block", score=0.93, reason="toxic",
                                  excerpt="you are [REDACTED]")
    ModerationLog(store).record([ModerationEvent(**(values | overrides))])
    return ModerationLog(store).recent(limit=1)[0].id


# -- escaping ------------------------------------------------------------------------------------

def assert_shown_as_text(page: str, *payloads: str) -> None:
    for payload in payloads:
        assert payload not in page, f"raw {payload!r} in the page"
        assert html.escape(payload, quote=False) in page or html.escape(payload) in page, (
            f"escaped {payload!r} missing")


def test_a_conversation_with_markup_renders_as_text(logged_in: TestClient, store: Any) -> None:
    conversation = archive(store, user_text=f"look {SCRIPT} here", reply=f"sure {IMG} done")
    page = logged_in.get(f"/admin/conversations/{conversation}")
    assert page.status_code == 200
    assert_shown_as_text(page.text, SCRIPT, IMG)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text
    listing = logged_in.get("/admin/conversations")
    assert_shown_as_text(listing.text, SCRIPT)  # the title is the first user message


def test_a_conversation_shows_its_safety_verdicts(logged_in: TestClient, store: Any) -> None:
    conversation = archive(store, user_text="some bad words")
    moderation_event(store, conversation=conversation, message_id="m1", category="S10",
                     excerpt=f"bad {IMG}")
    moderation_event(store, conversation="other", message_id="m1", category="PII")
    page = logged_in.get(f"/admin/conversations/{conversation}").text
    assert page.count('data-testid="verdict"') == 1 and "block · S10 · toxicity" in page
    assert "PII" not in page
    assert_shown_as_text(page, IMG)


def test_user_names_and_moderation_excerpts_render_as_text(logged_in: TestClient,
                                                           store: Any) -> None:
    Users(store).seen("slack", "T1", "U1", messages=1, display_name=IMG)
    moderation_event(store, excerpt=f"he said {SCRIPT}", user_id=f"x{IMG}", channel=SCRIPT)
    assert_shown_as_text(logged_in.get("/admin/users").text, IMG)
    assert_shown_as_text(logged_in.get("/admin/moderation").text, SCRIPT, IMG)


# -- conversations ------------------------------------------------------------------------------

def test_conversations_list_search_and_read(logged_in: TestClient, store: Any) -> None:
    first = archive(store, user_text="tell me about lighthouses", user="ada")
    other = ConversationKey(platform="slack", workspace="T1", channel="C9", thread="171.5")
    second = archive(store, other, user_text="what is the weather", user="U77", n=2)
    listing = logged_in.get("/admin/conversations")
    assert first in listing.text and second in listing.text
    found = logged_in.get("/admin/conversations", params={"text": "lighthouse"})
    assert first in found.text and second not in found.text
    by_platform = logged_in.get("/admin/conversations", params={"platform": "slack"})
    assert second in by_platform.text and first not in by_platform.text
    by_user = logged_in.get("/admin/conversations", params={"user": "U77"})
    assert second in by_user.text and first not in by_user.text
    today = datetime.now(UTC).date()
    by_date = logged_in.get("/admin/conversations",
                            params={"since": str(today - timedelta(days=1)), "until": str(today)})
    assert first in by_date.text and second in by_date.text
    old = logged_in.get("/admin/conversations", params={"until": str(today - timedelta(days=2))})
    assert first not in old.text and "No conversation matches." in old.text
    bad = logged_in.get("/admin/conversations", params={"since": "yesterday"})
    assert bad.status_code == 422
    page = logged_in.get(f"/admin/conversations/{first}").text
    assert page.index("tell me about lighthouses") < page.index("Hi! How can I help?")
    assert logged_in.get("/admin/conversations/" + "0" * 32).status_code == 404


def test_export_a_conversation_as_json(logged_in: TestClient, store: Any) -> None:
    conversation = archive(store, user_text=SCRIPT)
    response = logged_in.get(f"/admin/conversations/{conversation}/export")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["content-disposition"] == (
        f'attachment; filename="conversation-{conversation}.json"')
    data = json.loads(response.content)
    assert data["conversation"]["id"] == conversation
    assert [m["text"] for m in data["messages"]] == [SCRIPT, "Hi! How can I help?"]
    assert "conversation_export" in audit_actions(store)


def test_delete_a_conversation(logged_in: TestClient, csrf: str, store: Any) -> None:
    conversation = archive(store)
    response = logged_in.post(f"/admin/conversations/{conversation}/delete",
                              data={"csrf_token": csrf})
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/conversations?notice=deleted"
    assert Archive(store).get(conversation) is None
    assert logged_in.get(f"/admin/conversations/{conversation}").status_code == 404
    assert "delete_conversation" in audit_actions(store)
    again = logged_in.post(f"/admin/conversations/{conversation}/delete",
                           data={"csrf_token": csrf})
    assert again.status_code == 404


# -- moderation ---------------------------------------------------------------------------------

def test_moderation_filters_and_review(logged_in: TestClient, csrf: str, store: Any) -> None:
    toxic = moderation_event(store, category="S10", user_id="mallory")
    pii = moderation_event(store, category="PII", action="mask", user_id="bob")
    page = logged_in.get("/admin/moderation").text
    assert f'data-id="{toxic}"' in page and f'data-id="{pii}"' in page
    only = logged_in.get("/admin/moderation", params={"category": "PII"}).text
    assert f'data-id="{pii}"' in only and f'data-id="{toxic}"' not in only
    by_user = logged_in.get("/admin/moderation", params={"user": "mallory"}).text
    assert f'data-id="{toxic}"' in by_user and f'data-id="{pii}"' not in by_user
    by_action = logged_in.get("/admin/moderation", params={"action": "mask"}).text
    assert f'data-id="{pii}"' in by_action and f'data-id="{toxic}"' not in by_action

    response = logged_in.post(f"/admin/moderation/{toxic}/review",
                              data={"csrf_token": csrf, "category": "S10"})
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/moderation?category=S10&notice=reviewed"
    event = ModerationLog(store).get(toxic)
    assert event is not None and event.reviewed and event.reviewed_by == "root-admin"
    pending = logged_in.get("/admin/moderation", params={"reviewed": "no"}).text
    assert f'data-id="{pii}"' in pending and f'data-id="{toxic}"' not in pending
    done = logged_in.get("/admin/moderation", params={"reviewed": "yes"}).text
    assert f'data-id="{toxic}"' in done and f'data-id="{pii}"' not in done
    assert logged_in.post("/admin/moderation/999/review",
                          data={"csrf_token": csrf}).status_code == 404


def test_mute_and_ban_from_a_moderation_entry(logged_in: TestClient, csrf: str, store: Any,
                                              server: fakeredis.FakeServer) -> None:
    event = moderation_event(store, user_id="mallory")
    client = fakeredis.FakeRedis(server=server)
    muted = logged_in.post(f"/admin/moderation/{event}/mute",
                           data={"csrf_token": csrf, "seconds": "86400"})
    assert muted.status_code == 303
    assert 86000 < client.ttl(mute_key(user_ref("web", "default", "mallory"))) <= 86400
    assert logged_in.post(f"/admin/moderation/{event}/mute",
                          data={"csrf_token": csrf, "seconds": "5"}).status_code == 422
    banned = logged_in.post(f"/admin/moderation/{event}/ban", data={"csrf_token": csrf})
    assert banned.status_code == 303
    assert client.exists(banned_key("web", "default", "mallory"))
    user = Users(store).get("web", "default", "mallory")
    assert user is not None and user.banned and user.banned_by == "root-admin"
    assert {"mute_user", "ban_user"} <= set(audit_actions(store))
    users = logged_in.get("/admin/users", params={"query": "mallory"}).text
    assert 'data-testid="muted">muted 24 h<' in users
    unmuted = logged_in.post("/admin/users/unmute", data={
        "csrf_token": csrf, "platform": "web", "workspace": "default", "user_id": "mallory"})
    assert unmuted.status_code == 303
    assert not client.exists(mute_key(user_ref("web", "default", "mallory")))
    assert 'data-testid="muted"' not in logged_in.get("/admin/users").text
    assert "unmute_user" in audit_actions(store)


def test_moderation_pages(logged_in: TestClient, store: Any) -> None:
    from integrations.web.admin.moderation import PAGE_SIZE

    first = moderation_event(store, user_id="pager")
    for _ in range(PAGE_SIZE):
        moderation_event(store, user_id="pager")
    page_one = logged_in.get("/admin/moderation", params={"user": "pager"}).text
    assert page_one.count('data-testid="moderation-entry"') == PAGE_SIZE
    assert f'data-id="{first}"' not in page_one and "page=2" in page_one
    page_two = logged_in.get("/admin/moderation", params={"user": "pager", "page": "2"}).text
    assert page_two.count('data-testid="moderation-entry"') == 1
    assert f'data-id="{first}"' in page_two


# -- persona ------------------------------------------------------------------------------------

def test_persona_save_history_and_rollback(logged_in: TestClient, csrf: str, store: Any) -> None:
    personas = Personas(store)
    page = logged_in.get("/admin/persona").text
    assert "the shipped default" in page
    assert str(escape(personas.default("system"))) in page
    variables = personas.variables("system")
    text = "You are Captain Byte, a cheerful pirate. " + " ".join(
        "{" + name + "}" for name in variables)
    saved = logged_in.post("/admin/persona", data={"csrf_token": csrf, "name": "system",
                                                   "template": text, "comment": "pirate"})
    assert saved.status_code == 303, saved.text
    first = personas.current("system")
    assert first is not None and first.template == text and first.created_by == "root-admin"
    page = logged_in.get("/admin/persona").text
    assert "Captain Byte" in page and f'data-version="{first.id}"' in page

    logged_in.post("/admin/persona", data={"csrf_token": csrf, "name": "system",
                                           "template": text.replace("pirate", "robot")})
    rolled = logged_in.post("/admin/persona/rollback",
                            data={"csrf_token": csrf, "name": "system", "version": str(first.id)})
    assert rolled.status_code == 303
    newest = personas.current("system")
    assert newest is not None and newest.template == text and newest.id > first.id
    assert [v.id for v in personas.history("system")][0] == newest.id
    assert {"save_persona", "rollback_persona"} <= set(audit_actions(store))


def test_an_invalid_persona_is_refused_and_nothing_saved(logged_in: TestClient, csrf: str,
                                                         store: Any) -> None:
    response = logged_in.post("/admin/persona", data={"csrf_token": csrf, "name": "system",
                                                      "template": "Hello {nonsense}"})
    assert response.status_code == 422
    assert Personas(store).current("system") is None
    assert logged_in.get("/admin/persona", params={"name": "rate_limited"}).status_code == 404
    refusal = logged_in.get("/admin/persona", params={"name": "refusal"})
    assert refusal.status_code == 200


# -- users --------------------------------------------------------------------------------------

def test_users_ban_unban_and_quota(logged_in: TestClient, csrf: str, store: Any,
                                   server: fakeredis.FakeServer) -> None:
    Users(store).seen("telegram", "default", "42", messages=3, tokens=120, display_name="Ada")
    Users(store).seen("slack", "T1", "U1", messages=1, tokens=5)
    page = logged_in.get("/admin/users").text
    assert 'data-user="42"' in page and 'data-user="U1"' in page and ">120<" in page
    only = logged_in.get("/admin/users", params={"platform": "slack"}).text
    assert 'data-user="U1"' in only and 'data-user="42"' not in only
    named = logged_in.get("/admin/users", params={"query": "ada"}).text
    assert 'data-user="42"' in named and 'data-user="U1"' not in named

    who = {"csrf_token": csrf, "platform": "telegram", "workspace": "default", "user_id": "42"}
    client = fakeredis.FakeRedis(server=server)
    assert logged_in.post("/admin/users/ban", data=who).status_code == 303
    assert client.exists(banned_key("telegram", "default", "42"))
    assert 'data-testid="banned"' in logged_in.get("/admin/users").text
    assert logged_in.post("/admin/users/unban", data=who).status_code == 303
    assert not client.exists(banned_key("telegram", "default", "42"))

    assert logged_in.post("/admin/users/quota", data=who | {"quota": "5,000"}).status_code == 303
    assert client.get(user_quota_key("telegram", "default", "42")) == b"5000"
    user = Users(store).get("telegram", "default", "42")
    assert user is not None and user.daily_token_quota == 5000
    assert logged_in.post("/admin/users/quota", data=who | {"quota": "-1"}).status_code == 422
    assert logged_in.post("/admin/users/quota", data=who | {"quota": ""}).status_code == 303
    assert client.get(user_quota_key("telegram", "default", "42")) is None
    assert logged_in.post("/admin/users/ban", data={"csrf_token": csrf}).status_code == 422

    # Redis lost its data: the store's bans and quotas are applied again from the page.
    logged_in.post("/admin/users/ban", data=who)
    client.delete(banned_key("telegram", "default", "42"))
    synced = logged_in.post("/admin/users/sync", data={"csrf_token": csrf})
    assert synced.status_code == 303 and synced.headers["location"].endswith("notice=synced")
    assert client.exists(banned_key("telegram", "default", "42"))
    assert "sync_redis" in audit_actions(store)
    assert {"ban_user", "unban_user", "set_user_quota"} <= set(audit_actions(store))


# -- workers, dashboard, settings, audit --------------------------------------------------------

def test_workers_page_and_pool_resize(logged_in: TestClient, csrf: str, store: Any,
                                      control: FakeControl,
                                      server: fakeredis.FakeServer) -> None:
    page = logged_in.get("/admin/workers").text
    assert f'data-hostname="{WORKER}"' in page and "assistant.answer_conversation" in page
    assert "not loaded yet" in page  # no pool process has loaded its model
    # A pool process that is gone (pid 99) does not count; a current one (pid 1) does.
    client = fakeredis.FakeRedis(server=server)
    client.hset(f"assistant:worker-models:{WORKER}", "99", '{"model": "old.gguf"}')
    assert "not loaded yet" in logged_in.get("/admin/workers").text
    client.hset(f"assistant:worker-models:{WORKER}", "1", '{"model": "SmolLM2.gguf"}')
    page = logged_in.get("/admin/workers").text
    assert '<span class="pill ok">loaded</span>' in page and "SmolLM2.gguf" in page
    grown = logged_in.post("/admin/workers/pool",
                           data={"csrf_token": csrf, "hostname": WORKER, "delta": "1"})
    assert grown.status_code == 303 and grown.headers["location"].endswith("notice=pool")
    shrunk = logged_in.post("/admin/workers/pool",
                            data={"csrf_token": csrf, "hostname": WORKER, "delta": "-2"})
    assert shrunk.status_code == 303
    assert control.calls == [("grow", 1, [WORKER]), ("shrink", 2, [WORKER])]
    for bad in ({"hostname": WORKER, "delta": "0"}, {"hostname": WORKER, "delta": "99"},
                {"hostname": WORKER, "delta": "x"}):
        assert logged_in.post("/admin/workers/pool",
                              data={"csrf_token": csrf} | bad).status_code == 422
    assert logged_in.post("/admin/workers/pool", data={
        "csrf_token": csrf, "hostname": "ghost@nowhere", "delta": "1"}).status_code == 404
    entries = AuditLog(store).recent(10, action="pool_grow")
    assert entries and entries[0].target == WORKER and entries[0].details["by"] == 1
    workers = logged_in.get("/admin/api/workers").json()["workers"]
    assert workers[0]["hostname"] == WORKER and workers[0]["pool_size"] == 1


def test_dashboard_numbers(logged_in: TestClient, store: Any, app: FastAPI,
                           server: fakeredis.FakeServer) -> None:
    assert 'id="chart-messages"' in logged_in.get("/admin").text
    client = fakeredis.FakeRedis(server=server)
    client.rpush(app.state.web.backend.celery_app.conf.task_default_queue, "a", "b")
    for platform, ttft in (("web", 0.2), ("web", 0.4), ("slack", 0.3)):
        live_stats.record(client, TurnStats(
            platform=platform, workspace="default", channel="c", user_id="u", messages=1,
            generated=True, queue_wait_s=0.01, ttft_s=ttft, total_s=1.0, prompt_tokens=30,
            completion_tokens=20, finish_reason="stop"))
    moderation_event(store, category="S10")
    moderation_event(store, category="S10")
    moderation_event(store, category="PII", action="mask")
    data = logged_in.get("/admin/api/dashboard").json()
    assert data["queue_depth"] == 2
    assert [w["hostname"] for w in data["workers"]] == [WORKER]
    assert data["workers"][0]["active"][0]["name"] == "assistant.answer_conversation"
    stats = data["stats"]
    assert stats["messages"] == 3 and set(stats["messages_per_minute"]) == {"web", "slack"}
    assert stats["ttft_p50_s"] == pytest.approx(0.3)
    assert stats["tokens_per_second"] is not None and stats["tokens_per_second"] > 0
    assert data["safety"] == {"S10": 2, "PII": 1}


def test_settings_are_shown_with_secrets_masked(logged_in: TestClient) -> None:
    page = logged_in.get("/admin/settings").text
    assert "ADMIN_PASSWORD" in page and "ADMIN_SESSION_SECRET" in page
    assert PASSWORD not in page and "test-session-secret" not in page
    assert "**********" in page and "ASSISTANT_MAX_TOKENS" in page


def test_admins_see_memory_counts_never_contents(logged_in: TestClient, store: Any) -> None:
    from assistant.store.memories import Memories, Memory

    with store.session() as session:  # PostgreSQL's database is shared by the run's tests
        session.execute(sa.delete(Memory))
    memories = Memories(store)
    memories.add(("telegram", "default", "42"), "my hidden diagnosis", b"\0" * 8, "m")
    memories.add(("web", "default", "ada"), "my quiet hobby", b"\0" * 8, "m")
    page = logged_in.get("/admin/settings").text
    assert "diagnosis" not in page and "hobby" not in page
    assert "telegram 1" in page and "web 1" in page and "2 people" in page
    memories.delete_all([("telegram", "default", "42"), ("web", "default", "ada")])


def test_the_audit_log_page(logged_in: TestClient, store: Any) -> None:
    AuditLog(store).record("someone-else", "ban_user", f"web:default:{SCRIPT}", {"why": IMG})
    page = logged_in.get("/admin/audit").text
    assert 'data-action="login"' in page and 'data-action="ban_user"' in page
    assert SCRIPT not in page and IMG not in page
    only = logged_in.get("/admin/audit", params={"action": "ban_user"}).text
    assert 'data-action="login"' not in only and 'data-action="ban_user"' in only
    by_actor = logged_in.get("/admin/audit", params={"actor": "root-admin"}).text
    assert 'data-action="login"' in by_actor and 'data-action="ban_user"' not in by_actor
