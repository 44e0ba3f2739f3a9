"""The admin panel's Knowledge page in Chromium, against a real worker and the real model: an
admin uploads a Markdown file, watches the worker index it, attaches the collection to the web
chat, and a question asked there is answered with a citation of that file; deleting the
document takes its citation away again."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import httpx
from playwright.sync_api import Page, expect

from tests.auxil.stack import Stack
from tests.browser.test_admin import log_in, page, screenshot, stack  # noqa: F401
from tests.browser.test_chat_page import send_and_wait

DOCUMENT = """# Parking policy

## Bicycles

Bicycles are parked in the blue cage behind building K. The cage code is changed every month
and posted on the kitchen board.

## Cars

Visitor cars use the three spaces marked V near the main entrance.
"""


def ask(stack: Stack, text: str) -> dict[str, object]:  # noqa: F811
    response = httpx.post(f"{stack.url}/api/chat", json={
        "text": text, "user_id": "kb-reader", "conversation_id": uuid.uuid4().hex},
        timeout=120)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_upload_index_attach_cite_then_delete(page: Page, stack: Stack,  # noqa: F811
                                              tmp_path: Path) -> None:
    collection = f"facilities-{uuid.uuid4().hex[:6]}"
    source = tmp_path / "parking-policy.md"
    source.write_text(DOCUMENT)
    log_in(page)
    page.goto("/admin/knowledge")
    page.fill('[data-testid="kb-collection"]', collection)
    page.set_input_files('[data-testid="kb-files"]', str(source))
    page.click('[data-testid="kb-upload-button"]')
    expect(page).to_have_url(re.compile(r"/admin/knowledge\?notice=kb-queued$"))
    row = page.locator('[data-testid="kb-document-row"]', has_text="parking-policy")
    deadline = time.monotonic() + 120  # the page reloads itself while the worker indexes
    while row.get_attribute("data-status") != "ready":
        assert row.get_attribute("data-status") != "failed", row.inner_text()
        assert time.monotonic() < deadline, row.inner_text()
        time.sleep(1)
        page.goto("/admin/knowledge")
    assert int(row.locator("td").nth(3).inner_text()) >= 1  # its chunks

    attach = page.locator('[data-testid="kb-collection-row"]', has_text=collection)
    attach.locator('[data-testid="kb-place"]').fill("web")
    attach.locator('[data-testid="kb-attach"]').click()
    expect(page.locator('[data-testid="kb-collection-row"]', has_text=collection)
           .locator("code", has_text="web")).to_be_visible()
    screenshot(page, "admin-knowledge.png")

    answered = ask(stack, "Where are bicycles parked?")
    titles = [str(c.get("title", "")) + " " + str(c.get("source", ""))  # type: ignore[union-attr]
              for c in answered["citations"]]  # type: ignore[union-attr]
    assert any("Parking policy" in t or "parking-policy" in t for t in titles), answered

    # The web chat shows the citation under the reply, as text (never as markup).
    page.goto("/")
    send_and_wait(page, "Where are bicycles parked?")
    cited = page.locator('[data-testid="citations"]').last
    expect(cited).to_contain_text("Parking policy")
    screenshot(page, "chat-citations.png")

    page.goto("/admin/knowledge")
    page.locator('[data-testid="kb-document-row"]', has_text="parking-policy").locator(
        '[data-testid="kb-delete"]').click()  # the confirm dialog is accepted by the fixture
    expect(page.locator('[data-testid="kb-document-row"]', has_text="parking-policy")
           ).to_have_count(0)
    again = ask(stack, "Where are bicycles parked?")
    assert again["citations"] == [], again
