"""The sign-in machinery's state in the web process (``app.state.auth``)."""

from __future__ import annotations

from dataclasses import dataclass

import jinja2
import redis
from fastapi import Request

from assistant.settings import Settings
from integrations.web.auth.oidc import OidcClient


@dataclass
class AuthContext:
    settings: Settings
    client: redis.Redis
    proxies: frozenset[str]  # ADMIN_TRUSTED_PROXIES: whose X-Forwarded-* to believe
    templates: jinja2.Environment
    oidc: OidcClient | None  # None: no OIDC_ISSUER


def get_auth(request: Request) -> AuthContext:
    auth: AuthContext = request.app.state.auth
    return auth
