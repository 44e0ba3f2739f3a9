"""An OpenAI-compatible ``/v1`` API (contract) through the same queue and workers.

Stateless like OpenAI's: the client sends the whole history with every request, so these
turns bring their own history and are not stored in memory.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from assistant.envelope import ChatMessage, ConversationKey, GenerationOptions, Inbound, Reply
from assistant.errors import AssistantError, InputRejected
from assistant.models import DEFAULT_MODEL
from assistant.pipeline import validate_text
from assistant.stream import Listener
from integrations.web.deps import QUEUE_POSITION_HEADER, State, WebState
from integrations.web.errors import error_body

router = APIRouter(prefix="/v1", tags=["openai"])


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class OpenAIMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text or "" for p in self.content if p.type == "text")
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # unknown OpenAI options are accepted and ignored
    model: str | None = None
    messages: list[OpenAIMessage] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    user: str | None = None
    stream_options: StreamOptions | None = None


def model_id(configured: str) -> str:
    """The id /v1/models reports: the configured name, or a GGUF path's file name."""
    if configured == DEFAULT_MODEL or "/" not in configured:
        return configured
    return Path(configured).name


def usage(reply: Reply) -> dict[str, int]:
    return {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens}


def to_inbound(body: CompletionRequest, max_chars: int) -> Inbound:
    *earlier, last = body.messages
    if last.role != "user":
        raise InputRejected("the last message must be the user's")
    history = tuple(
        ChatMessage(role="system" if m.role == "developer" else m.role, text=m.text())
        for m in earlier
    )
    request_id = uuid.uuid4().hex
    return Inbound(
        message_id=request_id,
        dedupe_id=f"openai:{request_id}",
        conversation=ConversationKey(platform="openai", channel=request_id),
        user_id=(body.user or "openai-client")[:200],
        text=validate_text(last.text(), max_chars),
        history=history,
        options=GenerationOptions(
            max_tokens=body.max_completion_tokens or body.max_tokens,
            temperature=body.temperature,
        ),
    )


@router.get("/models")
async def list_models(state: State) -> dict[str, Any]:
    """The model the workers serve."""
    return {"object": "list", "data": [{
        "id": model_id(state.settings.model), "object": "model", "created": 0,
        "owned_by": "self-hosted",
    }]}


@router.post("/chat/completions",
             responses={200: {"content": {"text/event-stream": {}}}, 429: {}})
async def create_chat_completion(body: CompletionRequest, state: State,
                                 response: Response) -> Any:
    """Chat completions as OpenAI's API does them, streamed (SSE, ``[DONE]``) or not.

    Rate limits and the daily quota apply per ``user`` (429 with ``Retry-After``); a busy
    queue is reported in ``X-Queue-Position`` only, to keep OpenAI's response shapes.
    """
    inbound = to_inbound(body, state.settings.max_input_chars)
    name = model_id(state.settings.model)
    created = int(time.time())
    if not body.stream:
        reply, position = await state.ask(inbound)
        if position is not None:
            response.headers[QUEUE_POSITION_HEADER] = str(position)
        return {
            "id": f"chatcmpl-{reply.message_id}", "object": "chat.completion",
            "created": created, "model": name,
            "choices": [{"index": 0, "finish_reason": reply.finish_reason,
                         "message": {"role": "assistant", "content": reply.text}}],
            "usage": usage(reply),
        }
    listener, position = await state.open_stream(inbound)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    if position is not None:
        headers[QUEUE_POSITION_HEADER] = str(position)
    return StreamingResponse(
        stream_chunks(state, listener, name, created, include_usage),
        media_type="text/event-stream",
        headers=headers,
    )


async def stream_chunks(state: WebState, listener: Listener, model: str, created: int,
                        include_usage: bool = False) -> AsyncIterator[str]:
    chunk_id = f"chatcmpl-{uuid.uuid4().hex}"

    def chunk(delta: dict[str, str], finish_reason: str | None = None) -> str:
        payload = {"id": chunk_id, "object": "chat.completion.chunk", "created": created,
                   "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
        return f"data: {json.dumps(payload)}\n\n"

    def usage_chunk(reply: Reply) -> str:
        # OpenAI's stream_options.include_usage: a last chunk with no choices, only usage.
        payload = {"id": chunk_id, "object": "chat.completion.chunk", "created": created,
                   "model": model, "choices": [], "usage": usage(reply)}
        return f"data: {json.dumps(payload)}\n\n"

    try:
        yield chunk({"role": "assistant", "content": ""})
        async for event in listener.events(state.settings.reply_timeout):
            if event.reply is not None:
                yield chunk({}, event.reply.finish_reason)
                if include_usage:
                    yield usage_chunk(event.reply)
            else:
                yield chunk({"content": event.text})
    except AssistantError as exc:
        _, body = error_body(exc)
        yield f"data: {json.dumps(body)}\n\n"
    finally:
        await listener.__aexit__(None, None, None)
    yield "data: [DONE]\n\n"
