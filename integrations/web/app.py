"""The web server: ``uvicorn integrations.web.app:create_app --factory``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import redis
from fastapi import Depends, FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from assistant import __version__
from assistant.admin_actions import sync_redis
from assistant.backend import load_backend, redis_url
from assistant.dispatch import EDGE_REDIS_TIMEOUTS, Dispatcher
from assistant.limits import Limits
from assistant.logs import configure_logging
from assistant.redis_client import connect, connect_async
from assistant.settings import Settings
from assistant.store import shared_store
from integrations.web import (
    admin,
    api,
    auth,
    embeddings_api,
    errors,
    health,
    memories_api,
    metrics,
    openai_api,
)
from integrations.web.admin.knowledge import UPLOAD_PATH
from integrations.web.auth.principal import resolve_caller
from integrations.web.deps import WebState
from integrations.web.guards import BodyLimitMiddleware, OpsGateMiddleware

STATIC_DIR = Path(__file__).resolve().parent / "static"

log = logging.getLogger(__name__)


def mount_platforms(app: FastAPI, state: WebState) -> None:
    """The platforms' HTTP endpoints: Slack's Events API, Telegram's webhook, when configured."""
    settings = state.settings
    if settings.slack_bot_token and settings.slack_signing_secret:
        from integrations.slack.http import mount as mount_slack

        mount_slack(app, settings, state.client, state.dispatcher)
    if settings.telegram_bot_token and settings.telegram_webhook_url:
        from integrations.telegram.webhook import mount as mount_telegram

        mount_telegram(app, settings, state.client, state.dispatcher)


def route_server_logs_to_root() -> None:
    """uvicorn's loggers have their own text handlers: send their lines through ours."""
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        server_log = logging.getLogger(name)
        if name == "uvicorn.access" and not server_log.handlers:
            continue  # --no-access-log: uvicorn left it without handlers, not propagating
        server_log.handlers.clear()
        server_log.propagate = True


def restore_bans_and_quotas(settings: Settings, client: redis.Redis) -> None:
    """Bans and per-user quotas live in SQL and are mirrored in Redis for the hot path: put
    the mirror back at start, in case Redis lost its data. A failure is logged, not fatal
    (``/readyz`` reports a Redis that is down; the admin panel has a button to retry)."""
    try:
        mirrored = sync_redis(shared_store(settings.sql_url), client)
    except Exception:
        log.exception("could not restore bans and quotas from the store into Redis")
    else:
        log.info("restored %d user ban/quota flag(s) into Redis", mirrored)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings)
    route_server_logs_to_root()
    url = redis_url(settings)  # a clear ConfigError without REDIS_URL
    master = settings.redis_sentinel_master
    client = connect(url, master_name=master, **EDGE_REDIS_TIMEOUTS)
    aclient = connect_async(url, master_name=master, socket_connect_timeout=2.0)
    backend = load_backend(settings, client)
    dispatcher = Dispatcher(client, backend, limits=Limits.from_settings(settings))
    state = WebState(settings=settings, client=client, aclient=aclient,
                     backend=backend, dispatcher=dispatcher)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(restore_bans_and_quotas, settings, client)
        yield
        await aclient.aclose()
        client.close()

    app = FastAPI(title="Assistant", version=__version__, lifespan=lifespan)
    app.state.web = state
    errors.install(app)
    # Every /api and /v1 route needs a caller: an API key, a session, or local mode
    # (integrations/web/auth, docs/security.md).
    app.include_router(api.router, dependencies=[Depends(resolve_caller)])
    app.include_router(openai_api.router, dependencies=[Depends(resolve_caller)])
    app.include_router(embeddings_api.router, dependencies=[Depends(resolve_caller)])
    app.include_router(memories_api.router, dependencies=[Depends(resolve_caller)])
    app.include_router(health.router)
    # Before metrics.install, so the request metrics count the guards' refusals too.
    app.add_middleware(OpsGateMiddleware, settings=settings)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes,
                       larger={UPLOAD_PATH: int(settings.knowledge_max_mb * 1024 * 1024)})
    metrics.install(app, client, queue=backend.queue_name)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    mount_platforms(app, state)
    admin.install(app, state)  # /admin (docs/admin.md)
    auth.install(app, state)  # sign-in, API keys (docs/security.md); refuses unsafe settings

    # The page enforces the same input limit as the API (ASSISTANT_MAX_INPUT_CHARS).
    chat_page = (STATIC_DIR / "index.html").read_text(encoding="utf-8").replace(
        'data-max-chars="4000"', f'data-max-chars="{settings.max_input_chars}"')

    @app.get("/", include_in_schema=False)
    async def get_chat_page() -> HTMLResponse:
        return HTMLResponse(chat_page, headers={"Cache-Control": "no-cache"})

    return app
