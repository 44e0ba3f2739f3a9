"""Showing replies in Telegram: a placeholder at once, edited in place as tokens arrive.

Why ``telegram.Bot`` on a private event loop thread rather than raw HTTP: the worker is
synchronous (Celery prefork), PTB's Bot is async. One loop thread per worker process, started
lazily (after the fork), runs every Bot call; the synchronous stream submits coroutines to it and
waits. That keeps PTB's request building, error mapping (``RetryAfter``, ``BadRequest``) and
types on the sending side too, at the cost of one small thread per process.

Limits (PTB ``constants.FloodLimit``, core.telegram.org/bots/faq "broadcasting"): about one
message per second per chat, 20 per minute in a group. Streaming edits are paced accordingly by
``ThrottledEditor``; a ``RetryAfter`` is waited out (up to ``MAX_RETRY_WAIT_SECONDS``; beyond
that the final delivery raises so Celery retries it later, without generating again).
"""

from __future__ import annotations

import asyncio
import datetime as dtm
import logging
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import redis
from telegram import Bot, LinkPreviewOptions, Message, ReplyParameters
from telegram.constants import ChatAction, FloodLimit, ParseMode
from telegram.error import BadRequest, Forbidden, RetryAfter, TelegramError
from telegram.request import HTTPXRequest
from telegram.warnings import PTBDeprecationWarning

from assistant.delivery import ThrottledEditor, platform_message, remember_platform_message
from assistant.envelope import Inbound, Reply
from assistant.knowledge.render import with_sources
from assistant.settings import Settings
from integrations.telegram.convert import split_text, telegram_length, to_html

log = logging.getLogger(__name__)

T = TypeVar("T")

PLACEHOLDER = "…"
PRIVATE_EDIT_INTERVAL = 1.0 / FloodLimit.MESSAGES_PER_SECOND_PER_CHAT  # 1 s
GROUP_EDIT_INTERVAL = 60.0 / FloodLimit.MESSAGES_PER_MINUTE_PER_GROUP  # 3 s
TYPING_REFRESH_SECONDS = 4.5  # Telegram shows a chat action for 5 s
MAX_RETRY_WAIT_SECONDS = 30.0
CALL_TIMEOUT_SECONDS = 60.0
# Replies never get link previews: Telegram would fetch a link the model (or an injection)
# wrote without anyone clicking it (issue 15; Slack's sender turns unfurling off likewise).
NO_PREVIEW = LinkPreviewOptions(is_disabled=True)


