"""Persona and prompts: edit the system prompt and the refusal texts; every save is a version;
roll back to any version. Workers read the newest version on their next message."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from assistant import admin_actions
from assistant.store.personas import Personas
from integrations.web.admin.core import Admin, AdminError, Form, Session, call, redirect, render

router = APIRouter(prefix="/admin/persona", include_in_schema=False)

MAX_TEMPLATE_CHARS = 20_000
NAME_PATTERN = r"^[a-z0-9_]{1,64}$"


@router.get("")
async def get_persona(request: Request, admin: Admin, session: Session,
                      name: str = Query("system", pattern=NAME_PATTERN)) -> HTMLResponse:
    def load() -> dict[str, Any]:
        personas = Personas(admin.store)
        names = list(personas.names())
        if name not in names:
            raise AdminError(404, f"no editable prompt named {name!r}")
        return {"names": names, "current": personas.current(name),
                "text": personas.template(name), "variables": personas.variables(name),
                "history": list(personas.history(name))}

    found = await call(load)
    return render(request, "persona.html", title="Persona and prompts", name=name,
                  max_chars=MAX_TEMPLATE_CHARS, **found)


@router.post("")
async def save_persona(admin: Admin, session: Session, form: Form) -> Response:
    name = form.get("name", "")
    template = form.get("template", "").replace("\r\n", "\n")
    comment = form.get("comment", "").strip()[:500]
    if not template.strip():
        raise AdminError(422, "the text is empty")
    if len(template) > MAX_TEMPLATE_CHARS:
        raise AdminError(413, f"the text is longer than {MAX_TEMPLATE_CHARS:,} characters")

    def save() -> None:
        admin_actions.save_persona(admin.store, admin.web.client, name, template,
                                   actor=session.username, comment=comment)

    await call(save)
    return redirect("/admin/persona", "saved", name=name)


@router.post("/rollback")
async def rollback_persona(admin: Admin, session: Session, form: Form) -> Response:
    name = form.get("name", "")
    try:
        version = int(form.get("version", ""))
    except ValueError:
        raise AdminError(422, "version must be a number") from None

    def rollback() -> None:
        admin_actions.rollback_persona(admin.store, admin.web.client, name, version,
                                       actor=session.username)

    await call(rollback)
    return redirect("/admin/persona", "rolled-back", name=name)
