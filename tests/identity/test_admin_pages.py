"""The panel's Keys and People pages, in-process: what an admin makes is shown once, revoked at
once, and every change names the admin in the audit log."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from assistant.store import Store
from assistant.store.audit import AuditLog
from assistant.store.keys import ApiKeys
from assistant.store.people import People

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def log_in(http: TestClient) -> str:
    page = http.get("/admin/login")
    token = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
    response = http.post("/admin/login", data={"csrf_token": token, "username": "root",
                                               "password": "a-real-admin-password"})
    assert response.status_code == 303
    return CSRF.search(http.get("/admin/keys").text).group(1)  # type: ignore[union-attr]


def test_a_key_made_in_the_panel_is_shown_once_and_revoked_at_once(http: TestClient,
                                                                   store: Store) -> None:
    csrf = log_in(http)
    made = http.post("/admin/keys", data={"csrf_token": csrf, "owner": "alice",
                                          "name": "laptop", "rate": "5/minute",
                                          "daily_tokens": "1000"})
    assert made.status_code == 200
    token = re.search(r'data-testid="new-key-token">([^<]+)<', made.text).group(1)  # type: ignore[union-attr]
    assert token not in http.get("/admin/keys").text
    assert http.get("/v1/models", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    [row] = ApiKeys(store).list()
    assert (row.owner, row.rate_limit, row.daily_tokens) == ("alice", "5/minute", 1000)
    bad = http.post("/admin/keys", data={"csrf_token": csrf, "owner": "x", "rate": "often"})
    assert bad.status_code == 422
    assert http.post("/admin/keys/revoke", data={"csrf_token": "wrong", "prefix": row.prefix}
                     ).status_code == 403
    assert http.post("/admin/keys/revoke", data={"csrf_token": csrf, "prefix": row.prefix}
                     ).status_code == 303
    assert http.get("/v1/models", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    actions = {(entry.actor, entry.action, entry.target) for entry in AuditLog(store).recent()}
    assert {("root", "key_created", row.prefix), ("root", "key_revoked", row.prefix)} <= actions


def test_an_invited_person_signs_in_and_an_admin_opens_the_panel_as_themself(
        http: TestClient, store: Store) -> None:
    csrf = log_in(http)
    page = http.post("/admin/people/invite", data={"csrf_token": csrf, "handle": "grace",
                                                   "admin": "on"})
    path = re.search(r'data-testid="invite-path">([^<]+)<', page.text).group(1)  # type: ignore[union-attr]
    assert http.post("/admin/people/link", data={
        "csrf_token": csrf, "handle": "grace", "platform": "slack", "workspace": "T1",
        "user_id": "U9"}).status_code == 303
    assert People(store).person_for("slack", "T1", "U9").handle == "grace"  # type: ignore[union-attr]
    http.cookies.clear()
    form = http.get(path)
    token = CSRF.search(form.text).group(1)  # type: ignore[union-attr]
    assert http.post(path, data={"csrf_token": token, "password": "grace-password-1"}
                     ).status_code == 303
    assert http.get("/auth/session").json()["admin"] is True
    entered = http.get("/admin/sso")
    assert entered.status_code == 303 and entered.headers["location"] == "/admin"
    assert 'data-testid="who">grace<' in http.get("/admin").text
    logins = [(entry.actor, entry.action) for entry in AuditLog(store).recent()]
    assert ("grace", "login") in logins and ("root", "person_invited") in logins


def test_a_person_who_is_not_an_admin_cannot_open_the_panel(http: TestClient,
                                                            store: Store) -> None:
    invite = People(store).invite("henry", "test")
    form = http.get(f"/auth/invite/{invite}")
    token = CSRF.search(form.text).group(1)  # type: ignore[union-attr]
    http.post(f"/auth/invite/{invite}", data={"csrf_token": token,
                                              "password": "henry-password-1"})
    refused = http.get("/admin/sso")
    assert refused.status_code == 403 and "not an admin" in refused.text
    assert http.get("/admin").status_code == 303  # still to the panel's login page
