"""The admin panel for people who are admins: a signed-in person whose account an admin
marked as admin, or whose OIDC groups hold OIDC_ADMIN_GROUP, opens ``/admin/sso`` and gets an
admin session in their own name, so every action in the audit log names them. The single
ADMIN_USERNAME/ADMIN_PASSWORD login stays for a first start."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from assistant.identity.modes import sign_in_mode
from assistant.settings import Settings
from integrations.web.admin import auth as admin_auth
from integrations.web.admin.core import AdminContext, audit
from integrations.web.auth import sessions
from integrations.web.auth.context import get_auth
from integrations.web.auth.routes import failure_page

router = APIRouter(include_in_schema=False)


def open_panel_to_people(app: FastAPI, settings: Settings) -> None:
    """With sign-in on, the panel works without ADMIN_PASSWORD (admins sign in as people);
    the password login itself stays refused while the password is empty
    (``admin.auth.credentials_match`` checks it on every attempt)."""
    admin: AdminContext | None = getattr(app.state, "admin", None)
    if admin is None or sign_in_mode(settings) != "signin":
        return
    if not settings.admin_password.get_secret_value().strip():
        admin.problem = None
    admin.templates.globals["people_sign_in"] = True  # the login page links here


@router.get("/admin/sso")
async def get_admin_sso(request: Request) -> Response:
    auth = get_auth(request)
    admin: AdminContext | None = getattr(request.app.state, "admin", None)
    if admin is None or sign_in_mode(auth.settings) != "signin":
        return failure_page(auth, "Sign-in is not configured on this server.", 404)
    session = await run_in_threadpool(sessions.load, auth.client,
                                      request.cookies.get(sessions.SESSION_COOKIE))
    if session is None:
        return RedirectResponse("/auth/login?next=/admin/sso", status_code=303)
    if not session.admin:
        return failure_page(auth, f"You are signed in as {session.handle}, who is not an "
                            "admin. Ask an admin to mark your account as one.", 403)
    cookie, _ = await run_in_threadpool(admin_auth.start_session, admin.web.client,
                                        admin.signer, session.handle, admin.fingerprint)
    ip = admin_auth.client_ip(request, admin.proxies)
    await run_in_threadpool(audit, admin, session.handle, "login", "",
                            {"ip": ip, "method": session.method})
    response = RedirectResponse("/admin", status_code=303)
    response.set_cookie(admin_auth.SESSION_COOKIE, cookie,
                        max_age=admin_auth.SESSION_TTL_SECONDS, path=admin_auth.COOKIE_PATH,
                        httponly=True, samesite="strict",
                        secure=admin_auth.is_https(request, admin.proxies))
    return response
