"""The signed-in person's long-term memories (docs/memory.md): list, edit, delete, export.

Memories are made by chatting ("remember that …", or the page's Remember button, which sends
``/remember …``): the worker screens them with the input safety chain before they are kept.
An edit here is screened by the same chain, built once in this process on the first edit.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from assistant.envelope import ConversationKey, Inbound
from assistant.errors import ConversationNotFound, InputRejected, QueueUnavailable
from assistant.recall.service import REFUSAL_REASONS, LongTermMemory, edge_memory
from assistant.recall.text import MAX_FACT_CHARS
from assistant.store.memories import Identity, MemoryRow
from integrations.web.auth.principal import Caller, Principal
from integrations.web.deps import State, WebState

router = APIRouter(prefix="/api/memories", tags=["memories"])

LOCAL_USER = Query("web-user", pattern=r"^[A-Za-z0-9_-]{1,64}$",
                   description="Local mode only: the browser's user id (ignored otherwise)")


class MemoryOut(BaseModel):
    number: int = Field(description="Its place in the list (what /forget N uses)")
    id: int
    text: str
    platform: str
    private: bool
    automatic: bool = Field(description="Noticed by the assistant, not asked for")
    created_at: datetime
    updated_at: datetime


class MemoryEdit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=MAX_FACT_CHARS * 4)


def owner(caller: Principal, local_user: str) -> Identity:
    """Only the caller's own memories: a person's or key's id, or local mode's browser id."""
    return ("web", "default", caller.user_id or local_user)


def memory_of(state: WebState) -> LongTermMemory:
    memory = edge_memory(state.settings)
    if memory is None or "web" not in memory.settings.platforms:
        raise InputRejected(REFUSAL_REASONS["platform"])
    if memory.screen is None and state.settings.safety_enabled:
        memory.screen = _screen(state)
    return memory


_screen_lock = threading.Lock()
_safety: dict[int, Any] = {}


def _screen(state: WebState) -> Any:
    def screen(text: str) -> str:
        from assistant.safety.build import build_service

        with _screen_lock:
            if id(state) not in _safety:
                _safety[id(state)] = build_service(state.settings, state.client, None)
        service = _safety[id(state)]
        screened = service.screen_input(Inbound(
            dedupe_id="memory-edit", conversation=ConversationKey(platform="web",
                                                                  channel="memory-edit"),
            user_id="memory-edit", text=text))
        if screened.refusal is not None:
            raise InputRejected(screened.refusal)
        return str(screened.inbound.text)

    return screen


def _out(rows: list[MemoryRow]) -> list[MemoryOut]:
    return [MemoryOut(number=n, id=r.id, text=r.text, platform=r.platform, private=r.private,
                      automatic=r.automatic, created_at=r.created_at, updated_at=r.updated_at)
            for n, r in enumerate(rows, start=1)]


async def _call(function: Any, *args: Any) -> Any:
    try:
        return await run_in_threadpool(function, *args)
    except SQLAlchemyError as exc:
        raise QueueUnavailable(f"the store is unavailable: {exc}") from exc


@router.get("", response_model=list[MemoryOut])
async def list_memories(state: State, caller: Caller, user_id: str = LOCAL_USER
                        ) -> list[MemoryOut]:
    """What the assistant remembers about the caller, oldest first (with a linked person's
    Slack and Telegram memories)."""
    memory = memory_of(state)
    return _out(await _call(memory.listing, owner(caller, user_id)))


@router.patch("/{memory_id}", response_model=MemoryOut, responses={404: {}, 422: {}})
async def edit_memory(body: MemoryEdit, state: State, caller: Caller,
                      memory_id: int = Path(ge=1), user_id: str = LOCAL_USER) -> MemoryOut:
    """Change a memory's words (checked like a message: PII masked, injections refused)."""
    memory = memory_of(state)
    who = owner(caller, user_id)
    row = await _call(memory.edit, who, memory_id, body.text)
    if row is None:
        raise ConversationNotFound(f"no memory {memory_id}")
    rows = await _call(memory.listing, who)
    return next(m for m in _out(rows) if m.id == memory_id)


@router.delete("/{memory_id}", status_code=204, responses={404: {}})
async def delete_memory(state: State, caller: Caller, memory_id: int = Path(ge=1),
                        user_id: str = LOCAL_USER) -> Response:
    memory = memory_of(state)
    if not await _call(memory.delete, owner(caller, user_id), memory_id):
        raise ConversationNotFound(f"no memory {memory_id}")
    return Response(status_code=204)


@router.delete("", status_code=200)
async def delete_all_memories(state: State, caller: Caller, user_id: str = LOCAL_USER
                              ) -> dict[str, int]:
    memory = memory_of(state)
    return {"deleted": await _call(memory.forget, owner(caller, user_id), None)}


@router.get("/export")
async def export_memories(state: State, caller: Caller, user_id: str = LOCAL_USER
                          ) -> JSONResponse:
    """Everything remembered about the caller, as a JSON file."""
    memory = memory_of(state)
    exported = await _call(memory.export, owner(caller, user_id))
    return JSONResponse(exported, headers={
        "Content-Disposition": 'attachment; filename="memories.json"'})
