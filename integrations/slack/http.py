"""The HTTP Events API: POST /slack/events on the web server, handled by the bolt App.

bolt checks the signature (v0 HMAC-SHA256, timestamp within 5 minutes → else 401), answers
``url_verification`` and runs the listeners, which only enqueue. ``App.dispatch`` is
synchronous, so it runs in the thread pool rather than on the event loop.
"""

from __future__ import annotations

import redis
from fastapi import FastAPI, Request, Response
from slack_bolt.adapter.starlette.handler import to_bolt_request, to_starlette_response
from starlette.concurrency import run_in_threadpool

from assistant.dispatch import Dispatcher
from assistant.settings import Settings
from integrations.slack.app import build_app

EVENTS_PATH = "/slack/events"


def mount(app: FastAPI, settings: Settings, client: redis.Redis, dispatcher: Dispatcher) -> None:
    """Serve Slack's events, interactivity and slash commands at ``/slack/events``."""
    bolt_app = build_app(settings, dispatcher, client)

    @app.post(EVENTS_PATH, include_in_schema=False)
    async def receive_slack_event(request: Request) -> Response:
        body = await request.body()
        bolt_response = await run_in_threadpool(bolt_app.dispatch,
                                                to_bolt_request(request, body))
        return to_starlette_response(bolt_response)