def retry_after_seconds(error: RetryAfter) -> float:
    """Seconds to wait; PTB 22 warns on the int form unless PTB_TIMEDELTA is set."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = error.retry_after
    return value.total_seconds() if isinstance(value, dtm.timedelta) else float(value)


class BotRunner:
    """A ``telegram.Bot`` and the event loop thread that runs its calls, for sync callers."""

    def __init__(self, settings: Settings) -> None:
        assert settings.telegram_bot_token is not None
        self._token = settings.telegram_bot_token.get_secret_value()
        self._base_url = settings.telegram_api_url
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bot: Bot | None = None

    def _start(self) -> tuple[asyncio.AbstractEventLoop, Bot]:
        with self._lock:
            if self._loop is None or self._bot is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="telegram-bot",
                                 daemon=True).start()
                bot = Bot(self._token, base_url=self._base_url,
                          request=HTTPXRequest(connection_pool_size=8, read_timeout=20.0))
                asyncio.run_coroutine_threadsafe(bot.initialize(),
                                                 loop).result(CALL_TIMEOUT_SECONDS)
                self._loop, self._bot = loop, bot
            return self._loop, self._bot

    def run(self, call: Callable[[Bot], Coroutine[Any, Any, T]]) -> T:
        """Run ``call(bot)`` on the loop thread and wait for its result."""
        loop, bot = self._start()
        return asyncio.run_coroutine_threadsafe(call(bot), loop).result(CALL_TIMEOUT_SECONDS)

    def spawn(self, call: Callable[[Bot], Awaitable[None]]) -> Callable[[], None]:
        """Run ``call(bot)`` in the background; returns a function that cancels it."""
        loop, bot = self._start()

        async def wrapped() -> None:
            await call(bot)

        future = asyncio.run_coroutine_threadsafe(wrapped(), loop)

        def cancel() -> None:
            loop.call_soon_threadsafe(future.cancel)

        return cancel

    def close(self) -> None:
        with self._lock:
            if self._loop is not None and self._bot is not None:
                asyncio.run_coroutine_threadsafe(self._bot.shutdown(), self._loop).result(10)
                self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop = self._bot = None


class TelegramSender:
    """Opens one ``TelegramReplyStream`` per reply."""

    def __init__(self, runner: BotRunner, client: redis.Redis) -> None:
        self.runner = runner
        self.client = client

    def open(self, inbound: Inbound, reply_id: str) -> TelegramReplyStream:
        return TelegramReplyStream(self.runner, self.client, inbound, reply_id)


class TelegramReplyStream:
    """One reply in one chat: typing…, a placeholder, throttled plain edits, the final text."""

    def __init__(self, runner: BotRunner, client: redis.Redis, inbound: Inbound,
                 reply_id: str) -> None:
        self.runner = runner
        self.client = client
        self.reply_id = reply_id
        target = inbound.reply_to
        self.chat_id: int = int(target["chat_id"])
        self.thread_id: int | None = target.get("message_thread_id")
        self.reply_to_message_id: int | None = target.get("reply_to_message_id")
        self._blocked_until = 0.0  # monotonic time before which Telegram asked us to wait
        self._stop_typing = self._keep_typing()
        self.message_id = self._placeholder()
        interval = PRIVATE_EDIT_INTERVAL if self.chat_id > 0 else GROUP_EDIT_INTERVAL
        self._editor = ThrottledEditor(self._edit_preview, interval)

    # -- ReplyStream ---------------------------------------------------------------------------

    def update(self, text_so_far: str) -> None:
        self._editor.update(text_so_far)

    def finish(self, reply: Reply) -> None:
        """Final text: HTML (plain on a parse error), split over several messages if long."""
        self._editor.close()  # no streaming edit may land after the final one
        self._stop_typing()
        # The final edit keeps the chat's pace too (it once came 0.08 s after the last
        # streaming edit: issue 15).
        pause = self._editor.next_edit_at() - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        try:
            self._show(reply)
        except Forbidden:
            # The user blocked the bot or it left the group: retrying cannot help.
            log.warning("not allowed to post in chat %s; reply %s dropped", self.chat_id,
                        self.reply_id)

    def close(self) -> None:
        self._editor.close()
        self._stop_typing()

    def _show(self, reply: Reply) -> None:
        formatted = reply.finish_reason != "error"
        text = with_sources(reply.text or PLACEHOLDER, reply.citations)  # docs/knowledge.md
        for index, piece in enumerate(split_text(text)):
            key = self.reply_id if index == 0 else f"{self.reply_id}#{index}"
            ref = platform_message(self.client, key)
            message_id = int(ref.split(":")[1]) if ref else None
            if index == 0 and message_id is None:
                message_id = self.message_id
            if message_id is not None:
                if self._final_edit(message_id, piece, formatted):
                    continue
            sent = self._send(piece, formatted, reply_to=index == 0)
            remember_platform_message(self.client, key, f"{self.chat_id}:{sent.message_id}")

    # -- Telegram calls ------------------------------------------------------------------------

    def _keep_typing(self) -> Callable[[], None]:
        async def typing(bot: Bot) -> None:
            while True:
                try:
                    await bot.send_chat_action(self.chat_id, ChatAction.TYPING,
                                               message_thread_id=self.thread_id)
                except TelegramError as exc:
                    log.info("typing indicator failed: %s", exc)
                await asyncio.sleep(TYPING_REFRESH_SECONDS)

        try:
            return self.runner.spawn(typing)
        except Exception:
            log.warning("could not start the typing indicator", exc_info=True)
            return lambda: None

    def _placeholder(self) -> int | None:
        """The message showing this reply: a rerun reuses the one a previous run posted."""
        ref = platform_message(self.client, self.reply_id)
        if ref is not None:
            return int(ref.split(":")[1])
        try:
            sent = self._call(lambda bot: bot.send_message(
                self.chat_id, PLACEHOLDER, message_thread_id=self.thread_id,
                reply_parameters=self._reply_parameters()), wait=False)
        except Exception:  # finish() posts a fresh message instead
            log.warning("could not post the placeholder in chat %s", self.chat_id, exc_info=True)
            return None
        remember_platform_message(self.client, self.reply_id, f"{self.chat_id}:{sent.message_id}")
        return sent.message_id

    def _edit_preview(self, text: str) -> None:
        """A streaming edit: plain text (never fails to parse), skipped while rate-limited."""
        if self.message_id is None or time.monotonic() < self._blocked_until:
            return
        preview = split_text(text)[0]
        if telegram_length(preview) < telegram_length(text):
            preview = preview[:-1] + PLACEHOLDER
        message_id = self.message_id
        try:
            self._call(lambda bot: bot.edit_message_text(
                preview, self.chat_id, message_id, link_preview_options=NO_PREVIEW), wait=False)
        except RetryAfter:
            pass  # _call noted the wait; the next edits are skipped until then
        except BadRequest as exc:
            if "not modified" not in str(exc).lower():
                raise

    def _final_edit(self, message_id: int, text: str, formatted: bool) -> bool:
        """Edit ``message_id`` to ``text``; False if the message is gone (send a new one)."""
        try:
            if formatted:
                try:
                    self._call(lambda bot: bot.edit_message_text(
                        to_html(text), self.chat_id, message_id, parse_mode=ParseMode.HTML,
                        link_preview_options=NO_PREVIEW))
                    return True
                except BadRequest as exc:
                    if not _entities_error(exc):
                        raise
                    log.info("Telegram rejected the formatting (%s); sending plain text", exc)
            self._call(lambda bot: bot.edit_message_text(
                text, self.chat_id, message_id, link_preview_options=NO_PREVIEW))
            return True
        except BadRequest as exc:
            reason = str(exc).lower()
            if "not modified" in reason:
                return True
            if "not found" in reason:
                return False
            raise

    def _send(self, text: str, formatted: bool, reply_to: bool) -> Message:
        parameters = self._reply_parameters() if reply_to else None
        if formatted:
            try:
                return self._call(lambda bot: bot.send_message(
                    self.chat_id, to_html(text), parse_mode=ParseMode.HTML,
                    message_thread_id=self.thread_id, reply_parameters=parameters,
                    link_preview_options=NO_PREVIEW))
            except BadRequest as exc:
                if not _entities_error(exc):
                    raise
                log.info("Telegram rejected the formatting (%s); sending plain text", exc)
        return self._call(lambda bot: bot.send_message(
            self.chat_id, text, message_thread_id=self.thread_id, reply_parameters=parameters,
            link_preview_options=NO_PREVIEW))

    def _reply_parameters(self) -> ReplyParameters | None:
        if self.reply_to_message_id is None:
            return None
        return ReplyParameters(self.reply_to_message_id, allow_sending_without_reply=True)

    def _call(self, call: Callable[[Bot], Coroutine[Any, Any, T]], wait: bool = True) -> T:
        """Run a Bot call; with ``wait``, wait out RetryAfter (capped) and try again."""
        waited = 0.0
        while True:
            delay = self._blocked_until - time.monotonic()
            if delay > 0:
                if not wait:
                    raise RetryAfter(dtm.timedelta(seconds=delay))
                if waited + delay > MAX_RETRY_WAIT_SECONDS:
                    raise RetryAfter(dtm.timedelta(seconds=delay))  # Celery retries later
                time.sleep(delay)
                waited += delay
            try:
                return self.runner.run(call)
            except RetryAfter as exc:
                seconds = retry_after_seconds(exc)
                log.info("Telegram asks to wait %.1f s (chat %s)", seconds, self.chat_id)
                self._blocked_until = time.monotonic() + seconds
                if not wait:
                    raise


def _entities_error(error: BadRequest) -> bool:
    return "parse entities" in str(error).lower() or "entit" in str(error).lower()


def quiet_httpx() -> None:
    """httpx logs every request URL at INFO, and a Bot API URL holds the bot token."""
    logging.getLogger("httpx").setLevel(logging.WARNING)


def make_sender(settings: Settings, client: redis.Redis) -> TelegramSender | None:
    """The worker's Telegram sender, when a bot token is set (the ``assistant.senders`` entry
    point)."""
    if settings.telegram_bot_token is None:
        return None
    quiet_httpx()
    return TelegramSender(BotRunner(settings), client)
