"""The web chat's JSON API (contract): ``/api/chat`` and ``/api/conversations/{id}``."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Literal

import redis
from fastapi import APIRouter, Path, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from assistant import keys, turns
from assistant.conversations import Conversations
from assistant.envelope import Citation, ConversationKey, Inbound, Reply
from assistant.errors import (
    AssistantError,
    ConversationBusy,
    ConversationNotFound,
    QueueUnavailable,
)
from assistant.memory import RedisConversationHistory
from assistant.pipeline import validate_text
from assistant.store import shared_store
from assistant.stream import Listener
from integrations.web.auth.principal import Caller
from integrations.web.deps import QUEUE_POSITION_HEADER, State, WebState
from integrations.web.errors import error_body

router = APIRouter(prefix="/api", tags=["chat"])

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
ConversationId = Path(pattern=ID_PATTERN, description="The conversation's id")


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    conversation_id: str | None = Field(None, pattern=ID_PATTERN,
                                        description="Omit to start a new conversation")
    user_id: str = Field("web-user", pattern=ID_PATTERN)
    text: str = Field(min_length=1, description="The user's message")
    message_id: str | None = Field(
        None, pattern=ID_PATTERN,
        description="Client-chosen idempotency key: a retried request with the same id, "
                    "conversation and user is answered once. The server names the message "
                    "itself; this id never names a stored reply.",
    )
    stream: bool = False


class ChatResponse(BaseModel):
    conversation_id: str
    message_id: str = Field(description="The id of the assistant's reply")
    reply: str
    citations: list[Citation] = Field(
        default_factory=list,
        description="The documents the reply drew on, numbered as the reply cites them "
                    "(docs/knowledge.md)")


class MessageOut(BaseModel):
    role: Literal["system", "user", "assistant"]
    text: str
    message_id: str
    created_at: datetime


class ConversationOut(BaseModel):
    conversation_id: str
    messages: list[MessageOut]


def web_conversation(conversation_id: str, owner: str | None = None) -> ConversationKey:
    """A web conversation; with sign-in its owner is part of its key (docs/security.md)."""
    return ConversationKey(platform="web", channel=conversation_id, user=owner)


def chat_response(conversation_id: str, reply: Reply) -> ChatResponse:
    return ChatResponse(conversation_id=conversation_id, message_id=reply.message_id,
                        reply=reply.text, citations=list(reply.citations))


def sse(event: str, data: object) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


@router.post(
    "/chat",
    response_model=ChatResponse,
    responses={200: {"content": {"text/event-stream": {}}}, 413: {}, 429: {}, 503: {},
               504: {}},
)
async def post_chat(body: ChatRequest, state: State, response: Response,
                    request: Request, caller: Caller) -> object:
    """Send a message; get the whole reply, or with ``stream`` an event stream of tokens.

    A user or conversation past its rate limit or daily quota gets 429 with ``Retry-After``.
    When the queue is busy the reply still comes; ``X-Queue-Position`` (and, streaming, a
    first ``queued`` event) says how many messages wait before it.
    """
    text = validate_text(body.text, state.settings.max_input_chars)
    conversation_id = body.conversation_id or uuid.uuid4().hex
    # The server's id names the message, its reply and its stream; the client's id is only a
    # dedupe token inside its conversation and user (docs/security.md, "What each caller can do").
    inbound = caller.claim(Inbound(
        message_id=uuid.uuid4().hex,
        dedupe_id=keys.web_dedupe_id(conversation_id, caller.user_id or body.user_id,
                                     body.message_id or uuid.uuid4().hex),
        conversation=caller.web_conversation(conversation_id),
        user_id=body.user_id,  # replaced by the caller's own id unless in local mode
        text=text,
    ))
    if not body.stream:
        reply, position = await state.ask(inbound, request)
        if position is not None:
            response.headers[QUEUE_POSITION_HEADER] = str(position)
        return chat_response(conversation_id, reply)

    listener, position = await state.open_stream(inbound)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    if position is not None:
        headers[QUEUE_POSITION_HEADER] = str(position)
    return StreamingResponse(
        stream_events(state, listener, conversation_id, position),
        media_type="text/event-stream",
        headers=headers,
    )


async def stream_events(state: WebState, listener: Listener, conversation_id: str,
                        queue_position: int | None = None) -> AsyncIterator[str]:
    """A ``queued`` event when the queue is busy, ``token`` events as the model writes, then
    one ``done`` (or ``error``) event."""
    ended = False  # not ended when the client disconnected mid-stream (the reply is given up)
    try:
        if queue_position is not None:
            yield sse("queued", {"position": queue_position})
        async for event in listener.events(state.settings.reply_timeout):
            if event.reply is not None:
                ended = True
                yield sse("done", chat_response(conversation_id, event.reply).model_dump())
            else:
                yield sse("token", {"text": event.text})
    except AssistantError as exc:
        ended = True
        status, body = error_body(exc)
        yield sse("error", {**body, "status": status})
    finally:
        await state.end_stream(listener, client_gone=not ended)


def _history(state: WebState, conversation_id: str, owner: str | None = None
             ) -> RedisConversationHistory:
    return RedisConversationHistory(state.client, web_conversation(conversation_id, owner),
                                    state.settings.retention_seconds)


def _read_conversation(state: WebState, conversation_id: str, owner: str | None = None
                       ) -> ConversationOut:
    history = _history(state, conversation_id, owner)
    try:
        queued = turns.pending(state.client, history.conversation)
        if not history.exists() and not queued:
            raise ConversationNotFound(f"no conversation {conversation_id!r}")
        records = history.records()
    except redis.RedisError as exc:
        raise QueueUnavailable(f"Redis is unavailable: {exc}") from exc
    seen = {m.message_id for m in records}
    messages = [MessageOut(role=m.role, text=m.text, message_id=m.message_id,
                           created_at=m.created_at) for m in records]
    # Messages still waiting for their turn belong to the conversation too (a reload mid-reply).
    messages += [MessageOut(role="user", text=i.text, message_id=i.message_id,
                            created_at=i.received_at) for i in queued if i.message_id not in seen]
    return ConversationOut(conversation_id=conversation_id, messages=messages)


@router.get("/conversations/{conversation_id}", response_model=ConversationOut,
            responses={404: {}, 503: {}})
async def get_conversation(state: State, caller: Caller,
                           conversation_id: str = ConversationId) -> ConversationOut:
    """The conversation's messages, oldest first (what the chat page reloads from)."""
    return await run_in_threadpool(_read_conversation, state, conversation_id, caller.scope)


