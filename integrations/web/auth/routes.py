"""Sign-in for the web chat: local accounts, OpenID Connect, invitations, signing out.

Every form here is public, so each POST (and each OIDC start) takes a token from the client
address's bucket (ASSISTANT_PUBLIC_RATE_LIMIT); forms carry a double-submit token (a random
value in a cookie and in the form) since there is no session yet.
"""

from __future__ import annotations

import logging
import math
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import redis
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from assistant import keys
from assistant.identity.credentials import new_token
from assistant.identity.modes import sign_in_mode
from assistant.limits import parse_rate, take_tokens
from assistant.store import shared_store
from assistant.store.audit import AuditLog
from assistant.store.people import IdentityError, People, SignedIn
from integrations.web.admin.auth import client_ip, is_https, tokens_match
from integrations.web.auth import sessions
from integrations.web.auth.context import AuthContext, get_auth
from integrations.web.auth.oidc import SignInFailed, state_key
from integrations.web.auth.pages import render

log = logging.getLogger(__name__)
router = APIRouter(prefix="/auth", include_in_schema=False)

FORM_COOKIE = "assistant_signin"
OIDC_COOKIE = "assistant_oidc"
OIDC_COOKIE_PATH = "/auth/oidc"
MAX_FORM_BYTES = 8 * 1024
NOTICES = {"signed-out": "You are signed out.", "password-set": "Your password is set."}


def safe_next(target: str | None) -> str:
    """Only a path on this site: never an open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    return "/" if parts.scheme or parts.netloc else target


async def read_form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    return dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))


def too_many(auth: AuthContext, request: Request) -> int:
    """Seconds to wait when the client address is over its public limit, else 0."""
    rate = parse_rate(auth.settings.public_rate_limit, "ASSISTANT_PUBLIC_RATE_LIMIT")
    if rate is None:
        return 0
    ip = client_ip(request, auth.proxies)
    refused, wait = take_tokens(auth.client, [(keys.public_bucket(ip), rate)])
    return max(1, math.ceil(wait)) if refused else 0


def local_accounts(auth: AuthContext) -> bool:
    """Password sign-in: with ASSISTANT_AUTH=signin, or when OIDC is not set up."""
    return auth.settings.auth == "signin" or auth.oidc is None


def secure(request: Request, auth: AuthContext) -> bool:
    return is_https(request, auth.proxies)


def signin_page(request: Request, auth: AuthContext, *, error: str | None = None,
                status: int = 200, next_path: str = "/") -> Response:
    token = new_token()
    response = render(auth.templates, "signin.html", status=status, title="Sign in",
                      error=error, notice=NOTICES.get(request.query_params.get("notice", "")),
                      oidc=auth.oidc is not None, local_accounts=local_accounts(auth),
                      form_token=token, next=next_path)
    response.set_cookie(FORM_COOKIE, token, max_age=3600, path="/auth", httponly=True,
                        samesite="strict", secure=secure(request, auth))
    return response


def failure_page(auth: AuthContext, message: str, status: int = 400) -> Response:
    return render(auth.templates, "message.html", status=status, title="Sign-in failed",
                  message=message)


def signed_in_response(request: Request, auth: AuthContext, person: SignedIn, method: str,
                       next_path: str) -> Response:
    ttl = int(auth.settings.web_session_hours * 3600)
    cookie, _ = sessions.start(auth.client, person, method, ttl)
    response = RedirectResponse(safe_next(next_path), status_code=303)
    response.set_cookie(sessions.SESSION_COOKIE, cookie, max_age=ttl, path="/", httponly=True,
                        samesite="lax", secure=secure(request, auth))
    response.delete_cookie(FORM_COOKIE, path="/auth")
    return response


def audit(auth: AuthContext, actor: str, action: str, details: dict[str, Any]) -> None:
    AuditLog(shared_store(auth.settings.sql_url)).record(actor, action, "", details)


# -- what the chat page asks first ---------------------------------------------------------------

@router.get("/session")
async def get_session(request: Request) -> JSONResponse:
    """The page's start: the mode, who is signed in, and the CSRF token for its calls."""
    auth = get_auth(request)
    session = await run_in_threadpool(sessions.load, auth.client,
                                      request.cookies.get(sessions.SESSION_COOKIE))
    body: dict[str, Any] = {"mode": sign_in_mode(auth.settings), "signed_in": False}
    if session is not None:
        body.update(signed_in=True, handle=session.handle, name=session.display_name,
                    admin=session.admin, csrf_token=session.csrf_token)
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


