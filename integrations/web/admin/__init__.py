"""The admin panel at ``/admin`` (docs/admin.md): server-rendered pages behind one login."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from integrations.web.admin import (
    auth,
    conversations,
    keys,
    knowledge,
    login,
    memories,
    moderation,
    pages,
    people,
    persona,
    users,
)
from integrations.web.admin.core import (
    STATIC_DIR,
    AdminContext,
    AdminError,
    error_response,
    make_templates,
)
from integrations.web.admin.headers import AdminHeaders
from integrations.web.deps import WebState

log = logging.getLogger(__name__)

ROUTERS = (login.router, pages.router, conversations.router, moderation.router, persona.router,
           users.router, keys.router, people.router, knowledge.router,
           memories.router)


def install(app: FastAPI, state: WebState) -> AdminContext:
    """Mount the panel: its routes, its static files, its error pages and security headers."""
    settings = state.settings
    problem = auth.password_problem(settings)
    if problem:
        log.warning("the admin panel at /admin is off: %s", problem)
    signer = auth.session_signer(settings)
    admin = AdminContext(web=state, signer=signer, proxies=auth.trusted_proxies(settings),
                         problem=problem, templates=make_templates(),
                         fingerprint=auth.credentials_fingerprint(settings, signer))
    app.state.admin = admin
    app.add_middleware(AdminHeaders)

    async def on_admin_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AdminError)
        return error_response(request, exc)

    app.add_exception_handler(AdminError, on_admin_error)
    # Public assets only (our CSS and JS, no data): the login page needs them before a session.
    app.mount("/admin/static", StaticFiles(directory=STATIC_DIR), name="admin-static")
    for router in ROUTERS:
        app.include_router(router)
    return admin
