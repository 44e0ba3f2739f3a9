"""Handing a reply to its platform: shown while it streams, posted exactly once per reply id.

The worker opens a ``ReplyStream`` on the platform's ``Sender`` when a turn starts (Slack and
Telegram post a placeholder, then edit it in place), feeds it the text so far as tokens come,
and finishes it with the stored reply. The reply is stored before ``finish`` is called and a
platform post is claimed by reply id, so a rerun after a crash never posts twice; the platform
message a stream posted is remembered by reply id too, so a rerun edits the same message.
The web needs no sender: its listeners get the pub/sub events.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

import redis

from assistant import keys
from assistant.envelope import Inbound, Reply

log = logging.getLogger(__name__)

DELIVERED_TTL_SECONDS = keys.DELIVERED_TTL_SECONDS


class ReplyStream(Protocol):
    """One reply being shown on a platform."""

    def update(self, text_so_far: str) -> None:
        """The reply so far; must return at once (edit in the background, rate-limited)."""
        ...

    def finish(self, reply: Reply) -> None:
        """Show the final reply (split if too long). Raise to have it retried later.

        Stop background edits first (``ThrottledEditor.close``), so that no streaming edit
        can land after the final one.
        """
        ...

    def close(self) -> None:
        """Stop background work; called after ``finish`` or when the turn failed."""
        ...


class Sender(Protocol):
    """Posts replies where they belong on one platform."""

    def open(self, inbound: Inbound, reply_id: str) -> ReplyStream:
        """Start showing the reply to ``inbound`` (placeholder, typing indicator...)."""
        ...


def claim_delivery(client: redis.Redis, reply_id: str) -> bool:
    """True for the first caller only: that caller posts the reply."""
    return bool(client.set(keys.delivered(reply_id), "1", nx=True,
                           ex=DELIVERED_TTL_SECONDS))


def release_delivery(client: redis.Redis, reply_id: str) -> None:
    """Undo a claim whose delivery failed, so a retry may post it."""
    client.delete(keys.delivered(reply_id))


def remember_platform_message(client: redis.Redis, reply_id: str, ref: str) -> None:
    """Keep the platform's id of the message showing this reply (e.g. a Slack ``ts``)."""
    client.set(keys.platform_message(reply_id), ref, ex=DELIVERED_TTL_SECONDS)


def platform_message(client: redis.Redis, reply_id: str) -> str | None:
    """The platform message a previous run posted for this reply, if any."""
    value = client.get(keys.platform_message(reply_id))
    return value.decode() if isinstance(value, bytes) else value


class ThrottledEditor:
    """Calls ``edit(text)`` from a background thread, at most once per ``interval`` seconds.

    Only the latest text matters: intermediate updates are skipped. ``close`` stops the thread
    after a pending edit finished; the final text is the sender's ``finish`` job.
    """

    def __init__(self, edit: Callable[[str], None], interval: float) -> None:
        self._edit = edit
        self._interval = interval
        self._latest: str | None = None
        self._shown: str | None = None
        self._last_edit_at: float | None = None  # time.monotonic() when the last edit ended
        self._changed = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="reply-editor", daemon=True)
        self._thread.start()

    def update(self, text: str) -> None:
        with self._changed:
            self._latest = text
            self._changed.notify()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._closed and self._latest == self._shown:
                    self._changed.wait()
                if self._closed:
                    return
                text = self._latest
            assert text is not None
            try:
                self._edit(text)
            except Exception:  # a failed intermediate edit is not fatal: finish() retries
                log.warning("streaming edit failed", exc_info=True)
            with self._changed:
                self._shown = text
                self._last_edit_at = time.monotonic()
                self._changed.wait_for(lambda: self._closed, timeout=self._interval)

    def next_edit_at(self) -> float:
        """The ``time.monotonic()`` from which another edit (the final one) keeps the pace."""
        return 0.0 if self._last_edit_at is None else self._last_edit_at + self._interval

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify()
        self._thread.join(timeout=30)
