"""The long-polling adapter: ``python -m integrations.telegram`` (``assistant telegram``)."""

from __future__ import annotations

import logging

from assistant.limits import Limits
from assistant.prompts import PromptLibrary
from assistant.redis_client import connect
from assistant.settings import Settings
from integrations.telegram.bot import ALLOWED_UPDATES, TelegramAdapter, build_application
from integrations.telegram.sender import quiet_httpx
from worker.app import make_app
from worker.dispatch import Dispatcher

log = logging.getLogger("integrations.telegram")

# Fail fast when Redis is down, so a handler logs it instead of hanging the update loop.
REDIS_TIMEOUTS = {"socket_connect_timeout": 2.0, "socket_timeout": 5.0}


def main() -> None:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_httpx()
    settings = Settings()
    if not settings.telegram_bot_token:
        raise SystemExit("set TELEGRAM_BOT_TOKEN")
    if settings.telegram_webhook_url:
        log.warning("TELEGRAM_WEBHOOK_URL is set: long polling removes that webhook")
    celery_app = make_app(settings)
    assert settings.redis_url is not None
    client = connect(settings.redis_url, master_name=settings.redis_sentinel_master,
                     **REDIS_TIMEOUTS)
    prompts = PromptLibrary.load()
    dispatcher = Dispatcher(client, celery_app, limits=Limits.from_settings(settings, prompts))
    adapter = TelegramAdapter(settings, client, dispatcher, prompts)
    application = build_application(settings, adapter, polling=True)
    log.info("Telegram long polling started")
    try:
        # run_polling deletes any webhook first (getUpdates and webhooks exclude each other),
        # and stops cleanly on SIGINT/SIGTERM.
        application.run_polling(allowed_updates=ALLOWED_UPDATES, drop_pending_updates=False)
    finally:
        client.close()


if __name__ == "__main__":
    main()
