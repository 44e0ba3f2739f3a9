"""Users: everyone the assistant talked to, per platform, with message and token counts;
ban or unban; a per-user daily token quota."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from assistant import admin_actions
from assistant.store.users import Users
from integrations.web.admin.core import (
    Admin,
    AdminError,
    Form,
    Session,
    audit,
    call,
    redirect,
    render,
)

router = APIRouter(prefix="/admin/users", include_in_schema=False)

PAGE_SIZE = 50
MAX_QUOTA = 100_000_000


@router.get("")
async def list_users(request: Request, admin: Admin, session: Session,
                     platform: str = Query("", max_length=32),
                     query: str = Query("", max_length=256),
                     page: int = Query(1, ge=1, le=10_000)) -> HTMLResponse:
    def load() -> tuple[list[Any], dict[int, int]]:
        found = list(Users(admin.store).list(platform=platform or None, query=query or None,
                                             limit=PAGE_SIZE + 1,
                                             offset=(page - 1) * PAGE_SIZE))
        muted = {user.id: admin_actions.muted_for(admin.web.client, user.platform,
                                                  user.workspace, user.user_id)
                 for user in found[:PAGE_SIZE]}
        return found, muted

    found, muted = await call(load)
    return render(request, "users.html", title="Users", users=found[:PAGE_SIZE], muted=muted,
                  more=len(found) > PAGE_SIZE, page=page, platform=platform, query=query,
                  platforms=("web", "slack", "telegram", "openai"),
                  default_quota=admin.web.settings.user_daily_tokens)


def identity(form: dict[str, str]) -> tuple[str, str, str]:
    platform, workspace, user_id = (form.get("platform", ""), form.get("workspace", ""),
                                    form.get("user_id", ""))
    if not platform or not user_id:
        raise AdminError(422, "name the user: platform and user_id")
    return platform, workspace, user_id


def back(form: dict[str, str]) -> dict[str, str]:
    return {key: form.get("back_" + key, "")[:256] for key in ("platform", "query", "page")}


@router.post("/ban")
async def ban_user(admin: Admin, session: Session, form: Form) -> Response:
    platform, workspace, user_id = identity(form)

    def ban() -> None:
        admin_actions.ban_user(admin.store, admin.web.client, platform, workspace, user_id,
                               actor=session.username)

    await call(ban)
    return redirect("/admin/users", "banned", **back(form))


@router.post("/unban")
async def unban_user(admin: Admin, session: Session, form: Form) -> Response:
    platform, workspace, user_id = identity(form)

    def unban() -> None:
        admin_actions.unban_user(admin.store, admin.web.client, platform, workspace, user_id,
                                 actor=session.username)

    await call(unban)
    return redirect("/admin/users", "unbanned", **back(form))


@router.post("/unmute")
async def unmute_user(admin: Admin, session: Session, form: Form) -> Response:
    """End a mute (set by strikes or from the moderation log) and forget the strikes."""
    platform, workspace, user_id = identity(form)

    def unmute() -> None:
        admin_actions.unmute_user(admin.web.client, admin.store, platform, workspace, user_id,
                                  actor=session.username)

    await call(unmute)
    return redirect("/admin/users", "unmuted", **back(form))


@router.post("/sync")
async def sync_to_redis(admin: Admin, session: Session) -> Response:
    """Apply every ban and per-user quota in the store to Redis again (after Redis lost data)."""

    def sync() -> int:
        mirrored = admin_actions.sync_redis(admin.store, admin.web.client)
        audit(admin, session.username, "sync_redis", "", {"users": mirrored})
        return mirrored

    await call(sync)
    return redirect("/admin/users", "synced")


@router.post("/quota")
async def set_quota(admin: Admin, session: Session, form: Form) -> Response:
    """An empty quota means the default (ASSISTANT_USER_DAILY_TOKENS); 0 means none."""
    platform, workspace, user_id = identity(form)
    raw = form.get("quota", "").strip().replace(",", "").replace("_", "")
    quota: int | None = None
    if raw:
        try:
            quota = int(raw)
        except ValueError:
            raise AdminError(422, "the quota is a whole number of tokens") from None
        if not 0 <= quota <= MAX_QUOTA:
            raise AdminError(422, f"the quota is between 0 and {MAX_QUOTA:,} tokens")

    def save() -> None:
        admin_actions.set_user_quota(admin.store, admin.web.client, platform, workspace,
                                     user_id, quota, actor=session.username)

    await call(save)
    return redirect("/admin/users", "quota", **back(form))
