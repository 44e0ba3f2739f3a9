"""Socket Mode runner: ``python -m integrations.slack`` (``assistant slack`` runs it).

Needs SLACK_BOT_TOKEN and SLACK_APP_TOKEN (``xapp-…``, scope ``connections:write``). The
WebSocket is opened with ``apps.connections.open`` on SLACK_API_URL; bolt acks each envelope
after its listener has enqueued the message.
"""

from __future__ import annotations

import logging

import redis
from slack_bolt.adapter.socket_mode import SocketModeHandler

from assistant.dispatch import connect_edge, edge_dispatcher
from assistant.errors import ConfigError
from assistant.settings import Settings
from integrations.slack.app import build_app


def build_handler(settings: Settings) -> tuple[SocketModeHandler, redis.Redis]:
    """The Socket Mode handler, and the Redis client it enqueues with (closed by the caller)."""
    if not (settings.slack_bot_token and settings.slack_app_token):
        raise ConfigError("Socket Mode needs SLACK_BOT_TOKEN and SLACK_APP_TOKEN")
    client = connect_edge(settings)
    dispatcher = edge_dispatcher(settings, client)
    app = build_app(settings, dispatcher, client)
    handler = SocketModeHandler(app, settings.slack_app_token.get_secret_value())
    return handler, client


def main() -> None:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler, client = build_handler(Settings())
    try:
        handler.start()  # type: ignore[no-untyped-call]  # blocks until interrupted
    finally:
        handler.close()  # type: ignore[no-untyped-call]
        client.close()


if __name__ == "__main__":
    main()
