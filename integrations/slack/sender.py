"""Posting replies to Slack: a placeholder at once, edited in place as tokens come.

The worker calls ``open`` when a turn starts, ``update`` per token, ``finish`` with the stored
reply (raise → Celery retries the delivery, without generating again) and ``close``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from assistant.delivery import (
    ThrottledEditor,
    platform_message,
    remember_platform_message,
)
from assistant.envelope import Inbound, Reply
from assistant.knowledge.render import with_sources
from assistant.settings import Settings
from integrations.slack.convert import MESSAGE_LIMIT, preview, split_message, to_mrkdwn

log = logging.getLogger(__name__)

PLACEHOLDER = ":hourglass_flowing_sand: _thinking…_"
FALLBACK_ERROR = "Sorry, something went wrong on my side. Please try again in a moment."
# Slack allows about one message per second per channel, bursts tolerated
# (docs.slack.dev/apis/web-api/rate-limits, "chat.postMessage"); edits count the same here.
EDIT_INTERVAL_SECONDS = 1.0
# How long ``finish`` waits out 429s in place before it raises and lets Celery retry later:
# a worker blocked longer than this is worse than a late reply (NOTES: prefer Celery's retry).
MAX_RATE_LIMIT_WAIT_SECONDS = 30.0


class SlackRateLimited(Exception):
    """Slack said 429 for longer than we wait in place; the delivery is retried later."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limited by Slack for {retry_after:.0f} s")
        self.retry_after = retry_after


def retry_after(error: SlackApiError) -> float | None:
    """Seconds to wait, when the error is a 429; None for other errors."""
    response = error.response
    if getattr(response, "status_code", None) != 429:
        return None
    headers: dict[str, Any] = getattr(response, "headers", {}) or {}
    value = headers.get("Retry-After") or headers.get("retry-after") or "1"
    if isinstance(value, list):
        value = value[0]
    try:
        return max(float(value), 0.0)
    except ValueError:
        return 1.0


class SlackSender:
    """Opens a ``SlackReplyStream`` per reply."""

    def __init__(self, web: WebClient, client: redis.Redis,
                 interval: float = EDIT_INTERVAL_SECONDS,
                 max_wait: float = MAX_RATE_LIMIT_WAIT_SECONDS) -> None:
        self.web = web
        self.client = client
        self.interval = interval
        self.max_wait = max_wait

    def open(self, inbound: Inbound, reply_id: str) -> SlackReplyStream:
        return SlackReplyStream(self, dict(inbound.reply_to), reply_id)


class SlackReplyStream:
    """One reply shown in Slack: the placeholder message, edited at most once per interval."""

    def __init__(self, sender: SlackSender, reply_to: dict[str, Any], reply_id: str) -> None:
        self.web = sender.web
        self.client = sender.client
        self.interval = sender.interval
        self.max_wait = sender.max_wait
        self.reply_id = reply_id
        self.channel = str(reply_to["channel"])
        self.thread_ts: str | None = reply_to.get("thread_ts")
        self.ts: str | None = None
        self._last_call = 0.0  # monotonic time of our last post/edit, shared by both threads
        self._not_before = 0.0  # a 429 during streaming: skip edits until then
        self._lock = threading.Lock()
        self._show_placeholder()
        self._editor = ThrottledEditor(self._edit_preview, self.interval)

    # -- the ReplyStream protocol ---------------------------------------------------------------
    def update(self, text_so_far: str) -> None:
        self._editor.update(text_so_far)

    def finish(self, reply: Reply) -> None:
        """Show the whole reply, split into several messages in the thread if too long."""
        self._editor.close()  # no streaming edit may land after (or race with) the final one
        text = reply.text.strip() or (FALLBACK_ERROR if reply.finish_reason == "error" else "…")
        text = with_sources(text, reply.citations)  # docs/knowledge.md: citations
        pieces = split_message(to_mrkdwn(text), MESSAGE_LIMIT)
        deadline = time.monotonic() + self.max_wait
        for index, piece in enumerate(pieces):
            if index == 0:
                if self.ts is None:
                    self.ts = self._post(piece, deadline)
                    remember_platform_message(self.client, self.reply_id,
                                              f"{self.channel}:{self.ts}")
                else:
                    self._call("chat_update", deadline, channel=self.channel, ts=self.ts,
                               text=piece)
                continue
            # Extra pieces are remembered one by one, so a retried finish edits, not reposts.
            key = f"{self.reply_id}:{index}"
            known = platform_message(self.client, key)
            if known is not None:
                self._call("chat_update", deadline, channel=self.channel,
                           ts=known.split(":", 1)[1], text=piece)
            else:
                ts = self._post(piece, deadline)
                remember_platform_message(self.client, key, f"{self.channel}:{ts}")

    def close(self) -> None:
        self._editor.close()

    # -- Slack calls ----------------------------------------------------------------------------
    def _show_placeholder(self) -> None:
        """Reuse the message a previous run posted for this reply, else post a placeholder.

        A failure here is logged, not raised: the answer is still generated, and ``finish``
        posts it (or raises, to be retried) if no placeholder could be shown.
        """
        known = platform_message(self.client, self.reply_id)
        if known is not None:
            self.ts = known.split(":", 1)[1]
            return
        try:
            self.ts = self._post(PLACEHOLDER, time.monotonic())
        except Exception:
            log.warning("could not post the placeholder in %s", self.channel, exc_info=True)
            return
        remember_platform_message(self.client, self.reply_id, f"{self.channel}:{self.ts}")

    def _edit_preview(self, text_so_far: str) -> None:
        """Runs on the editor's thread; a failed edit is only logged (``finish`` follows)."""
        if self.ts is None or time.monotonic() < self._not_before:
            return
        try:
            self._call("chat_update", None, channel=self.channel, ts=self.ts,
                       text=preview(text_so_far))
        except SlackApiError as error:
            wait = retry_after(error)
            if wait is None:
                raise
            self._not_before = time.monotonic() + wait

    def _post(self, text: str, deadline: float) -> str:
        response = self._call("chat_postMessage", deadline, channel=self.channel,
                              thread_ts=self.thread_ts, text=text,
                              unfurl_links=False, unfurl_media=False)
        return str(response["ts"])

    def _call(self, method: str, deadline: float | None, **arguments: Any) -> Any:
        """Call the Web API, spaced by the interval; wait out 429s until ``deadline``.

        ``deadline`` None: a 429 raises at once (streaming edits are skipped instead).
        """
        while True:
            with self._lock:
                pause = self._last_call + self.interval - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                try:
                    return getattr(self.web, method)(**arguments)
                except SlackApiError as error:
                    wait = retry_after(error)
                    if wait is None or deadline is None:
                        raise
                    if time.monotonic() + wait > deadline:
                        raise SlackRateLimited(wait) from error
                    log.info("Slack rate limit on %s: waiting %.1f s", method, wait)
                    time.sleep(wait)
                finally:
                    self._last_call = time.monotonic()


def make_sender(settings: Settings, client: redis.Redis) -> SlackSender | None:
    """The worker's Slack sender, when a bot token is set (the ``assistant.senders`` entry
    point; ``SLACK_API_URL`` lets tests point it at a fake server)."""
    if settings.slack_bot_token is None:
        return None
    web = WebClient(token=settings.slack_bot_token.get_secret_value(),
                    base_url=api_base_url(settings.slack_api_url), timeout=10)
    return SlackSender(web, client)


def api_base_url(url: str) -> str:
    """slack_sdk joins method names onto ``base_url``, which must end with a slash."""
    return url if url.endswith("/") else url + "/"
