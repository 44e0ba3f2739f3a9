"""Telegram's webhook on the web server: POST /telegram/webhook (when TELEGRAM_WEBHOOK_URL is set).

The web server's lifespan registers the webhook (setWebhook with the secret token and the update
types we handle) and the commands; each request is checked against the secret in constant time
(PTB's own webhook server compares with ``!=``), parsed with ``Update.de_json`` and fed to the
same PTB Application as long polling uses, so both ways in share every handler.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis
from fastapi import FastAPI, Request, Response

from assistant.dispatch import Dispatcher
from assistant.errors import QueueUnavailable
from assistant.prompts import PromptLibrary
from assistant.settings import Settings
from integrations.telegram.bot import (
    ALLOWED_UPDATES,
    TelegramAdapter,
    build_application,
    failures,
    read_update,
    register_commands,
)
from integrations.telegram.sender import quiet_httpx

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/telegram/webhook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


def webhook_secret(settings: Settings) -> str:
    """TELEGRAM_WEBHOOK_SECRET, or one derived from the bot token: never an open webhook.

    Telegram allows 1-256 characters of A-Z a-z 0-9 _ - (hex fits).
    """
    if settings.telegram_webhook_secret:
        return settings.telegram_webhook_secret.get_secret_value()
    assert settings.telegram_bot_token is not None
    token = settings.telegram_bot_token.get_secret_value().encode()
    return hmac.new(token, b"assistant telegram webhook", hashlib.sha256).hexdigest()


def mount(app: FastAPI, settings: Settings, client: redis.Redis, dispatcher: Dispatcher) -> None:
    """Add the webhook route, and its registration to the app's lifespan."""
    quiet_httpx()
    adapter = TelegramAdapter(settings, client, dispatcher, PromptLibrary.load())
    application = build_application(settings, adapter, polling=False)
    secret = webhook_secret(settings).encode()

    async def ready() -> bool:
        """Initialise the Application (getMe) once; retried per request if Telegram was down."""
        if not application._initialized:  # PTB keeps no public flag for it
            try:
                await application.initialize()
            except Exception:
                log.error("could not reach the Telegram Bot API (getMe)", exc_info=True)
                return False
        return True

    original_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        if await ready():
            await register_webhook(application, settings, secret.decode())
        async with original_lifespan(app) as inner:
            yield inner
        if application._initialized:
            await application.shutdown()

    app.router.lifespan_context = lifespan

    @app.post(WEBHOOK_PATH, include_in_schema=False)
    async def post_telegram_update(request: Request) -> Response:
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, secret):
            return Response(status_code=403)
        try:
            data = await request.json()
        except ValueError:
            return Response(status_code=400)
        if not isinstance(data, dict) or "update_id" not in data:
            return Response(status_code=400)
        if not await ready():
            return Response(status_code=503)  # Telegram delivers it again later
        # An update python-telegram-bot cannot read ("date" past year 9999 was a 500) is
        # acknowledged, so that Telegram does not deliver it again and again.
        update = read_update(data, application.bot, "dropped")
        if update is None:
            return Response(status_code=200)
        recorded: list[Exception] = []
        token = failures.set(recorded)
        try:
            await application.process_update(update)
        finally:
            failures.reset(token)
        if any(isinstance(error, QueueUnavailable) for error in recorded):
            return Response(status_code=503)
        return Response(status_code=200)


async def register_webhook(application: Any, settings: Settings, secret: str) -> None:
    """setWebhook with the secret and the update types we handle; setMyCommands."""
    try:
        await application.bot.set_webhook(settings.telegram_webhook_url,
                                          allowed_updates=ALLOWED_UPDATES, secret_token=secret)
        log.info("Telegram webhook registered")
    except Exception:
        log.error("setWebhook failed; Telegram will not post updates", exc_info=True)
    await register_commands(application)