def _delete_conversation(state: WebState, conversation_id: str, owner: str | None = None
                         ) -> bool:
    """Delete the conversation if no turn is running; False (at once) if one is."""
    history = _history(state, conversation_id, owner)
    try:
        if not history.exists() and not turns.pending(state.client, history.conversation):
            raise ConversationNotFound(f"no conversation {conversation_id!r}")
        # Queue, memory and the admins' archive copy, under the conversation's lock.
        service = Conversations(state.client, lambda: shared_store(state.settings.sql_url),
                                state.settings.retention_seconds)
        cleared = service.reset(history.conversation)
        if cleared is None:
            return False
        if not cleared.live:  # another DELETE cleared it while this one waited for the lock
            raise ConversationNotFound(f"no conversation {conversation_id!r}")
    except redis.RedisError as exc:
        raise QueueUnavailable(f"Redis is unavailable: {exc}") from exc
    except SQLAlchemyError as exc:
        raise QueueUnavailable(f"the store is unavailable: {exc}") from exc
    return True


# How often a DELETE looks again whether the conversation's turn has ended.
DELETE_RETRY_SECONDS = 0.1


@router.delete("/conversations/{conversation_id}", status_code=204,
               responses={404: {}, 409: {}, 503: {}})
async def delete_conversation(state: State, caller: Caller,
                              conversation_id: str = ConversationId) -> Response:
    """Forget the conversation (start over).

    A turn in progress is waited for here, asynchronously (each look is a short call in the
    thread pool, so waiting DELETEs hold no thread: issue 15); past the reply timeout, 409.
    """
    deadline = time.monotonic() + state.settings.reply_timeout
    while not await run_in_threadpool(_delete_conversation, state, conversation_id,
                                      caller.scope):
        if time.monotonic() >= deadline:
            raise ConversationBusy("the conversation is still answering a message; "
                                   "try again when the reply is done")
        await asyncio.sleep(DELETE_RETRY_SECONDS)
    return Response(status_code=204)