# -- local accounts ------------------------------------------------------------------------------

@router.get("/login")
async def get_login(request: Request) -> Response:
    auth = get_auth(request)
    if sign_in_mode(auth.settings) == "local":
        return RedirectResponse("/", status_code=303)
    return signin_page(request, auth, next_path=safe_next(request.query_params.get("next")))


@router.post("/login")
async def post_login(request: Request) -> Response:
    auth = get_auth(request)
    form = await read_form(request)
    next_path = safe_next(form.get("next"))
    if sign_in_mode(auth.settings) == "local":
        return RedirectResponse("/", status_code=303)
    if not local_accounts(auth):
        return signin_page(request, auth, status=403, next_path=next_path,
                           error="Sign in with your company account.")
    if not tokens_match(request.cookies.get(FORM_COOKIE, ""), form.get("csrf_token")):
        return signin_page(request, auth, status=403, next_path=next_path,
                           error="The form expired: sign in again.")
    wait = await run_in_threadpool(too_many, auth, request)
    if wait:
        response = signin_page(request, auth, status=429, next_path=next_path,
                               error=f"Too many attempts: try again in {wait} seconds.")
        response.headers["Retry-After"] = str(wait)
        return response
    handle, password = form.get("username", "")[:128], form.get("password", "")[:1024]
    person = await run_in_threadpool(People(shared_store(auth.settings.sql_url)).check_password,
                                     handle, password)
    if person is None:
        return signin_page(request, auth, status=401, next_path=next_path,
                           error="Wrong name or password.")
    return await run_in_threadpool(signed_in_response, request, auth, person, "password",
                                   next_path)


@router.get("/invite/{token}")
async def get_invite(request: Request, token: str) -> Response:
    auth = get_auth(request)
    form_token = new_token()
    response = render(auth.templates, "invite.html", title="Choose your password", error=None,
                      form_token=form_token)
    response.set_cookie(FORM_COOKIE, form_token, max_age=3600, path="/auth", httponly=True,
                        samesite="strict", secure=secure(request, auth))
    return response


@router.post("/invite/{token}")
async def post_invite(request: Request, token: str) -> Response:
    auth = get_auth(request)
    form = await read_form(request)
    if not tokens_match(request.cookies.get(FORM_COOKIE, ""), form.get("csrf_token")):
        return failure_page(auth, "The form expired: open the invitation link again.", 403)
    if await run_in_threadpool(too_many, auth, request):
        return failure_page(auth, "Too many attempts from your address: wait a minute.", 429)
    people = People(shared_store(auth.settings.sql_url))
    try:
        person = await run_in_threadpool(people.accept_invite, token[:128],
                                         form.get("password", "")[:1024])
    except IdentityError as exc:
        return failure_page(auth, str(exc))
    return await run_in_threadpool(signed_in_response, request, auth, person, "password", "/")


@router.post("/logout")
async def post_logout(request: Request) -> Response:
    """Ends the session (the form or the page sends the session's CSRF token)."""
    auth = get_auth(request)
    cookie = request.cookies.get(sessions.SESSION_COOKIE)
    session = await run_in_threadpool(sessions.load, auth.client, cookie)
    if session is not None:
        given = request.headers.get(sessions.CSRF_HEADER) or \
            (await read_form(request)).get("csrf_token")
        if not sessions.csrf_ok(session, given):
            return failure_page(auth, "Missing or wrong CSRF token: reload the page.", 403)
        await run_in_threadpool(sessions.end, auth.client, cookie)
    response = RedirectResponse("/auth/login?notice=signed-out", status_code=303)
    response.delete_cookie(sessions.SESSION_COOKIE, path="/")
    return response


