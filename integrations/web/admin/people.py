"""People who sign in: invite a local account (its link shown once), make or unmake an admin,
disable, and link a Slack or Telegram identity to a person."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from assistant.store.people import IdentityError, People
from integrations.web.admin.core import Admin, AdminError, Form, Session, audit, call, redirect
from integrations.web.admin.core import render as render_page

router = APIRouter(prefix="/admin/people", include_in_schema=False)


async def people_page(request: Request, admin: Admin, invite_path: str | None = None,
                      invited: str | None = None) -> HTMLResponse:
    repo = People(admin.store)

    def load() -> list[tuple[object, list[object]]]:
        return [(person, list(repo.links(person.handle))) for person in repo.list()]

    rows = await call(load)
    return render_page(request, "people.html", title="People", rows=rows,
                       invite_path=invite_path, invited=invited,
                       admin_group=admin.web.settings.oidc_admin_group)


@router.get("")
async def list_people(request: Request, admin: Admin, session: Session) -> HTMLResponse:
    return await people_page(request, admin)


@router.post("/invite")
async def invite_person(request: Request, admin: Admin, session: Session, form: Form
                        ) -> HTMLResponse:
    handle = form.get("handle", "").strip()
    is_admin = form.get("admin") == "on"
    try:
        token = await call(People(admin.store).invite, handle, session.username,
                           form.get("display_name") or None, is_admin)
    except IdentityError as exc:
        raise AdminError(422, str(exc)) from exc
    await call(audit, admin, session.username, "person_invited", handle, {"admin": is_admin})
    return await people_page(request, admin, invite_path=f"/auth/invite/{token}",
                             invited=handle)


async def change(admin: Admin, session: Session, action: str, handle: str,
                 details: dict[str, object], function: object, *args: object) -> Response:
    try:
        await call(function, *args)  # type: ignore[arg-type]
    except IdentityError as exc:
        raise AdminError(422, str(exc)) from exc
    await call(audit, admin, session.username, action, handle, details)
    return redirect("/admin/people", "person-changed")


@router.post("/admin")
async def set_admin(admin: Admin, session: Session, form: Form) -> Response:
    handle, on = form.get("handle", ""), form.get("admin") == "on"
    return await change(admin, session, "person_admin", handle, {"admin": on},
                        People(admin.store).set_admin, handle, on)


@router.post("/disable")
async def set_disabled(admin: Admin, session: Session, form: Form) -> Response:
    handle, on = form.get("handle", ""), form.get("disabled") == "on"
    return await change(admin, session, "person_disabled", handle, {"disabled": on},
                        People(admin.store).set_disabled, handle, on)


@router.post("/link")
async def link_identity(admin: Admin, session: Session, form: Form) -> Response:
    handle = form.get("handle", "")
    platform, workspace, user_id = (form.get("platform", ""), form.get("workspace", ""),
                                    form.get("user_id", "").strip())
    if not user_id:
        raise AdminError(422, "name the platform's user id")
    return await change(admin, session, "identity_linked", handle,
                        {"platform": platform, "workspace": workspace, "user_id": user_id},
                        People(admin.store).link, handle, platform, workspace, user_id,
                        session.username)
