"""The admin panel in headless Chromium against a running stack (Valkey, a real worker with
SmolLM2, the web server, an SQLite store): log in, watch the dashboard move, read and delete a
conversation, change the persona and see the next prompt carry it, ban a user, moderate, resize
a worker's pool. A screenshot of each page lands in test-artifacts/screenshots/.

The model is tiny: assertions are on what the panel shows, what the worker received (the prompt
trace) and what the API answers, never on a reply's wording.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from playwright.sync_api import Browser, Page, expect

from assistant.envelope import ConversationKey
from assistant.live_prompts import traced_versions
from assistant.store import connect_store
from assistant.store.archive import Archive, ArchivedMessage
from assistant.store.models import ModerationEvent
from assistant.store.moderation import ModerationLog
from tests.auxil.stack import Stack
from tests.browser.test_chat_page import (
    DONE,
    MESSAGE,
    NEW,
    REPLY_TIMEOUT_MS,
    SCREENSHOTS,
    TEXT,
    conversation_id,
    send,
    send_and_wait,
)
from tests.conftest import _new_stack

pytestmark = pytest.mark.browser

USERNAME = "ops-admin"
PASSWORD = "a long browser test password"
WAIT_MS = 30_000
WORKER = "w1@test"
# Chromium logs every 4xx answer; a wrong password's 401 is one on purpose.
EXPECTED_STATUS = re.compile(r"status of 401 \(Unauthorized\)")


@pytest.fixture(scope="module")
def stack(redis_server: str, model_path: Path) -> Iterator[Stack]:
    built = _new_stack(redis_server, model_path, "admin-browser", ADMIN_USERNAME=USERNAME,
                       ADMIN_PASSWORD=PASSWORD, ADMIN_SESSION_SECRET="browser-test-secret",
                       ASSISTANT_TRACE_PROMPTS="true", ASSISTANT_WORKER_METRICS_PORT="0")
    try:
        built.start_worker("w1")
        built.start_web()
        yield built
    finally:
        built.close()


@pytest.fixture
def page(browser: Browser, stack: Stack) -> Iterator[Page]:
    """A fresh browser profile; fails the test on any uncaught error or CSP violation."""
    context = browser.new_context(base_url=stack.url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("console", lambda message: problems.append(message.text)
            if message.type == "error" and not EXPECTED_STATUS.search(message.text) else None)
    page.on("dialog", lambda dialog: dialog.accept())  # the panel's "are you sure?" prompts
    yield page
    context.close()
    assert problems == [], f"errors in the page: {problems}"


def log_in(page: Page) -> None:
    page.goto("/admin")
    expect(page).to_have_url(re.compile(r"/admin/login\?next=%2Fadmin$"))
    page.fill('input[name="username"]', USERNAME)
    page.fill('input[name="password"]', PASSWORD)
    page.click('[data-testid="login-button"]')
    expect(page).to_have_url(re.compile(r"/admin$"))
    expect(page.locator('[data-testid="who"]')).to_have_text(USERNAME)


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    page.screenshot(path=str(path), full_page=True, animations="disabled")
    assert path.stat().st_size > 5_000


def chat(stack: Stack, text: str, user_id: str = "web-user",
         conversation: str | None = None) -> httpx.Response:
    body: dict[str, Any] = {"text": text, "user_id": user_id}
    if conversation:
        body["conversation_id"] = conversation
    return httpx.post(f"{stack.url}/api/chat", json=body, timeout=REPLY_TIMEOUT_MS / 1000)


def reload_until(page: Page, selector: str, timeout_s: float = 30) -> None:
    """The worker archives a turn just after delivering it: reload until it shows."""
    deadline = time.monotonic() + timeout_s
    while page.locator(selector).count() == 0:
        assert time.monotonic() < deadline, f"{selector} never appeared on {page.url}"
        time.sleep(0.5)
        page.reload()


def test_login_then_the_dashboard_counters_move(page: Page, stack: Stack) -> None:
    page.goto("/admin/login")
    page.fill('input[name="username"]', USERNAME)
    page.fill('input[name="password"]', "not the password")
    page.click('[data-testid="login-button"]')
    expect(page.locator('[data-testid="login-error"]')).to_have_text(
        "Wrong username or password.")
    screenshot(page, "admin-login.png")

    log_in(page)
    expect(page.locator("body[data-polls]")).to_have_count(1, timeout=WAIT_MS)
    expect(page.locator('[data-testid="workers-online"]')).to_have_text("1", timeout=WAIT_MS)
    expect(page.locator('[data-testid="worker-rows"]')).to_contain_text(WORKER)
    before = int(page.locator('[data-testid="messages-total"]').inner_text())

    for text in ("Hello from the dashboard test.", "And a second message."):
        assert chat(stack, text, user_id="dash-user").status_code == 200
    expect(page.locator('[data-testid="messages-total"]')).to_have_text(
        str(before + 2), timeout=WAIT_MS)
    expect(page.locator('[data-testid="ttft"]')).to_have_text(
        re.compile(r"^\d+\.\d\d s / \d+\.\d\d s$"))
    expect(page.locator('[data-testid="tokens-per-second"]')).to_have_text(
        re.compile(r"^\d+(\.\d)?$"))
    expect(page.locator("#legend-messages")).to_contain_text("web")
    polls = int(page.locator("body").get_attribute("data-polls") or "0")
    # One more sample for the charts (CSP forbids wait_for_function's eval: wait on the DOM).
    expect(page.locator(f'body:not([data-polls="{polls}"])')).to_have_count(1, timeout=WAIT_MS)
    screenshot(page, "admin-dashboard.png")


def test_open_a_conversation_then_delete_it(page: Page, stack: Stack) -> None:
    word = "quokka" + uuid.uuid4().hex[:6]
    answered = chat(stack, f"Tell me about the {word}, please.", user_id="reader")
    assert answered.status_code == 200
    web_id = answered.json()["conversation_id"]
    log_in(page)

    page.goto(f"/admin/conversations?text={word}")
    reload_until(page, '[data-testid="conversation-row"]')
    expect(page.locator('[data-testid="conversation-row"]')).to_have_count(1)
    screenshot(page, "admin-conversations.png")
    page.click('[data-testid="conversation-link"]')
    messages = page.locator('[data-testid="message"]')
    expect(messages).to_have_count(2)
    expect(messages.nth(0)).to_have_attribute("data-role", "user")
    expect(messages.nth(0).locator('[data-testid="message-text"]')).to_have_text(
        f"Tell me about the {word}, please.")
    expect(messages.nth(1)).to_have_attribute("data-role", "assistant")
    assert messages.nth(1).inner_text().strip()
    screenshot(page, "admin-conversation.png")

    with page.expect_download() as download:
        page.click('[data-testid="export"]')
    exported = Path(download.value.path()).read_text(encoding="utf-8")
    assert word in exported

    page.click('[data-testid="delete"]')
    expect(page.locator('[data-testid="notice"]')).to_have_text("The conversation was deleted.")
    page.goto(f"/admin/conversations?text={word}")
    expect(page.locator('[data-testid="no-conversations"]')).to_be_visible()
    # Gone from the workers' memory too: the chat API no longer knows it.
    assert httpx.get(f"{stack.url}/api/conversations/{web_id}").status_code == 404
    page.goto("/admin/audit?action=delete_conversation")
    expect(page.locator('[data-testid="audit-entry"]')).to_have_count(1)
    screenshot(page, "admin-audit.png")


def test_a_persona_change_reaches_the_next_reply(page: Page, stack: Stack) -> None:
    log_in(page)
    page.goto("/admin/persona")
    box = page.locator('[data-testid="persona-text"]')
    shipped = box.input_value()
    assert "{" in shipped  # the placeholders the prompt must keep
    marker = "You are Captain Zebra, who answers like a ship's log."
    box.fill(marker + " " + shipped)
    page.fill('[data-testid="persona-comment"]', "browser test")
    page.click('[data-testid="persona-save"]')
    expect(page.locator('[data-testid="notice"]')).to_have_text("Saved as a new version.")
    version = int(page.locator('[data-testid="current-version"]').inner_text())
    expect(page.locator('[data-testid="persona-version"]')).to_have_count(1)
    screenshot(page, "admin-persona.png")

    reply = chat(stack, "Who are you?", user_id="persona-user")
    assert reply.status_code == 200
    reply_id = reply.json()["message_id"]
    prompt = stack.traced_prompt(reply_id)
    assert prompt[0]["role"] == "system" and marker in prompt[0]["text"]
    client = redis.Redis.from_url(stack.redis_url)
    try:
        assert traced_versions(client, reply_id) == {"system": version}
    finally:
        client.close()

    # Roll back: the shipped text again (as a newer version), and the next prompt has it.
    page.fill('[data-testid="persona-text"]', shipped)
    page.click('[data-testid="persona-save"]')
    expect(page.locator('[data-testid="persona-version"]')).to_have_count(2)
    page.locator(f'[data-version="{version}"] [data-testid="rollback"]').click()
    expect(page.locator('[data-testid="notice"]')).to_contain_text("Rolled back")
    expect(page.locator('[data-testid="persona-text"]')).to_have_value(marker + " " + shipped)
    page.fill('[data-testid="persona-text"]', shipped)
    page.click('[data-testid="persona-save"]')  # leave the shipped text for the other tests
    after = chat(stack, "And now?", user_id="persona-user").json()["message_id"]
    assert marker not in stack.traced_prompt(after)[0]["text"]


def test_a_banned_user_is_refused_until_unbanned(page: Page, stack: Stack) -> None:
    assert chat(stack, "Hi, I am about to be banned.", user_id="mallory").status_code == 200
    log_in(page)
    page.goto("/admin/users?query=mallory")
    reload_until(page, '[data-testid="user-row"][data-user="mallory"]')
    row = page.locator('[data-testid="user-row"][data-user="mallory"]')
    row.locator('[data-testid="ban"]').click()
    expect(page.locator('[data-testid="notice"]')).to_have_text("The user is banned.")
    expect(row.locator('[data-testid="banned"]')).to_be_visible()
    screenshot(page, "admin-users.png")

    refused = chat(stack, "Can I still talk?", user_id="mallory")
    assert refused.status_code == 403
    assert refused.json()["error"]["type"] == "banned"
    assert chat(stack, "Others still can.", user_id="not-mallory").status_code == 200

    row.locator('[data-testid="unban"]').click()
    expect(page.locator('[data-testid="notice"]')).to_have_text("The user is no longer banned.")
    assert chat(stack, "Back again.", user_id="mallory").status_code == 200


def test_moderation_entries_render_as_text_and_can_be_acted_on(page: Page, stack: Stack) -> None:
    store = connect_store(stack.env["DATABASE_URL"])
    payload = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
    ModerationLog(store).record([ModerationEvent(
        platform="web", workspace="default", channel="c-evil", conversation="x" * 32,
        user_id="troll", message_id="m1", direction="input", check_name="toxicity",
        category="S10", action="block", score=0.97, reason="toxic", excerpt=payload)])
    evil = ConversationKey(platform="web", workspace="default", channel="c-evil", user="troll")
    Archive(store).record_turn(evil, [
        ArchivedMessage(message_id="m1", role="user", text=payload, user_id="troll"),
        ArchivedMessage(message_id="r1", role="assistant", text=f"You wrote {payload}")])
    store.engine.dispose()
    log_in(page)

    page.goto("/admin/moderation?user=troll")
    entry = page.locator('[data-testid="moderation-entry"]')
    expect(entry).to_have_count(1)
    expect(entry.locator(".excerpt")).to_have_text(payload)
    expect(entry.locator("img, script")).to_have_count(0)
    entry.locator('[data-testid="review"]').click()
    expect(page.locator('[data-testid="notice"]')).to_have_text("Marked as reviewed.")
    expect(page.locator('[data-testid="reviewed"]')).to_be_visible()
    page.locator('[data-testid="mute"]').click()
    expect(page.locator('[data-testid="notice"]')).to_have_text("The user is muted.")
    screenshot(page, "admin-moderation.png")

    page.goto(f"/admin/conversations/{evil.redis_id}")
    bubbles = page.locator('[data-testid="message-text"]')
    expect(bubbles.nth(0)).to_have_text(payload)
    expect(page.locator('[data-testid="messages"] img, [data-testid="messages"] script')
           ).to_have_count(0)
    assert page.evaluate("window.pwned") is None
    screenshot(page, "admin-conversation-escaped.png")


def test_workers_page_resizes_the_pool(page: Page, stack: Stack) -> None:
    assert chat(stack, "Hello, workers page.", user_id="workers-user").status_code == 200
    log_in(page)
    page.goto("/admin/workers")
    row = page.locator(f'[data-testid="worker"][data-hostname="{WORKER}"]')
    # The pool process that answered has its model loaded, and says so.
    expect(row.locator(".pill.ok")).to_have_text("loaded")
    expect(row.locator('[data-testid="pool-size"]')).to_have_text("1")
    row.locator('[data-testid="pool-grow"]').click()
    expect(page.locator('[data-testid="notice"]')).to_have_text(
        "The worker was asked to resize its pool.")
    deadline = time.monotonic() + 30
    while row.locator('[data-testid="pool-size"]').inner_text() != "2":
        assert time.monotonic() < deadline, "the pool did not grow"
        time.sleep(0.5)
        page.reload()
    screenshot(page, "admin-workers.png")
    row.locator('[data-testid="pool-shrink"]').click()
    expect(page.locator('[data-testid="notice"]')).to_have_text(
        "The worker was asked to resize its pool.")
    page.goto("/admin/audit?action=pool_grow")
    expect(page.locator('[data-testid="audit-entry"]')).to_have_count(1)

    page.goto("/admin/settings")
    table = page.locator('[data-testid="settings"]')
    expect(table).to_contain_text("ADMIN_PASSWORD")
    expect(table).not_to_contain_text(PASSWORD)
    screenshot(page, "admin-settings.png")

    page.click('[data-testid="logout"]')
    expect(page).to_have_url(re.compile(r"/admin/login"))
    page.goto("/admin/workers")
    expect(page).to_have_url(re.compile(r"/admin/login\?next="))


def test_the_chat_page_conversation_shows_in_the_panel(page: Page, stack: Stack) -> None:
    """The chat page at / (its own behaviour is in test_chat_page.py) seen from the panel."""
    page.goto("/")
    expect(page.locator("body[data-ready=true]")).to_have_count(1)
    word = "walrus" + uuid.uuid4().hex[:6]
    send(page, f"Hello {word}!")
    expect(page.locator(f'{MESSAGE}[data-role="assistant"][data-state="streaming"]')
           ).to_have_count(1)
    expect(page.locator(DONE)).to_have_count(1, timeout=REPLY_TIMEOUT_MS)
    send_and_wait(page, "One more line.")
    kept = conversation_id(page)
    page.reload()
    expect(page.locator("body[data-ready=true]")).to_have_count(1)
    expect(page.locator(MESSAGE)).to_have_count(4)
    expect(page.locator(MESSAGE).nth(0).locator(TEXT)).to_have_text(f"Hello {word}!")
    assert conversation_id(page) == kept

    log_in(page)
    page.goto(f"/admin/conversations?text={word}")
    reload_until(page, '[data-testid="conversation-row"]')
    page.click('[data-testid="conversation-link"]')
    reload_until(page, '[data-testid="message"]:nth-child(4)')
    expect(page.locator('[data-testid="message"]')).to_have_count(4)

    page.goto("/")
    expect(page.locator("body[data-ready=true]")).to_have_count(1)
    page.click(NEW)
    expect(page.locator(MESSAGE)).to_have_count(0)
    assert conversation_id(page) is None
