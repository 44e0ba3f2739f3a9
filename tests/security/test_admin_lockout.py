"""Attack: lock the real admin out of the panel (issue 15, item 4).

Every login attempt used to be charged to the username before the password was checked,
whatever the address: five wrong attempts locked the admin out, and one a minute kept them
out. Now only failures count, per address and per username; the per-username limit never
refuses the correct password from a browser or an address the admin logged in from before.
In-process: the real panel on a fake Redis (tests/admin/conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import fakeredis
from fastapi.testclient import TestClient

from integrations.web.admin import auth
from tests.admin.conftest import PASSWORD, USERNAME, admin_settings, build_app, log_in


def client(app: object, address: str) -> TestClient:
    return TestClient(app, follow_redirects=False, client=(address, 1000))  # type: ignore[arg-type]


def test_an_attacker_cannot_lock_the_admin_out_of_a_known_browser(tmp_path: Path) -> None:
    app, _ = build_app(admin_settings(tmp_path), fakeredis.FakeServer())
    with client(app, "198.51.100.10") as admin_browser:
        assert log_in(admin_browser).status_code == 303  # the admin, once, from home
        device = admin_browser.cookies.get(auth.DEVICE_COOKIE, path="/admin")
    assert device
    # A botnet guesses the admin's password from many addresses, far past every limit.
    for number in range(2 * auth.LOGIN_FAILURES_PER_USERNAME.capacity):
        with client(app, f"203.0.113.{number}") as bot:
            assert log_in(bot, USERNAME, f"guess-{number}").status_code in (401, 429)
    # The admin, travelling (a new address), in the browser they used before: let in.
    with client(app, "192.0.2.77") as travelling:
        assert log_in(travelling).status_code == 429  # without the browser's cookie...
        travelling.cookies.set(auth.DEVICE_COOKIE, device, path="/admin")
        assert log_in(travelling).status_code == 303  # ... and with it
    # From home, in a fresh browser: the address is known-good for this username.
    with client(app, "198.51.100.10") as fresh:
        assert log_in(fresh).status_code == 303
    # A stranger with the right password from an unknown place waits (the username limit).
    with client(app, "192.0.2.200") as stranger:
        assert log_in(stranger).status_code == 429


def test_correct_logins_and_attempts_from_elsewhere_cost_nothing(tmp_path: Path) -> None:
    app, _ = build_app(admin_settings(tmp_path), fakeredis.FakeServer())
    # The attack of the issue: one wrong attempt from each of many places, then a pause.
    for number in range(auth.LOGIN_FAILURES_PER_ADDRESS.capacity + 5):
        with client(app, f"203.0.113.{number}") as bot:
            assert log_in(bot, USERNAME, "wrong").status_code == 401
    with client(app, "198.51.100.20") as admin_browser:
        for _ in range(3 * auth.LOGIN_FAILURES_PER_ADDRESS.capacity):  # only failures count
            assert log_in(admin_browser).status_code == 303
            admin_browser.cookies.delete(auth.SESSION_COOKIE, path="/admin")


def test_one_address_guessing_is_stopped_and_only_that_address(tmp_path: Path) -> None:
    app, _ = build_app(admin_settings(tmp_path), fakeredis.FakeServer())
    with client(app, "203.0.113.9") as guesser:
        for number in range(auth.LOGIN_FAILURES_PER_ADDRESS.capacity):
            assert log_in(guesser, USERNAME, f"guess-{number}").status_code == 401
        refused = log_in(guesser, USERNAME, PASSWORD)
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) <= auth.LOGIN_FAILURES_PER_ADDRESS.period_seconds
    with client(app, "198.51.100.30") as admin_browser:
        assert log_in(admin_browser).status_code == 303


def test_a_device_cookie_cannot_pass_as_a_session_or_for_another_user(tmp_path: Path) -> None:
    app, _ = build_app(admin_settings(tmp_path), fakeredis.FakeServer())
    with client(app, "198.51.100.40") as admin_browser:
        assert log_in(admin_browser).status_code == 303
        device = admin_browser.cookies.get(auth.DEVICE_COOKIE, path="/admin")
    assert device
    with client(app, "198.51.100.41") as thief:
        thief.cookies.set(auth.SESSION_COOKIE, device, path="/admin")
        assert thief.get("/admin/api/dashboard").status_code == 401
    # Nor vouch for another username.
    web = app.state.web
    vouched = auth.known_device(web.client, app.state.admin.signer, device)
    assert vouched == auth.username_digest(USERNAME) != auth.username_digest("someone-else")
