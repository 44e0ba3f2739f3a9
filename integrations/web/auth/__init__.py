"""Who may talk to the assistant through the web (docs/security.md): API keys on ``/api`` and
``/v1``, sign-in for the chat page (local accounts, OpenID Connect), and the admin panel's
sign-in for people who are admins."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from assistant.errors import ConfigError
from assistant.identity.modes import exposure_problem, sign_in_mode
from assistant.limits import parse_rate
from integrations.web.admin.auth import trusted_proxies
from integrations.web.auth import admin_sso, errors, routes
from integrations.web.auth.context import AuthContext
from integrations.web.auth.oidc import OidcClient
from integrations.web.auth.open_limits import OpenEndpointLimit
from integrations.web.auth.pages import make_templates
from integrations.web.deps import WebState

log = logging.getLogger(__name__)


def check_settings(state: WebState) -> None:
    """Refuse to start where anyone could use the assistant by accident."""
    settings = state.settings
    problem = exposure_problem(settings)
    if problem:
        raise ConfigError(problem)
    if settings.oidc_issuer and not settings.oidc_client_id:
        raise ConfigError("OIDC_ISSUER is set but OIDC_CLIENT_ID is empty: set the client id "
                          "registered with your identity provider (docs/security.md)")
    if settings.auth == "none" and sign_in_mode(settings) == "local":
        log.warning("ASSISTANT_AUTH=none: anyone who reaches %s:%d uses the assistant without "
                    "signing in", settings.host, settings.port)


def install(app: FastAPI, state: WebState) -> AuthContext:
    """Check the settings, then mount the sign-in routes and the credential error handler."""
    check_settings(state)
    settings = state.settings
    context = AuthContext(settings=settings, client=state.client,
                          proxies=trusted_proxies(settings), templates=make_templates(),
                          oidc=OidcClient(settings) if settings.oidc_issuer else None)
    app.state.auth = context
    errors.install(app)
    app.include_router(routes.router)
    app.include_router(admin_sso.router)
    admin_sso.open_panel_to_people(app, settings)
    app.add_middleware(OpenEndpointLimit, client=state.client,
                       rate=parse_rate(settings.open_rate_limit, "ASSISTANT_OPEN_RATE_LIMIT"),
                       proxies=context.proxies)
    return context
