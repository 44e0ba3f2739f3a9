"""Admins and people's memories: counts only unless the policy allows contents; then every view
of one person's memories is in the audit log, and the page escapes what people wrote."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from assistant.store.audit import AuditLog
from assistant.store.memories import Memories, Memory
from tests.admin.conftest import USERNAME, admin_settings, build_app, log_in

SCRIPT = "<script>alert(1)</script>"


def add_memories(store: Any) -> None:
    with store.session() as session:
        session.execute(sa.delete(Memory))
    memories = Memories(store)
    memories.add(("telegram", "default", "42"), f"my hidden diagnosis {SCRIPT}", b"\0" * 8, "m")
    memories.add(("telegram", "default", "42"), "I'm a nurse.", b"\0" * 8, "m", automatic=True)
    memories.add(("web", "default", "ada"), "my quiet hobby", b"\0" * 8, "m")


@pytest.fixture
def allowed(tmp_path: Path) -> Iterator[tuple[TestClient, Any]]:
    settings = admin_settings(tmp_path, ASSISTANT_LONGTERM_ADMIN_CONTENTS="true")
    app, _ = build_app(settings, fakeredis.FakeServer())
    with TestClient(app, follow_redirects=False) as http:
        assert log_in(http).status_code == 303
        yield http, app.state.admin.store


def test_policy_off_counts_only(logged_in: TestClient, store: Any) -> None:
    add_memories(store)
    page = logged_in.get("/admin/settings").text
    assert "diagnosis" not in page and "nurse" not in page
    assert "noticed automatically 1" in page and "memory-contents-link" not in page
    refused = logged_in.get("/admin/memories",
                            params={"platform": "telegram", "user": "42"})
    assert refused.status_code == 403 and "diagnosis" not in refused.text
    assert "ASSISTANT_LONGTERM_ADMIN_CONTENTS" in refused.text
    assert not [e for e in AuditLog(store).recent() if e.action == "view_memories"]


def test_contents_when_allowed_each_view_audited(allowed: tuple[TestClient, Any]) -> None:
    http, store = allowed
    add_memories(store)
    assert "memory-contents-link" in http.get("/admin/settings").text
    form = http.get("/admin/memories")
    assert form.status_code == 200 and "diagnosis" not in form.text  # no one asked: no audit
    assert not [e for e in AuditLog(store).recent() if e.action == "view_memories"]

    for _ in range(2):
        page = http.get("/admin/memories", params={"platform": "telegram", "user": "42"})
        assert page.status_code == 200
        assert "my hidden diagnosis" in page.text and SCRIPT not in page.text
        assert "noticed" in page.text and "hobby" not in page.text  # only that person's
    views = [e for e in AuditLog(store).recent() if e.action == "view_memories"]
    assert len(views) == 2
    assert all(e.actor == USERNAME and e.target == "telegram:default:42"
               and e.details == {"memories": 2} for e in views)


def test_the_page_needs_a_session(allowed: tuple[TestClient, Any], tmp_path: Path) -> None:
    settings = admin_settings(tmp_path, ASSISTANT_LONGTERM_ADMIN_CONTENTS="true")
    app, _ = build_app(settings, fakeredis.FakeServer())
    with TestClient(app, follow_redirects=False) as anonymous:
        response = anonymous.get("/admin/memories", params={"platform": "telegram",
                                                            "user": "42"})
    assert response.status_code == 303 and "/admin/login" in response.headers["location"]
