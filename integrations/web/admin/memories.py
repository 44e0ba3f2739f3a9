"""One person's long-term memories, for admins, only where the policy allows it
(``ASSISTANT_LONGTERM_ADMIN_CONTENTS``; docs/memory.md): every view that shows contents writes
the audit log (who, whose, how many). With the policy off, admins see counts only (the
Settings page) and this page refuses."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from assistant.keys import user_ref
from assistant.store.memories import Memories
from integrations.web.admin.core import Admin, AdminContext, AdminError, Session, call, render

router = APIRouter(prefix="/admin/memories", include_in_schema=False)

POLICY_OFF = ("the policy does not let admins read people's memories "
              "(ASSISTANT_LONGTERM_ADMIN_CONTENTS is off): the Settings page shows counts")


def view(admin: AdminContext, actor: str, platform: str, workspace: str, user: str
         ) -> list[Any]:
    """The identity's own memories, oldest first; the view is audited (from a thread)."""
    from assistant.store.audit import AuditLog

    rows = Memories(admin.store).list([(platform, workspace, user)])
    AuditLog(admin.store).record(actor, "view_memories", user_ref(platform, workspace, user),
                                 {"memories": len(rows)})
    return rows


@router.get("")
async def get_memories(request: Request, admin: Admin, session: Session,
                       platform: str = Query("", max_length=32),
                       workspace: str = Query("default", max_length=128),
                       user: str = Query("", max_length=256)) -> HTMLResponse:
    if not admin.web.settings.longterm_admin_contents:
        raise AdminError(403, POLICY_OFF)
    rows = None
    if platform and user:
        rows = await call(view, admin, session.username, platform, workspace or "default",
                          user)
    return render(request, "memories.html", title="Memories", rows=rows, platform=platform,
                  workspace=workspace, user=user)
