"""The login page, logging in and out: the only admin routes reachable without a session."""

from __future__ import annotations

import math
import secrets
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import Response

from integrations.web.admin import auth
from integrations.web.admin.core import (
    Admin,
    AdminContext,
    AdminError,
    Form,
    Session,
    audit,
    call,
    redirect,
    render,
)

router = APIRouter(prefix="/admin", include_in_schema=False)


def safe_next(target: str | None) -> str:
    """Only a path inside the panel: never an open redirect to another site."""
    if not target:
        return "/admin"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/admin") or "\\" in target:
        return "/admin"
    return target


def login_page(request: Request, admin: AdminContext, error: str | None = None,
               status: int = 200) -> Response:
    """The form, with a fresh double-submit token in a cookie and in a hidden field."""
    token = secrets.token_urlsafe(32)
    response = render(request, "login.html", status=status, title="Log in",
                      login_token=token, error=error,
                      problem=admin.problem, next=safe_next(request.query_params.get("next")))
    response.set_cookie(auth.LOGIN_COOKIE, token, max_age=3600, path=auth.COOKIE_PATH,
                        httponly=True, samesite="strict",
                        secure=auth.is_https(request, admin.proxies))
    return response


@router.get("/login")
async def get_login(request: Request, admin: Admin) -> Response:
    return login_page(request, admin)


@router.post("/login")
async def post_login(request: Request, admin: Admin, form: Form) -> Response:
    if admin.problem:
        raise AdminError(503, f"The admin panel is off: {admin.problem}.")
    if not auth.tokens_match(request.cookies.get(auth.LOGIN_COOKIE, ""),
                             form.get(auth.CSRF_FIELD)):
        raise AdminError(403, "missing or wrong CSRF token: reload the page and try again")
    username = form.get("username", "")[:128]
    password = form.get("password", "")[:1024]
    ip = auth.client_ip(request, admin.proxies)
    client = admin.web.client
    device = await call(auth.known_device, client, admin.signer,
                        request.cookies.get(auth.DEVICE_COOKIE))
    wait = await call(auth.login_wait_seconds, client, ip, username, device)
    if wait:
        seconds = max(1, math.ceil(wait))
        response = login_page(request, admin, status=429,
                              error=f"Too many attempts: try again in {seconds} seconds.")
        response.headers["Retry-After"] = str(seconds)
        return response
    if not auth.credentials_match(admin.web.settings, username, password):
        await call(auth.record_login_failure, client, ip, username)
        await call(audit, admin, username or "(empty)", "login_failed", "",
                                {"ip": ip})
        return login_page(request, admin, status=401, error="Wrong username or password.")
    device_cookie = await call(auth.record_login_success, client, admin.signer, ip, username)
    cookie, _ = await call(auth.start_session, client, admin.signer, username,
                           admin.fingerprint)
    await call(audit, admin, username, "login", "", {"ip": ip})
    response = redirect(safe_next(form.get("next")))
    response.set_cookie(auth.SESSION_COOKIE, cookie, max_age=auth.SESSION_TTL_SECONDS,
                        path=auth.COOKIE_PATH, httponly=True, samesite="strict",
                        secure=auth.is_https(request, admin.proxies))
    # Vouches for this browser at its next login (auth.login_wait_seconds).
    response.set_cookie(auth.DEVICE_COOKIE, device_cookie, max_age=auth.KNOWN_TTL_SECONDS,
                        path=auth.COOKIE_PATH, httponly=True, samesite="strict",
                        secure=auth.is_https(request, admin.proxies))
    response.delete_cookie(auth.LOGIN_COOKIE, path=auth.COOKIE_PATH)
    return response


@router.post("/logout")
async def post_logout(admin: Admin, session: Session) -> Response:
    await call(auth.end_session, admin.web.client, session)
    await call(audit, admin, session.username, "logout")
    response = redirect("/admin/login", "logged-out")
    response.delete_cookie(auth.SESSION_COOKIE, path=auth.COOKIE_PATH)
    return response
