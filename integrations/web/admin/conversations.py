"""Conversations: list and search the archive, read one as a chat, delete it, export it."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, Response

from assistant import admin_actions
from assistant.store.archive import Archive
from assistant.store.moderation import ModerationLog
from integrations.web.admin.core import Admin, AdminError, Session, audit, call, redirect, render

router = APIRouter(prefix="/admin/conversations", include_in_schema=False)

PAGE_SIZE = 25
MAX_VERDICTS = 100  # safety verdicts shown beside one conversation
ConversationId = Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")


def parse_day(value: str, field: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise AdminError(422, f"{field}: write a date as YYYY-MM-DD") from None


@router.get("")
async def list_conversations(
    request: Request, admin: Admin, session: Session,
    text: str = Query("", max_length=200), platform: str = Query("", max_length=32),
    channel: str = Query("", max_length=256), user: str = Query("", max_length=256),
    since: str = Query("", max_length=10), until: str = Query("", max_length=10),
    page: int = Query(1, ge=1, le=10_000),
) -> HTMLResponse:
    first, last = parse_day(since, "from"), parse_day(until, "to")
    filters: dict[str, Any] = {
        "text": text or None, "platform": platform or None, "channel": channel or None,
        "user_id": user or None,
        "since": datetime.combine(first, time(), UTC) if first else None,
        # "to" is inclusive: everything before the next day starts.
        "until": datetime.combine(last + timedelta(days=1), time(), UTC) if last else None,
    }

    def load() -> tuple[list[Any], int]:
        archive = Archive(admin.store)
        found = archive.search(**filters, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
        return list(found), archive.count(**filters)

    found, total = await call(load)
    return render(request, "conversations.html", title="Conversations", conversations=found,
                  total=total, page=page, more=page * PAGE_SIZE < total, text=text,
                  platform=platform, channel=channel, user=user, since=since, until=until,
                  platforms=("web", "slack", "telegram", "openai"))


@router.get("/{conversation_id}")
async def get_conversation(request: Request, admin: Admin, session: Session,
                           conversation_id: str = ConversationId) -> HTMLResponse:
    def load() -> tuple[Any, list[Any]]:
        detail = Archive(admin.store).get(conversation_id)
        verdicts = [] if detail is None else ModerationLog(admin.store).recent(
            limit=MAX_VERDICTS, conversation=conversation_id)
        return detail, verdicts

    detail, verdicts = await call(load)
    if detail is None:
        raise AdminError(404, "no such conversation (it may have been deleted)")
    by_message: dict[str, list[Any]] = {}
    for verdict in verdicts:
        by_message.setdefault(verdict.message_id, []).append(verdict)
    return render(request, "conversation.html", title=detail.title or "Conversation",
                  conversation=detail, verdicts=verdicts, by_message=by_message)


@router.post("/{conversation_id}/delete")
async def delete_conversation(admin: Admin, session: Session,
                              conversation_id: str = ConversationId) -> Response:
    def delete() -> bool:
        return bool(admin_actions.delete_conversation(
            admin.store, admin.web.client, conversation_id, actor=session.username))

    if not await call(delete):
        raise AdminError(404, "no such conversation (it may have been deleted)")
    return redirect("/admin/conversations", "deleted")


@router.get("/{conversation_id}/export")
async def export_conversation(admin: Admin, session: Session,
                              conversation_id: str = ConversationId) -> Response:
    def load() -> dict[str, Any] | None:
        data: dict[str, Any] | None = Archive(admin.store).export(conversation_id)
        if data is not None:  # reading someone's conversation out is worth a line too
            audit(admin, session.username, "conversation_export", conversation_id)
        return data

    data = await call(load)
    if data is None:
        raise AdminError(404, "no such conversation (it may have been deleted)")
    filename = "conversation-" + "".join(c if c.isalnum() or c in "-_" else "_"
                                         for c in conversation_id) + ".json"
    return Response(json.dumps(data, ensure_ascii=False, indent=2), media_type="application/json",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"',
                             "Cache-Control": "no-store"})
