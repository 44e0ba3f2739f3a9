"""The web chat page in headless Chromium, against the full stack (Valkey, worker, SmolLM2).

The model is tiny and answers nonsense: the tests assert on the page's behaviour (bubbles, states,
streaming, storage, errors), never on the wording of a reply.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Route, expect

from tests.conftest import ARTIFACTS

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
SCREENSHOTS = ARTIFACTS / "screenshots"
REPLY_TIMEOUT_MS = 90_000

INPUT = '[data-testid="message-input"]'
SEND = '[data-testid="send-button"]'
NEW = '[data-testid="new-conversation"]'
MESSAGE = '[data-testid="messages"] [data-testid="message"]'
USER = f'{MESSAGE}[data-role="user"]'
ASSISTANT = f'{MESSAGE}[data-role="assistant"]'
DONE = f'{ASSISTANT}[data-state="done"]'
TEXT = '[data-testid="message-text"]'
ERROR = '[data-testid="error"]'
CONVERSATION_KEY = "assistant.conversationId"

# Records the last assistant message on every DOM change of the list: its state, whether the
# typing dots show, the raw streamed text's length and the rendered text's length.
WATCH_STREAM = """() => {
  window.samples = [];
  const list = document.querySelector('[data-testid="messages"]');
  const record = () => {
    const items = list.querySelectorAll('[data-testid="message"][data-role="assistant"]');
    const last = items[items.length - 1];
    if (!last) return;
    window.samples.push({
      state: last.dataset.state,
      typing: Boolean(last.querySelector('[data-testid="typing"]')),
      raw: (last.dataset.text || '').length,
      shown: last.querySelector('[data-testid="message-text"]').textContent.length,
    });
  };
  new MutationObserver(record).observe(list, {
    subtree: true, childList: true, characterData: true,
    attributes: true, attributeFilter: ['data-state', 'data-text'],
  });
}"""


@pytest.fixture
def page(browser: Browser, web_url: str) -> Iterator[Page]:
    """A fresh browser profile (empty localStorage) on the chat page, stored conversation shown."""
    context = browser.new_context(base_url=web_url, viewport={"width": 1100, "height": 820})
    page = context.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    open_page(page)
    yield page
    context.close()
    assert page_errors == [], f"uncaught errors in the page: {page_errors}"


def open_page(page: Page) -> None:
    page.goto("/")
    expect(page.locator("body[data-ready=true]")).to_have_count(1)


def send(page: Page, text: str) -> None:
    page.fill(INPUT, text)
    page.press(INPUT, "Enter")


def send_and_wait(page: Page, text: str) -> None:
    answered = page.locator(DONE).count()
    send(page, text)
    expect(page.locator(DONE)).to_have_count(answered + 1, timeout=REPLY_TIMEOUT_MS)


def conversation_id(page: Page) -> str | None:
    value: str | None = page.evaluate(f"localStorage.getItem({json.dumps(CONVERSATION_KEY)})")
    return value


def shown_messages(page: Page) -> list[tuple[str, str]]:
    items = page.locator(MESSAGE)
    return [(items.nth(i).get_attribute("data-role") or "", items.nth(i).locator(TEXT).inner_text())
            for i in range(items.count())]


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    page.screenshot(path=str(path), animations="disabled")
    return path


def test_composer_sends_on_enter_only(page: Page) -> None:
    box = page.locator(INPUT)
    expect(box).to_be_focused()
    expect(page.locator(SEND)).to_be_disabled()
    height = box.bounding_box()["height"]  # type: ignore[index]
    box.type("line one")
    expect(page.locator(SEND)).to_be_enabled()
    box.press("Shift+Enter")
    box.type("line two")
    box.press("Shift+Enter")
    box.type("line three")
    expect(box).to_have_value("line one\nline two\nline three")
    assert box.bounding_box()["height"] > height  # type: ignore[index]  # the box grew
    expect(page.locator(MESSAGE)).to_have_count(0)
    page.fill(INPUT, "   ")
    expect(page.locator(SEND)).to_be_disabled()


def test_reply_streams_in_token_by_token(page: Page) -> None:
    page.evaluate(WATCH_STREAM)
    send(page, "Write a long story about the sea.")

    expect(page.locator(USER)).to_have_count(1)
    expect(page.locator(USER).locator(TEXT)).to_have_text("Write a long story about the sea.")
    expect(page.locator(INPUT)).to_have_value("")
    reply = page.locator(ASSISTANT)
    expect(reply).to_have_count(1)
    expect(reply).to_have_attribute("data-state", "done", timeout=REPLY_TIMEOUT_MS)
    assert reply.locator(TEXT).inner_text().strip(), "the finished reply is empty"
    expect(reply.locator('[data-testid="typing"]')).to_have_count(0)
    expect(page.locator(SEND)).to_be_disabled()  # done, but the box is empty

    samples: list[dict[str, Any]] = page.evaluate("window.samples")
    streaming = [s for s in samples if s["state"] == "streaming"]
    assert streaming and streaming[0]["typing"] and streaming[0]["raw"] == 0, (
        "the typing indicator shows before the first token")
    raw = [s["raw"] for s in streaming if s["raw"]]
    assert len(set(raw)) >= 3 and raw == sorted(raw), f"the text did not stream in: {raw}"
    shown = {s["shown"] for s in streaming if s["shown"]}
    assert len(shown) >= 2, f"the bubble was not redrawn while streaming: {shown}"
    assert samples[-1]["state"] == "done"
    assert conversation_id(page)


def test_reload_shows_the_same_conversation(page: Page) -> None:
    send_and_wait(page, "Hi there")
    send_and_wait(page, "Tell me one more thing, please.")
    before = shown_messages(page)
    assert [role for role, _ in before] == ["user", "assistant", "user", "assistant"]
    assert all(text.strip() for _, text in before)
    kept = conversation_id(page)

    page.reload()
    expect(page.locator("body[data-ready=true]")).to_have_count(1)
    expect(page.locator(MESSAGE)).to_have_count(4)
    assert shown_messages(page) == before
    assert conversation_id(page) == kept
    expect(page.locator("#welcome")).to_be_hidden()
    path = screenshot(page, "chat-conversation.png")
    assert path.stat().st_size > 10_000


def test_new_conversation_starts_fresh(page: Page) -> None:
    send_and_wait(page, "Remember the word apple.")
    first = conversation_id(page)
    assert first

    page.click(NEW)
    expect(page.locator(MESSAGE)).to_have_count(0)
    expect(page.locator("#welcome")).to_be_visible()
    expect(page.locator(INPUT)).to_be_focused()
    assert conversation_id(page) is None
    # The old conversation's memory is freed on the server.
    deadline = time.monotonic() + 10
    while page.request.get(f"/api/conversations/{first}").status != 404:
        assert time.monotonic() < deadline, "the old conversation was not deleted"
        time.sleep(0.1)

    send_and_wait(page, "What word did I ask you to remember?")
    second = conversation_id(page)
    assert second and second != first
    expect(page.locator(MESSAGE)).to_have_count(2)
    stored = page.request.get(f"/api/conversations/{second}").json()
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant"]
    page.reload()
    expect(page.locator("body[data-ready=true]")).to_have_count(1)
    expect(page.locator(MESSAGE)).to_have_count(2)


def test_too_long_message_is_refused_before_sending(page: Page) -> None:
    chat_requests: list[str] = []
    page.on("request", lambda r: chat_requests.append(r.url) if "/api/chat" in r.url else None)
    text = "x" * 4001
    page.fill(INPUT, text)
    counter = page.locator('[data-testid="char-count"]')
    expect(counter).to_have_text("4,001 / 4,000")
    expect(counter).to_have_class("char-count over")

    page.press(INPUT, "Enter")
    expect(page.locator(ERROR)).to_be_visible()
    expect(page.locator(ERROR)).to_contain_text("4,001 characters; the limit is 4,000")
    expect(page.locator(INPUT)).to_have_value(text)
    expect(page.locator(MESSAGE)).to_have_count(0)
    assert chat_requests == []
    screenshot(page, "chat-too-long.png")


def test_server_refusal_keeps_the_text(page: Page) -> None:
    """When the server's limit is lower than the page's, its 413 is shown the same way."""
    page.evaluate(f"document.querySelector('{INPUT}').dataset.maxChars = '100000'")
    text = "y" * 4001
    with page.expect_response("**/api/chat") as answer:
        send(page, text)
    assert answer.value.status == 413
    expect(page.locator(ERROR)).to_be_visible()
    expect(page.locator(ERROR)).to_contain_text("too long (the limit is 4,000 characters)")
    expect(page.locator(INPUT)).to_have_value(text)
    expect(page.locator(MESSAGE)).to_have_count(0)
    expect(page.locator(SEND)).to_be_enabled()


def test_busy_server_shows_a_friendly_error_and_the_retry_is_answered_once(page: Page) -> None:
    bodies: list[dict[str, Any]] = []

    def busy_once(route: Route) -> None:
        bodies.append(route.request.post_data_json or {})
        if len(bodies) == 1:
            route.fulfill(status=503, content_type="application/json",
                          body=json.dumps({"error": {"message": "Redis is unavailable",
                                                     "type": "unavailable", "code": 503}}))
        else:
            route.continue_()

    page.route("**/api/chat", busy_once)
    send(page, "Are you there?")
    expect(page.locator(ERROR)).to_contain_text(
        "The assistant is busy or offline, try again in a moment.")
    expect(page.locator(INPUT)).to_have_value("Are you there?")
    expect(page.locator(MESSAGE)).to_have_count(0)
    screenshot(page, "chat-busy.png")

    page.press(INPUT, "Enter")
    expect(page.locator(DONE)).to_have_count(1, timeout=REPLY_TIMEOUT_MS)
    expect(page.locator(ERROR)).to_be_hidden()
    assert len(bodies) == 2
    assert bodies[1]["message_id"] == bodies[0]["message_id"]  # the server dedupes a retry
    assert bodies[1]["text"] == "Are you there?" and bodies[1]["stream"] is True


def sse_body(*events: tuple[str, dict[str, Any]]) -> str:
    return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)


def test_reply_markdown_is_rendered_as_text_never_as_html(page: Page) -> None:
    """A reply's markup is shown, not run: only the page's own markdown makes elements."""
    reply = ("Here is **bold** and `x < y`.\n\n<img src=x onerror=\"window.pwned=1\">"
             "<b>not bold</b>\n\n```python\nprint('<script>')\n```\n\n- one\n- two")
    body = sse_body(("token", {"text": "Here is "}), ("token", {"text": "**bold**"}),
                    ("done", {"conversation_id": "c1", "message_id": "r1", "reply": reply}))
    page.route("**/api/chat", lambda route: route.fulfill(
        status=200, content_type="text/event-stream", body=body))
    send(page, "Show me some formatting")
    answer = page.locator(DONE).locator(TEXT)
    expect(answer).to_have_count(1)
    expect(answer.locator("strong")).to_have_text("bold")
    expect(answer.locator("code.inline-code")).to_have_text("x < y")
    expect(answer.locator("pre code")).to_have_text("print('<script>')")
    expect(answer.locator("li")).to_have_count(2)
    expect(answer).to_contain_text('<img src=x onerror="window.pwned=1"><b>not bold</b>')
    expect(answer.locator("img, b, script")).to_have_count(0)
    assert page.evaluate("window.pwned") is None
    screenshot(page, "chat-markdown.png")


def test_error_event_during_the_reply_offers_a_retry(page: Page) -> None:
    calls: list[str] = []

    def fail_then_answer(route: Route) -> None:
        calls.append((route.request.post_data_json or {})["message_id"])
        events: list[tuple[str, dict[str, Any]]] = [("token", {"text": "Partly"}),
                  ("error", {"error": {"message": "no reply within 90 s", "type": "timeout",
                                       "code": 504}, "status": 504})]
        if len(calls) > 1:
            events = [("done", {"conversation_id": "c1", "message_id": "r1", "reply": "Fine."})]
        route.fulfill(status=200, content_type="text/event-stream", body=sse_body(*events))

    page.route("**/api/chat", fail_then_answer)
    send(page, "Slow question")
    reply = page.locator(ASSISTANT)
    expect(reply).to_have_attribute("data-state", "error")
    expect(reply).to_contain_text("The assistant is busy or offline, try again in a moment.")
    expect(page.locator(USER)).to_have_count(1)  # the server took the message: it stays
    reply.get_by_role("button", name="Try again").click()
    expect(reply).to_have_attribute("data-state", "done")
    expect(reply.locator(TEXT)).to_have_text("Fine.")
    expect(page.locator(MESSAGE)).to_have_count(2)
    assert len(calls) == 2 and calls[0] == calls[1]


def test_reload_while_the_reply_streams_resumes_it_once(page: Page) -> None:
    send(page, "Write a long story about a lighthouse.")
    expect(page.locator(f'{ASSISTANT}[data-state="streaming"]')).to_have_count(1)
    kept = conversation_id(page)
    page.reload()
    expect(page.locator("body[data-ready=true]")).to_have_count(1)
    expect(page.locator(MESSAGE)).to_have_count(2)
    expect(page.locator(DONE)).to_have_count(1, timeout=REPLY_TIMEOUT_MS)
    assert conversation_id(page) == kept
    reply = page.locator(DONE).locator(TEXT).inner_text()
    stored = page.request.get(f"/api/conversations/{kept}").json()["messages"]
    assert [m["role"] for m in stored] == ["user", "assistant"]  # answered once, not twice
    assert stored[1]["text"].strip() and reply.strip()