# -- OpenID Connect ------------------------------------------------------------------------------

def callback_url(request: Request, auth: AuthContext) -> str:
    if auth.settings.oidc_redirect_url:
        return auth.settings.oidc_redirect_url
    base = str(request.base_url).rstrip("/")
    if secure(request, auth) and base.startswith("http://"):
        base = "https://" + base[len("http://"):]
    return f"{base}/auth/oidc/callback"


@router.get("/oidc/login")
async def get_oidc_login(request: Request) -> Response:
    auth = get_auth(request)
    if auth.oidc is None:
        return failure_page(auth, "Company sign-in is not configured (OIDC_ISSUER).", 404)
    if await run_in_threadpool(too_many, auth, request):
        return failure_page(auth, "Too many sign-ins from your address: wait a minute.", 429)
    next_path = safe_next(request.query_params.get("next"))
    try:
        url, state = await auth.oidc.start(auth.client, callback_url(request, auth), next_path)
    except SignInFailed as exc:
        log.warning("OIDC sign-in could not start: %s", exc.message)
        return failure_page(auth, f"Sign-in is unavailable: {exc.message}.", 503)
    except redis.RedisError:
        return failure_page(auth, "Sign-in is unavailable: try again in a moment.", 503)
    response = RedirectResponse(url, status_code=303)
    # Lax, not Strict: the provider sends the browser back with a cross-site top-level GET.
    response.set_cookie(OIDC_COOKIE, state, max_age=600, path=OIDC_COOKIE_PATH, httponly=True,
                        samesite="lax", secure=secure(request, auth))
    return response


@router.get("/oidc/callback")
async def get_oidc_callback(request: Request) -> Response:
    """The provider's redirect back. Any mismatch ends here with a page; nothing is created."""
    auth = get_auth(request)
    if auth.oidc is None:
        return failure_page(auth, "Company sign-in is not configured (OIDC_ISSUER).", 404)
    params = request.query_params
    state, code = params.get("state", ""), params.get("code", "")
    response = await _finish_oidc(request, auth, state, code, params.get("error"))
    response.delete_cookie(OIDC_COOKIE, path=OIDC_COOKIE_PATH)
    return response


async def _finish_oidc(request: Request, auth: AuthContext, state: str, code: str,
                       error: str | None) -> Response:
    assert auth.oidc is not None
    cookie_state = request.cookies.get(OIDC_COOKIE, "")
    if error:
        # The provider refused (the person said no, a misconfigured client...); some
        # providers send no state with an error. Nothing is created either way.
        if state and tokens_match(cookie_state, state):
            await run_in_threadpool(auth.client.delete, state_key(state))
        return failure_page(auth, f"Sign-in failed: the identity provider said "
                            f"{error[:100]!r}.")
    if not state or not tokens_match(cookie_state, state):
        return failure_page(auth, "Sign-in failed: this answer from the identity provider "
                            "does not belong to a sign-in started in this browser (state).")
    try:
        record = await run_in_threadpool(auth.oidc.take_state, auth.client, state)
        if not code:
            raise SignInFailed("the identity provider sent no code")
        identity = await auth.oidc.finish(code, record)
        people = People(shared_store(auth.settings.sql_url))
        person = await run_in_threadpool(people.sign_in_oidc, identity.issuer,
                                         identity.subject, identity.claims, identity.groups,
                                         auth.settings.oidc_admin_group)
    except SignInFailed as exc:
        log.info("OIDC sign-in refused: %s", exc.message)
        return failure_page(auth, f"Sign-in failed: {exc.message}.")
    except IdentityError as exc:
        return failure_page(auth, f"Sign-in failed: {exc}.", 403)
    except redis.RedisError:
        return failure_page(auth, "Sign-in is unavailable: try again in a moment.", 503)
    if person.admin:
        await run_in_threadpool(audit, auth, person.handle, "signin_oidc",
                                {"ip": client_ip(request, auth.proxies), "admin": True})
    return await run_in_threadpool(signed_in_response, request, auth, person, "oidc",
                                   record.get("next", "/"))

