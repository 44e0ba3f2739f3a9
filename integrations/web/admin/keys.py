"""API keys: make one (its secret shown once, on this response only), list, revoke.

Revocation holds from the next request: every request looks its key up in the store
(``assistant.store.keys``).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from assistant.errors import ConfigError
from assistant.store.keys import ApiKeys
from assistant.store.people import People
from integrations.web.admin.core import Admin, AdminError, Form, Session, audit, call, redirect
from integrations.web.admin.core import render as render_page

router = APIRouter(prefix="/admin/keys", include_in_schema=False)


async def keys_page(request: Request, admin: Admin, new_token: str | None = None,
                    new_prefix: str | None = None) -> HTMLResponse:
    keys = await call(ApiKeys(admin.store).list)
    people = await call(People(admin.store).list)
    return render_page(request, "keys.html", title="API keys", keys=keys, new_token=new_token,
                       new_prefix=new_prefix, people=[person.handle for person in people])


@router.get("")
async def list_keys(request: Request, admin: Admin, session: Session) -> HTMLResponse:
    return await keys_page(request, admin)


def daily_tokens(text: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    if not text.isdigit():
        raise AdminError(422, "the daily token quota is a whole number (0: no quota)")
    return int(text)


@router.post("")
async def create_key(request: Request, admin: Admin, session: Session, form: Form
                     ) -> HTMLResponse:
    owner = form.get("owner", "").strip()
    kind = "service" if form.get("owner_kind") == "service" else "person"
    try:
        new, row = await call(ApiKeys(admin.store).create, form.get("name", ""), owner,
                              session.username, kind, form.get("rate", ""),
                              daily_tokens(form.get("daily_tokens", "")))
    except (ValueError, ConfigError) as exc:
        raise AdminError(422, str(exc)) from exc
    await call(audit, admin, session.username, "key_created", row.prefix,
               {"owner": row.owner, "owner_kind": row.owner_kind, "name": row.name})
    # Shown on this response only; the store keeps its hash.
    return await keys_page(request, admin, new_token=new.token, new_prefix=row.prefix)


@router.post("/revoke")
async def revoke_key(admin: Admin, session: Session, form: Form) -> Response:
    prefix = form.get("prefix", "")
    row = await call(ApiKeys(admin.store).revoke, prefix, session.username)
    if row is None:
        raise AdminError(404, f"no key {prefix!r}")
    await call(audit, admin, session.username, "key_revoked", row.prefix, {"owner": row.owner})
    return redirect("/admin/keys", "key-revoked")
