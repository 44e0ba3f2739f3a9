"""The long-polling adapter: ``python -m integrations.telegram`` (``assistant telegram``)."""

from __future__ import annotations

import logging

from assistant.dispatch import connect_edge, edge_dispatcher
from assistant.prompts import PromptLibrary
from assistant.settings import Settings
from integrations.telegram.bot import ALLOWED_UPDATES, TelegramAdapter, build_application
from integrations.telegram.sender import quiet_httpx

log = logging.getLogger("integrations.telegram")


def main() -> None:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_httpx()
    settings = Settings()
    if not settings.telegram_bot_token:
        raise SystemExit("set TELEGRAM_BOT_TOKEN")
    if settings.telegram_webhook_url:
        log.warning("TELEGRAM_WEBHOOK_URL is set: long polling removes that webhook")
    client = connect_edge(settings)
    prompts = PromptLibrary.load()
    dispatcher = edge_dispatcher(settings, client, prompts)
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
