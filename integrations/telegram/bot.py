"""The PTB Application: handlers that convert and enqueue, nothing that waits for the model.

Both ways in use it: ``__main__`` runs it with long polling, ``webhook`` feeds it the updates
Telegram posts (``Application.process_update``). Text goes to the workers through
``Dispatcher.submit``; commands and non-text messages are answered here, at once.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import Any

import redis
from sqlalchemy.exc import SQLAlchemyError
from telegram import BotCommand, Update
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    CommandHandler,
    ContextTypes,
    ExtBot,
    MessageHandler,
    filters,
)

from assistant.conversations import Conversations
from assistant.dispatch import Dispatcher
from assistant.envelope import ConversationKey
from assistant.errors import QueueUnavailable, Throttled
from assistant.prompts import PromptLibrary
from assistant.recall.commands import parse as parse_memory_command
from assistant.recall.service import answer_at_edge
from assistant.settings import Settings
from assistant.store import shared_store
from integrations.telegram.convert import (
    PLATFORM,
    BotIdentity,
    concerns_bot,
    conversation_key,
    dedupe_id,
    message_id_for,
    new_message,
    to_inbound,
)

log = logging.getLogger(__name__)

# Only new messages: edited messages are ignored, so they are not even asked for.
ALLOWED_UPDATES = [Update.MESSAGE]
COMMANDS = [
    BotCommand("start", "Say hello"),
    BotCommand("help", "What I understand"),
    BotCommand("reset", "Start this conversation over"),
    BotCommand("forget", "Delete everything kept about me (/forget N: one memory)"),
    BotCommand("remember", "Remember a fact about me"),
    BotCommand("memory", "What you remember about me"),
]
RESET_WAIT_SECONDS = 20.0  # a turn in progress finishes first; Telegram's webhook waits ~60 s

# Set by the webhook around ``process_update``: handlers record why they could not accept an
# update, so the webhook can answer 503 and Telegram delivers it again.
failures: contextvars.ContextVar[list[Exception] | None] = contextvars.ContextVar(
    "telegram_failures", default=None)


class TelegramAdapter:
    """What the handlers do: convert, dedupe, enqueue; answer commands and non-text."""

    def __init__(self, settings: Settings, client: redis.Redis, dispatcher: Dispatcher,
                 prompts: PromptLibrary) -> None:
        self.settings = settings
        self.client = client
        self.dispatcher = dispatcher
        self.prompts = prompts
        self.conversations = Conversations(client, lambda: shared_store(settings.sql_url),
                                           settings.retention_seconds)

    # -- handlers ------------------------------------------------------------------------------

    async def on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        inbound = to_inbound(update, identity(context))
        if inbound is None:
            return
        try:
            submitted = await asyncio.to_thread(self.dispatcher.submit, inbound)
        except QueueUnavailable as exc:
            self._failed(exc, update)
            return
        except Throttled as exc:
            # Answered (not failed), so the webhook says 200 and Telegram does not resend it.
            if not exc.repeated:
                await self._tell(update, str(exc))
            return
        if not submitted:
            log.info("update %s was already accepted; ignored", update.update_id)
        elif submitted.notice:
            await self._tell(update, submitted.notice)

    async def on_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = new_message(update)
        if message is None or message.text is None or message.from_user is None:
            return
        command = message.text.split()[0].lstrip("/").split("@")[0].lower()
        if command == "remember":
            # Saved by a worker, after the input safety checks (docs/memory.md).
            await self.on_text(update, context)
            return
        memory_command = parse_memory_command(message.text)
        try:
            if not await self._first_time(update, context):
                return
            if memory_command is not None:  # /memory, /forget N, /forget all
                text = await asyncio.to_thread(
                    answer_at_edge, self.settings, self.prompts, memory_command,
                    conversation_key(message), str(message.from_user.id))
            elif command == "reset":
                done = await asyncio.to_thread(self.reset, conversation_key(message))
                text = self.prompts.render("telegram_reset" if done else "telegram_busy")
            elif command == "forget":
                await asyncio.to_thread(self.forget, message.from_user.id)
                text = self.prompts.render("telegram_forget")
            elif command == "start":
                text = self.prompts.render("telegram_start")
            else:
                text = self.prompts.render("telegram_help")
        except QueueUnavailable as exc:
            self._failed(exc, update)
            return
        except (redis.RedisError, SQLAlchemyError) as exc:
            self._failed(QueueUnavailable(f"Redis or the store is unavailable: {exc}"), update)
            return
        await message.reply_text(text)

    async def on_other(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Stickers, photos, voice...: a short answer that only text is understood."""
        message = new_message(update)
        if message is None or not concerns_bot(message, identity(context)):
            return
        try:
            if not await self._first_time(update, context):
                return
        except QueueUnavailable as exc:
            self._failed(exc, update)
            return
        await message.reply_text(self.prompts.render("telegram_non_text"))

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        error = context.error
        log.error("handling update failed: %s", error,
                  exc_info=(type(error), error, error.__traceback__) if error else None)
        recorded = failures.get()
        if recorded is not None and isinstance(error, Exception):
            recorded.append(error)

    # -- the work (synchronous Redis; run in a thread) -----------------------------------------

    def reset(self, conversation: ConversationKey) -> bool:
        """Start one conversation over (``assistant.conversations``); False if still busy."""
        return self.conversations.reset(conversation, RESET_WAIT_SECONDS) is not None

    def forget(self, user_id: int) -> None:
        """Everything kept about a user: their private chat and their lines in groups."""
        # Telegram's private chat id is the user id: clear it even if it was never indexed.
        self.conversations.forget_person(
            PLATFORM, "default", str(user_id), actor=f"user:{user_id}",
            private=ConversationKey(platform=PLATFORM, channel=str(user_id), user=str(user_id)))

    async def _first_time(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> bool:
        """Commands and non-text are not queued: the dispatcher dedupes their update."""
        dedupe = dedupe_id(identity(context), update.update_id)
        return await asyncio.to_thread(self.dispatcher.claim, dedupe, message_id_for(dedupe))

    async def _tell(self, update: Update, text: str) -> None:
        """A notice in the message's chat (and topic), as a reply to it; failures are logged."""
        message = new_message(update)
        if message is None:
            return
        try:
            await message.reply_text(text)
        except Exception:
            log.warning("could not send a notice for update %s", update.update_id,
                        exc_info=True)

    def _failed(self, error: QueueUnavailable, update: Update) -> None:
        log.error("could not accept Telegram update %s: %s", update.update_id, error)
        recorded = failures.get()
        if recorded is not None:
            recorded.append(error)


def identity(context: ContextTypes.DEFAULT_TYPE) -> BotIdentity:
    return BotIdentity(id=context.bot.id, username=context.bot.username)


async def register_commands(application: Application[Any, Any, Any, Any, Any, Any]) -> None:
    """setMyCommands, so clients offer the commands; a failure is logged, not fatal."""
    try:
        await application.bot.set_my_commands(COMMANDS)
    except Exception:
        log.warning("setMyCommands failed", exc_info=True)


# python-telegram-bot reads a whole getUpdates batch at once; one update it cannot read (a
# "date" past year 9999 raised ValueError) failed the batch, the Updater asked for the same
# batch again, and the bot answered nobody while logging that update's data (user text
# included) at CRITICAL on every try: measured, ~43,000 lines in a minute. Unreadable
# updates are read one by one instead; one that still fails is passed on as a bare update
# (its id only, which no handler takes) so that the next offset skips it.
_READ_ERRORS = (ValueError, TypeError, KeyError, AttributeError, OverflowError)


def read_update(data: dict[str, Any], bot: Any, fate: str) -> Update | None:
    """The update, or None (logged by id only, with ``fate``) when python-telegram-bot cannot
    read it: a field out of range will never be readable, so it is skipped, not retried."""
    try:
        return Update.de_json(data, bot)
    except _READ_ERRORS as exc:
        log.warning("Telegram update %s could not be read (%s: %s); %s",
                    str(data.get("update_id"))[:20], type(exc).__name__, str(exc)[:200], fate)
        return None


class _TolerantBot(ExtBot[Any]):
    __slots__ = ()

    async def get_updates(self, *args: Any, **kwargs: Any) -> tuple[Update, ...]:
        try:
            return await super().get_updates(*args, **kwargs)
        except _READ_ERRORS:
            pass
        offset = kwargs.get("offset", args[0] if args else None)
        limit = kwargs.get("limit", args[1] if len(args) > 1 else None)
        allowed = kwargs.get("allowed_updates", args[3] if len(args) > 3 else None)
        raw = await self.do_api_request("getUpdates", api_kwargs={
            "offset": offset, "limit": limit, "timeout": 0, "allowed_updates": allowed})
        return tuple(read_update(data, self, "skipped") or Update(update_id=int(data["update_id"]))
                     for data in raw or ())


class _WithholdUpdateData(logging.Filter):
    """python-telegram-bot logs a batch it cannot read with its raw data: users' messages. The
    line stays (an operator sees that it happened), the data does not."""

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("Error while parsing updates!"):
            record.args = ("<withheld: it holds users' messages>",)
        return True


for _logger in ("telegram.Bot", "telegram.ext.ExtBot"):  # the class that logs names it
    logging.getLogger(_logger).addFilter(_WithholdUpdateData())


def build_application(settings: Settings, adapter: TelegramAdapter, *, polling: bool
                      ) -> Application[Any, Any, Any, Any, Any, Any]:
    """The Application with the adapter's handlers; an Updater only for long polling."""
    assert settings.telegram_bot_token is not None
    builder = (ApplicationBuilder()
               .token(settings.telegram_bot_token.get_secret_value())
               .base_url(settings.telegram_api_url)
               # Command and non-text answers go out through PTB's limiter (FloodLimit), and a
               # RetryAfter is retried instead of dropped (its max_retries defaults to 0).
               .rate_limiter(AIORateLimiter(max_retries=3))
               .post_init(register_commands))
    if not polling:
        builder = builder.updater(None)
    application = builder.build()
    if polling:  # the builder has no bot class setting; the subclass adds no state (slots)
        application.bot.__class__ = _TolerantBot
    new_messages = filters.UpdateType.MESSAGE
    application.add_handler(CommandHandler(["start", "help", "reset", "forget", "remember",
                                            "memory", "memories"],
                                           adapter.on_command, filters=new_messages))
    application.add_handler(MessageHandler(new_messages & filters.TEXT & ~filters.COMMAND,
                                           adapter.on_text))
    application.add_handler(MessageHandler(
        new_messages & ~filters.TEXT & ~filters.StatusUpdate.ALL, adapter.on_other))
    application.add_error_handler(adapter.on_error)
    return application
