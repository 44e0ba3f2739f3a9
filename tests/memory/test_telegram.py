"""Telegram end to end against the fake Bot API (real PTB adapter, real worker and model,
real Redis): /remember goes through the worker, /memory and /forget N are answered by the
adapter, in the chat where they were asked."""

from __future__ import annotations

import time

import pytest

from tests.auxil.stack import Stack
from tests.telegram.fake_telegram import FakeTelegram
from tests.telegram.test_end_to_end import polling, polling_fake, private_update

pytestmark = pytest.mark.integration
__all__ = ["polling", "polling_fake"]

USER = 77


def wait_for_text(fake: FakeTelegram, wanted: str, after: int, timeout: float = 300) -> str:
    """The first message or edit in the user's chat, after call number ``after``, holding
    ``wanted``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for call in fake.calls[after:]:
            text = str(call.params.get("text", ""))
            if call.method in ("sendMessage", "editMessageText") and \
                    str(call.params.get("chat_id")) == str(USER) and wanted in text:
                return text
        time.sleep(0.1)
    raise AssertionError(f"{wanted!r} never shown; {[c.params for c in fake.calls[after:]]}")


def test_remember_list_and_forget_on_telegram(polling: Stack,
                                               polling_fake: FakeTelegram) -> None:
    fake = polling_fake
    mark = len(fake.calls)
    fake.queue_update(private_update(fake, "/remember I'm allergic to hazelnuts", USER))
    wait_for_text(fake, "allergic to hazelnuts", mark)

    mark = len(fake.calls)
    fake.queue_update(private_update(fake, "/memory", USER))
    assert "1. I'm allergic to hazelnuts" in wait_for_text(fake, "1. ", mark)

    mark = len(fake.calls)
    fake.queue_update(private_update(fake, "/forget 1", USER))
    wait_for_text(fake, "deleted 1", mark)

    mark = len(fake.calls)
    fake.queue_update(private_update(fake, "/memory", USER))
    wait_for_text(fake, "I don't keep any memories", mark)
