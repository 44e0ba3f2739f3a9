"""Company sign-in in headless Chromium, end to end: a real OpenID Connect provider process
(the PyPI package oidc-provider-mock) on 127.0.0.1, the full stack (Valkey, a worker, SmolLM2),
and the chat page. Sign in, chat, sign out; a second person cannot open the first one's
conversation; a forged state, a refusal at the provider and an expired ID token end on a clear
page with nobody created. (Wrong issuer, audience and nonce: tests/identity/test_id_tokens.py.)
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from assistant.store import connect_store
from assistant.store.audit import AuditLog
from assistant.store.people import People
from tests.auxil.stack import Stack, free_port
from tests.browser.test_chat_page import (
    DONE,
    INPUT,
    REPLY_TIMEOUT_MS,
    SCREENSHOTS,
    SEND,
    USER,
)
from tests.conftest import ARTIFACTS

pytestmark = [pytest.mark.browser, pytest.mark.integration]

CLIENT_ID, CLIENT_SECRET = "assistant-web", "test-client-secret-0123"
ADMIN_GROUP = "assistant-admins"


@contextmanager
def provider(name: str, *options: str) -> Iterator[str]:
    """An oidc-provider-mock process on 127.0.0.1; yields its issuer URL."""
    port = free_port()
    log_path = ARTIFACTS / "logs" / f"oidc-{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "oidc_provider_mock", "--host", "127.0.0.1", "--port",
             str(port), "--require-nonce", *options], stdout=log, stderr=subprocess.STDOUT)
    issuer = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{issuer}/.well-known/openid-configuration").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, log_path.read_text()[-2000:]
            assert time.monotonic() < deadline, "the OIDC provider did not start"
            time.sleep(0.2)
        yield issuer
    finally:
        process.terminate()
        process.wait(timeout=10)


def add_user(issuer: str, sub: str, name: str, groups: list[str]) -> None:
    response = httpx.put(f"{issuer}/users/{sub}", json={
        "email": f"{sub}@example.com", "name": name, "preferred_username": sub,
        "groups": groups})
    assert response.status_code == 204


def stack_env(issuer: str) -> dict[str, str]:
    return {"OIDC_ISSUER": issuer, "OIDC_CLIENT_ID": CLIENT_ID,
            "OIDC_CLIENT_SECRET": CLIENT_SECRET, "OIDC_ADMIN_GROUP": ADMIN_GROUP,
            "ADMIN_SESSION_SECRET": "test-session-secret-0123456789"}


@pytest.fixture(scope="module")
def issuer() -> Iterator[str]:
    with provider("main") as url:
        add_user(url, "alice", "Alice Example", ["staff", ADMIN_GROUP])
        add_user(url, "bob", "Bob Example", ["staff"])
        yield url


def people_count(stack: Stack) -> int:
    store = connect_store(stack.env["DATABASE_URL"])
    try:
        return len(People(store).list())
    finally:
        store.engine.dispose()


def sign_in(page: Page, stack: Stack, sub: str) -> None:
    page.goto(stack.url)
    page.wait_for_url("**/auth/login**")  # the chat page sends strangers to sign in
    page.get_by_test_id("signin-oidc").click()
    page.get_by_placeholder("sub").fill(sub)
    page.get_by_role("button", name="Authorize", exact=True).click()
    page.wait_for_url(f"{stack.url}/")
    expect(page.get_by_test_id("account")).to_be_visible()
    expect(page.locator("body[data-ready='true']")).to_have_count(1)


def test_sign_in_chat_sign_out_and_privacy(issuer: str, browser: Browser,
                                           make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(**stack_env(issuer))
    stack.start_worker("w1")
    stack.start_web()
    alice_context = browser.new_context()
    alice = alice_context.new_page()
    sign_in(alice, stack, "alice")
    expect(alice.get_by_test_id("account-name")).to_have_text("Alice Example")
    expect(alice.get_by_test_id("local-mode")).to_be_hidden()
    alice.fill(INPUT, "Hello from Alice")
    alice.click(SEND)
    expect(alice.locator(DONE)).to_have_count(1, timeout=REPLY_TIMEOUT_MS)
    conversation_id = alice.evaluate("localStorage.getItem('assistant.conversationId')")
    assert conversation_id
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    alice.screenshot(path=str(SCREENSHOTS / "signin-chat.png"))
    # A reload shows the conversation again: it is hers.
    alice.reload()
    expect(alice.locator(USER)).to_have_count(1)

    bob_context = browser.new_context()
    bob = bob_context.new_page()
    sign_in(bob, stack, "bob")
    status = bob.evaluate("id => fetch(`/api/conversations/${id}`).then(r => r.status)",
                          conversation_id)
    assert status == 404
    # Even with her conversation id in his browser's storage, his page shows nothing of hers.
    bob.evaluate("id => localStorage.setItem('assistant.conversationId', id)", conversation_id)
    bob.reload()
    expect(bob.locator("body[data-ready='true']")).to_have_count(1)
    expect(bob.locator(USER)).to_have_count(0)
    deleted = bob.evaluate("""id => fetch(`/api/conversations/${id}`, {method: 'DELETE'})
                              .then(r => r.status)""", conversation_id)
    assert deleted == 403  # no CSRF token: refused before anything else
    bob_context.close()

    # Alice is an admin by her group claim: she opens the panel as herself.
    alice.goto(f"{stack.url}/admin/sso")
    alice.wait_for_url(f"{stack.url}/admin")
    expect(alice.get_by_test_id("who")).to_have_text("alice")
    alice.goto(stack.url)
    expect(alice.locator(USER)).to_have_count(1)
    alice.get_by_test_id("sign-out").click()
    alice.wait_for_url("**/auth/login?notice=signed-out")
    expect(alice.get_by_test_id("signin-notice")).to_be_visible()
    status = alice.evaluate("id => fetch(`/api/conversations/${id}`).then(r => r.status)",
                            conversation_id)
    assert status == 401
    alice_context.close()

    store = connect_store(stack.env["DATABASE_URL"])
    handles = sorted(person.handle for person in People(store).list())
    logins = [(entry.actor, entry.action) for entry in AuditLog(store).recent()]
    store.engine.dispose()
    assert handles == ["alice", "bob"]
    assert ("alice", "login") in logins  # the panel's audit log names her


def forge_state(url: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query["state"] = "forged-" + query["state"][:10]
    return urlunsplit(parts._replace(query=urlencode(query)))


def test_bad_sign_ins_end_on_a_clear_page_and_create_nobody(
        issuer: str, browser: Browser, make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(**stack_env(issuer))
    stack.start_web()  # no worker: nobody gets as far as chatting
    context = browser.new_context()
    page = context.new_page()

    # A forged state: the provider sends the browser back with a state we never issued.
    page.goto(f"{stack.url}/auth/login")
    page.get_by_test_id("signin-oidc").click()
    page.wait_for_url(f"{issuer}/**")
    page.goto(forge_state(page.url))
    page.get_by_placeholder("sub").fill("mallory")
    page.get_by_role("button", name="Authorize", exact=True).click()
    expect(page.get_by_test_id("signin-failed")).to_contain_text("state")
    page.screenshot(path=str(SCREENSHOTS / "signin-forged-state.png"))

    # The person refuses at the provider.
    page.goto(f"{stack.url}/auth/login")
    page.get_by_test_id("signin-oidc").click()
    page.get_by_role("button", name="Deny").click()
    expect(page.get_by_test_id("signin-failed")).to_contain_text("access_denied")

    # A callback replayed after it was used: the state works once.
    page.goto(f"{stack.url}/auth/login")
    page.get_by_test_id("signin-oidc").click()
    page.get_by_placeholder("sub").fill("mallory")
    with page.expect_response(lambda r: "/auth/oidc/callback" in r.url) as first:
        page.get_by_role("button", name="Authorize", exact=True).click()
    callback = first.value.url
    page.wait_for_url(f"{stack.url}/")
    page.context.clear_cookies()
    page.goto(callback)
    expect(page.get_by_test_id("signin-failed")).to_be_visible()
    context.close()
    assert people_count(stack) == 1  # mallory, from the one good sign-in


def test_an_expired_id_token_ends_on_a_clear_page(browser: Browser,
                                                  make_stack: Callable[..., Stack]) -> None:
    # The provider issues tokens that expired two minutes before they were made (beyond our
    # 60 s leeway for clock skew).
    with provider("expired", "--token-max-age", "-180") as expired_issuer:
        stack = make_stack(**stack_env(expired_issuer))
        stack.start_web()
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{stack.url}/auth/login")
        page.get_by_test_id("signin-oidc").click()
        page.get_by_placeholder("sub").fill("late")
        page.get_by_role("button", name="Authorize", exact=True).click()
        expect(page.get_by_test_id("signin-failed")).to_contain_text("expired")
        context.close()
        assert people_count(stack) == 0
