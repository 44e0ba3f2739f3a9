"""What every admin page shares: the panel's state, the session guard, rendering, forms, audit."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qsl, urlencode

import jinja2
import redis
import sqlalchemy.exc
from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from itsdangerous import Signer
from starlette.concurrency import run_in_threadpool

from assistant.errors import PromptError, QueueUnavailable, ReplyTimeout
from assistant.store import Store, shared_store
from assistant.store.audit import AuditLog
from integrations.web.admin import auth
from integrations.web.deps import WebState

log = logging.getLogger(__name__)
T = TypeVar("T")

HERE = Path(__file__).resolve().parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"
API_PREFIX = "/admin/api/"
MAX_FORM_BYTES = 256 * 1024  # a persona's text is the largest thing an admin posts

# Short notices shown after an action (a code in the redirect's query, never free text).
NOTICES = {
    "deleted": "The conversation was deleted.",
    "reviewed": "Marked as reviewed.",
    "muted": "The user is muted.",
    "banned": "The user is banned.",
    "unbanned": "The user is no longer banned.",
    "unmuted": "The user is no longer muted.",
    "synced": "Bans and quotas from the store are applied in Redis again.",
    "quota": "The user's daily token quota is saved.",
    "saved": "Saved as a new version.",
    "rolled-back": "Rolled back: the old text is the newest version again.",
    "pool": "The worker was asked to resize its pool.",
    "pool-failed": "The worker did not answer; its pool is unchanged.",
    "logged-out": "You are logged out.",
    "key-revoked": "The key is revoked: it is refused from the next request on.",
    "person-changed": "Saved.",
    "kb-queued": "Queued: a worker indexes it now.",
    "kb-deleted": "The document and its chunks are deleted.",
    "kb-attached": "Saved: the collection is used there from the next question on.",
    "kb-detached": "The collection is no longer used there.",
}


class AdminError(Exception):
    """An admin request that cannot be served: shown as a page, or as JSON under /admin/api/."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class LoginRequired(AdminError):
    def __init__(self) -> None:
        super().__init__(401, "log in to use the admin panel")


@dataclass
class AdminContext:
    """The panel's own state, beside the web process' ``WebState``."""

    web: WebState
    signer: Signer
    proxies: frozenset[str]
    problem: str | None  # why the panel is off (an empty or placeholder password), else None
    templates: jinja2.Environment
    fingerprint: str  # of the admin's credentials (auth.credentials_fingerprint)

    @property
    def store(self) -> Store:
        """The durable store, shared with the rest of this process (opened and migrated on
        first use); call from a thread."""
        return shared_store(self.web.settings.sql_url)


def make_templates() -> jinja2.Environment:
    # Autoescape everything: conversations hold text written by users and by the model.
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES_DIR), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters["when"] = lambda value: value.strftime("%Y-%m-%d %H:%M:%S") if value else "—"
    env.filters["duration"] = describe_duration
    return env


def describe_duration(seconds: int) -> str:
    """A short duration for a table: "45 s", "12 min", "3 h", "2 d"."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size or (unit == "min" and seconds >= size):
            return f"{round(seconds / size)} {unit}"
    return f"{seconds} s"


def get_admin(request: Request) -> AdminContext:
    context: AdminContext = request.app.state.admin
    return context


Admin = Annotated[AdminContext, Depends(get_admin)]


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form body (the panel's forms post nothing else), read once per request."""
    cached: dict[str, str] | None = getattr(request.state, "admin_form", None)
    if cached is not None:
        return cached
    form: dict[str, str] = {}
    if request.method not in auth.SAFE_METHODS:
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            raise AdminError(413, "the form is too large")
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        if body and content_type == "application/x-www-form-urlencoded":
            form = dict(parse_qsl(body.decode("utf-8", errors="replace"),
                                  keep_blank_values=True))
    request.state.admin_form = form
    return form


Form = Annotated[dict[str, str], Depends(read_form)]


async def call(function: Callable[..., T], *args: Any) -> T:
    """Run store and Redis work in a thread; the core's errors become admin error pages."""
    try:
        return await run_in_threadpool(function, *args)
    except (QueueUnavailable, redis.RedisError) as exc:
        # The details go to the log, not into a page that the login form can show.
        log.warning("Redis failed: %s", exc)
        raise AdminError(503, "Redis is unavailable; try again in a moment") from exc
    except sqlalchemy.exc.SQLAlchemyError as exc:
        log.warning("the store failed: %s", exc)
        raise AdminError(503, "the database is unavailable; try again in a moment") from exc
    except ReplyTimeout as exc:  # a delete waiting for a reply in progress
        raise AdminError(409, str(exc)) from exc
    except PromptError as exc:  # an unknown prompt, bad braces, a missing placeholder
        raise AdminError(422, str(exc)) from exc


async def require_session(request: Request, admin: Admin) -> auth.AdminSession:
    """Every admin route but the login page depends on this: a session, and on a
    state-changing request its CSRF token."""
    if admin.problem:
        raise AdminError(503, f"The admin panel is off: {admin.problem}.")
    session = await call(auth.load_session, admin.web.client, admin.signer,
                         request.cookies.get(auth.SESSION_COOKIE), admin.fingerprint)
    if session is None:
        raise LoginRequired()
    if request.method not in auth.SAFE_METHODS:
        given = request.headers.get(auth.CSRF_HEADER)
        if given is None:
            given = (await read_form(request)).get(auth.CSRF_FIELD)
        if not auth.tokens_match(session.csrf_token, given):
            raise AdminError(403, "missing or wrong CSRF token: reload the page and try again")
    request.state.admin_session = session
    return session


Session = Annotated[auth.AdminSession, Depends(require_session)]


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    admin = get_admin(request)
    session: auth.AdminSession | None = getattr(request.state, "admin_session", None)
    notice = NOTICES.get(request.query_params.get("notice", ""))
    query_without_page = urlencode([(key, value) for key, value in
                                    request.query_params.multi_items()
                                    if key not in ("page", "notice")])
    html = admin.templates.get_template(template).render(
        session=session, csrf_token=session.csrf_token if session else "",
        path=request.url.path, notice=notice, query_without_page=query_without_page,
        **context)
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


def redirect(path: str, notice: str | None = None, **query: str) -> RedirectResponse:
    params = {key: value for key, value in query.items() if value}
    if notice:
        params["notice"] = notice
    target = path + ("?" + urlencode(params) if params else "")
    return RedirectResponse(target, status_code=303)


def audit(admin: AdminContext, actor: str, action: str, target: str = "",
          details: dict[str, Any] | None = None) -> None:
    """Record an admin action that no ``assistant.admin_actions`` function records for us.
    Call from a thread (it writes the store)."""
    AuditLog(admin.store).record(actor, action, target, details or {})


def error_response(request: Request, exc: AdminError) -> Response:
    if isinstance(exc, LoginRequired) and not request.url.path.startswith(API_PREFIX):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse("/admin/login?" + urlencode({"next": target}), status_code=303)
    if request.url.path.startswith(API_PREFIX) or request.method not in auth.SAFE_METHODS and \
            request.headers.get(auth.CSRF_HEADER) is not None:
        body = {"error": {"message": exc.message, "type": "admin_error", "code": exc.status}}
        return JSONResponse(body, status_code=exc.status)
    admin = get_admin(request)
    html = admin.templates.get_template("error.html").render(
        session=None, csrf_token="", path=request.url.path, notice=None,
        query_without_page="", title=f"Error {exc.status}", status=exc.status,
        message=exc.message)
    return HTMLResponse(html, status_code=exc.status)
