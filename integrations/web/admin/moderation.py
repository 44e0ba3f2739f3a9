"""Moderation: the safety log with filters; mark an entry reviewed; mute or ban its user."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, Response

from assistant import admin_actions
from assistant.store.moderation import ModerationLog
from integrations.web.admin.core import (
    Admin,
    AdminContext,
    AdminError,
    Form,
    Session,
    call,
    redirect,
    render,
)

router = APIRouter(prefix="/admin/moderation", include_in_schema=False)

PAGE_SIZE = 100
EventId = Path(ge=1)
ACTIONS = ("flag", "mask", "block", "mute")
MUTE_CHOICES = ((3600, "1 hour"), (86400, "1 day"), (7 * 86400, "1 week"))


@router.get("")
async def list_moderation(
    request: Request, admin: Admin, session: Session,
    category: str = Query("", max_length=32), action: str = Query("", max_length=8),
    platform: str = Query("", max_length=32), user: str = Query("", max_length=256),
    reviewed: str = Query("", pattern="^(|yes|no)$"), page: int = Query(1, ge=1, le=10_000),
) -> HTMLResponse:
    def load() -> tuple[list[Any], dict[str, int]]:
        log = ModerationLog(admin.store)
        events = log.recent(limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE,
                            category=category or None, action=action or None,
                            platform=platform or None, user_id=user or None,
                            reviewed={"yes": True, "no": False}.get(reviewed))
        return events, log.counts_by_category()

    events, counts = await call(load)
    return render(request, "moderation.html", title="Moderation", events=events[:PAGE_SIZE],
                  page=page, more=len(events) > PAGE_SIZE,
                  categories=sorted(counts), category=category, action=action,
                  platform=platform, user=user, reviewed=reviewed, actions=ACTIONS,
                  mute_choices=MUTE_CHOICES, page_size=PAGE_SIZE)


def load_event(admin: AdminContext, event_id: int) -> Any:
    event = ModerationLog(admin.store).get(event_id)
    if event is None:
        raise AdminError(404, "no such moderation entry")
    return event


@router.post("/{event_id}/review")
async def review_event(admin: Admin, session: Session, form: Form,
                       event_id: int = EventId) -> Response:
    def review() -> None:
        if admin_actions.review_moderation(admin.store, event_id, session.username) is None:
            raise AdminError(404, "no such moderation entry")

    await call(review)
    return redirect("/admin/moderation", "reviewed", **back(form))


@router.post("/{event_id}/mute")
async def mute_from_event(admin: Admin, session: Session, form: Form,
                          event_id: int = EventId) -> Response:
    try:
        seconds = int(form.get("seconds", "3600"))
    except ValueError:
        raise AdminError(422, "seconds must be a whole number") from None
    if seconds not in {choice for choice, _ in MUTE_CHOICES}:
        raise AdminError(422, "choose one of the offered mute lengths")

    def mute() -> None:
        event = load_event(admin, event_id)
        if not event.user_id:
            raise AdminError(422, "this entry names no user")
        admin_actions.mute_user(admin.web.client, admin.store, event.platform, event.workspace,
                                event.user_id, seconds, actor=session.username)

    await call(mute)
    return redirect("/admin/moderation", "muted", **back(form))


@router.post("/{event_id}/ban")
async def ban_from_event(admin: Admin, session: Session, form: Form,
                         event_id: int = EventId) -> Response:
    def ban() -> None:
        event = load_event(admin, event_id)
        if not event.user_id:
            raise AdminError(422, "this entry names no user")
        admin_actions.ban_user(admin.store, admin.web.client, event.platform, event.workspace,
                               event.user_id, actor=session.username)

    await call(ban)
    return redirect("/admin/moderation", "banned", **back(form))


def back(form: dict[str, str]) -> dict[str, str]:
    """The list's filters, carried through a form so the admin lands where they were."""
    return {key: form.get(key, "")[:256] for key in ("category", "action", "platform", "user",
                                                      "reviewed")}
