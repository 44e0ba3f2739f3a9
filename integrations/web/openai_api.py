"""An OpenAI-compatible ``/v1`` API (contract) through the same queue and workers.

Stateless like OpenAI's: the client sends the whole history with every request, so these
turns bring their own history and are not stored in memory. What is supported and what is
refused: docs/openai-api.md. Requests are checked here, before anything is queued: invalid or
unsupported parameters, too many messages or characters, and prompts too long for the
model's context get OpenAI's 400 errors at once.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from assistant.backend import Backend
from assistant.envelope import ChatMessage, Inbound, Reply, reply_id_for
from assistant.errors import AssistantError, InvalidParameter, ModelNotFound, SchemaUnsupported
from assistant.models import DEFAULT_MODEL, KNOWN_MODELS
from assistant.pipeline import TurnConfig, stateless_messages
from assistant.prompts import PromptLibrary
from assistant.settings import Settings
from assistant.stream import Listener
from assistant.tools import NATIVE_ARGUMENTS_KEY, call_id, call_schema, must_call, uses_tools
from integrations.web.auth.principal import Caller
from integrations.web.deps import QUEUE_POSITION_HEADER, State, WebState
from integrations.web.errors import error_body
from integrations.web.openai_schema import (
    CompletionRequest,
    TextCompletionRequest,
    to_inbound,
    to_raw_inbound,
    total_chars,
)
from integrations.web.openai_stream import CallStream

router = APIRouter(prefix="/v1", tags=["openai"])


def model_id(configured: str) -> str:
    """The id /v1/models reports: the configured name, or a GGUF path's file name."""
    if configured == DEFAULT_MODEL or "/" not in configured:
        return configured
    return Path(configured).name


def model_names(settings: Settings) -> list[str]:
    """The served model's id first, then every other name a request may use for it."""
    configured = settings.model
    names = [model_id(configured), configured, Path(configured).name, Path(configured).stem]
    file_name = Path(configured).name
    names += [known for known, spec in KNOWN_MODELS.items()
              if known == configured or spec.filename == file_name]
    names += [a.strip() for a in settings.model_aliases.split(",") if a.strip()]
    return list(dict.fromkeys(n for n in names if n))


def model_card(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "self-hosted"}


def usage(reply: Reply) -> dict[str, int]:
    return {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens}


@lru_cache(maxsize=1)
def _prompts() -> PromptLibrary:
    return PromptLibrary.load()


@router.get("/models")
async def list_models(state: State) -> dict[str, Any]:
    """The model the workers serve, then its aliases (each accepted as ``model``)."""
    return {"object": "list", "data": [model_card(n) for n in model_names(state.settings)]}


@router.get("/models/{model:path}", responses={404: {}})
async def retrieve_model(model: str, state: State) -> dict[str, Any]:
    """One model by its id or an alias; 404 ``model_not_found`` for any other name."""
    if model not in model_names(state.settings):
        raise ModelNotFound(f"The model `{model}` does not exist.")
    return model_card(model)


def _prepare(body: CompletionRequest, settings: Settings, backend: Backend) -> Inbound:
    """Check the request and build its envelope; raises OpenAI's 400s (runs in a thread:
    the model's tokenizer may load and count)."""
    if body.model is not None and body.model not in model_names(settings):
        raise ModelNotFound(f"The model `{body.model}` does not exist; GET /v1/models "
                            "lists the names this server accepts.")
    if len(body.messages) > settings.api_max_messages:
        raise InvalidParameter(f"{len(body.messages)} messages; the limit is "
                               f"{settings.api_max_messages}.", param="messages",
                               code="array_above_max_length")
    size = total_chars(body)
    if size > settings.api_max_chars:
        raise InvalidParameter(f"the request holds {size} characters of messages, tools and "
                               f"schemas; the limit is {settings.api_max_chars}.",
                               param="messages", code="string_above_max_length")
    asked = body.max_completion_tokens or body.max_tokens
    if asked is not None:
        asked = min(asked, settings.api_max_tokens)  # ASSISTANT_API_MAX_TOKENS
    prompts = _prompts()
    inbound = to_inbound(body, settings.max_input_chars, asked)
    options = inbound.options
    counter = backend.prompt_sizer()
    # Each schema alone (to name it), then the one the worker constrains a call with
    # (assistant/pipeline.py): every offered tool in one schema, which can be past the
    # grammar's bounds when no tool alone is.
    calls = call_schema(options, counter.tool_format if counter.known else None)
    for schema, param in ((options.json_schema, "response_format.json_schema.schema"),
                          *((t.parameters, "tools.function.parameters") for t in options.tools),
                          (calls, "tools")):
        if schema is not None:
            try:
                backend.check_json_schema(schema)
            except SchemaUnsupported as exc:
                raise InvalidParameter(str(exc), param=param) from exc
    if options.logit_bias:
        n_vocab = counter.n_vocab
        if n_vocab is not None and max(options.logit_bias) >= n_vocab:
            raise InvalidParameter(f"logit_bias: this model's token ids are below {n_vocab}.",
                                   param="logit_bias")
    # The prompt as the worker will build it: in the chat template's own tool format when
    # it has one. Without the model file here, the format is unknown: both are sized.
    formats = [counter.tool_format] if counter.known else [None, *NATIVE_ARGUMENTS_KEY]
    reply_tokens = min(
        counter.reply_tokens(stateless_messages([inbound], prompts, TurnConfig(), form),
                             settings.context_size, asked, settings.max_tokens)
        for form in formats)
    return inbound.model_copy(update={
        "options": options.model_copy(update={"max_tokens": reply_tokens})})


def _prepare_text(body: TextCompletionRequest, settings: Settings,
                  backend: Backend) -> Inbound:
    """A legacy completion's checks and envelope, as ``_prepare``'s for chat (in a thread)."""
    if body.model is not None and body.model not in model_names(settings):
        raise ModelNotFound(f"The model `{body.model}` does not exist; GET /v1/models "
                            "lists the names this server accepts.")
    asked = min(body.max_tokens or 16, settings.api_max_tokens)
    inbound = to_raw_inbound(body, settings.max_input_chars, asked)
    counter = backend.prompt_sizer()
    options = inbound.options
    if options.logit_bias:
        n_vocab = counter.n_vocab
        if n_vocab is not None and max(options.logit_bias) >= n_vocab:
            raise InvalidParameter(f"logit_bias: this model's token ids are below {n_vocab}.",
                                   param="logit_bias")
    prompt = (ChatMessage(role="user", text=inbound.text),)
    counter.reply_tokens(prompt, settings.context_size, asked, settings.max_tokens, raw=True)
    return inbound


@router.post("/completions",
             responses={200: {"content": {"text/event-stream": {}}}, 400: {}, 404: {}, 429: {}})
async def create_completion(body: TextCompletionRequest, state: State, response: Response,
                            request: Request, caller: Caller) -> Any:
    """The legacy completions API: the prompt continued as written, without the chat
    template, the persona or documents; the same keys, limits, queue and safety checks as
    chat completions (docs/openai-api.md)."""
    inbound = caller.claim(await run_in_threadpool(_prepare_text, body, state.settings,
                                                    state.backend))
    name = model_id(state.settings.model)
    created = int(time.time())
    echo = inbound.text if body.echo else ""
    if not body.stream:
        reply, position = await state.ask(inbound, request)
        if reply.finish_reason == "error":
            return server_error(reply)
        if position is not None:
            response.headers[QUEUE_POSITION_HEADER] = str(position)
        return {"id": f"cmpl-{reply.message_id}", "object": "text_completion",
                "created": created, "model": name,
                "choices": [{"index": 0, "text": echo + reply.text, "logprobs": None,
                             "finish_reason": reply.finish_reason}],
                "usage": usage(reply)}
    listener, position = await state.open_stream(inbound)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return event_stream(text_chunks(state, listener, name, created, include_usage, echo),
                        position)


def event_stream(chunks: AsyncIterator[str], position: int | None) -> StreamingResponse:
    """Server-sent events, unbuffered, with the message's place in a busy queue."""
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    if position is not None:
        headers[QUEUE_POSITION_HEADER] = str(position)
    return StreamingResponse(chunks, media_type="text/event-stream", headers=headers)


async def text_chunks(state: WebState, listener: Listener, model: str, created: int,
                      include_usage: bool, echo: str) -> AsyncIterator[str]:
    """The legacy completions' stream: ``text_completion`` chunks, then ``[DONE]``."""
    chunk_id = f"cmpl-{uuid.uuid4().hex}"

    def chunk(text: str, finish_reason: str | None = None, **extra: Any) -> str:
        payload = {"id": chunk_id, "object": "text_completion", "created": created,
                   "model": model, "choices": [{"index": 0, "text": text, "logprobs": None,
                                                "finish_reason": finish_reason}], **extra}
        return f"data: {json.dumps(payload)}\n\n"

    ended, shown = False, False
    try:
        if echo:
            yield chunk(echo)
        async for event in listener.events(state.settings.reply_timeout):
            reply = event.reply
            if reply is None:
                shown = True
                yield chunk(event.text)
                continue
            ended = True
            if reply.finish_reason == "error":
                yield f"data: {json.dumps(server_error_body(reply))}\n\n"
                break
            # No tokens came: a refusal before the model, or a reply stored before we
            # listened. Its text is the whole answer.
            yield chunk("" if shown else reply.text, reply.finish_reason)
            if include_usage:
                payload = {"id": chunk_id, "object": "text_completion", "created": created,
                           "model": model, "choices": [], "usage": usage(reply)}
                yield f"data: {json.dumps(payload)}\n\n"
    except AssistantError as exc:
        ended = True
        _, body = error_body(exc)
        yield f"data: {json.dumps(body)}\n\n"
    finally:
        await state.end_stream(listener, client_gone=not ended)
    yield "data: [DONE]\n\n"


@router.post("/chat/completions",
             responses={200: {"content": {"text/event-stream": {}}}, 400: {}, 404: {}, 429: {}})
async def create_chat_completion(body: CompletionRequest, state: State,
                                 response: Response, request: Request,
                                 caller: Caller) -> Any:
    """Chat completions as OpenAI's API does them, streamed (SSE, ``[DONE]``) or not.

    Rate limits and the daily quota apply per ``user`` (429 with ``Retry-After``); a busy
    queue is reported in ``X-Queue-Position`` only, to keep OpenAI's response shapes.
    """
    # The key's owner, not the body's ``user``, is who asks (outside local mode).
    inbound = caller.claim(await run_in_threadpool(_prepare, body, state.settings,
                                                    state.backend))
    name = model_id(state.settings.model)
    created = int(time.time())
    if not body.stream:
        reply, position = await state.ask(inbound, request)
        if reply.finish_reason == "error":
            return server_error(reply)
        if position is not None:
            response.headers[QUEUE_POSITION_HEADER] = str(position)
        return {
            "id": f"chatcmpl-{reply.message_id}", "object": "chat.completion",
            "created": created, "model": name,
            "choices": [{"index": 0, "finish_reason": reply.finish_reason,
                         "message": message(reply)}],
            "usage": usage(reply),
            # The knowledge-base passages the reply used (docs/knowledge.md); an extra field
            # OpenAI's clients ignore.
            **citations_field(reply),
        }
    listener, position = await state.open_stream(inbound)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return event_stream(stream_chunks(state, listener, name, created, include_usage, inbound),
                        position)


def message(reply: Reply) -> dict[str, Any]:
    """The assistant message of a reply: its text, or its tool calls (content null)."""
    if reply.tool_calls:
        return {"role": "assistant", "content": None, "tool_calls": [
            {"id": c.id, "type": "function",
             "function": {"name": c.name, "arguments": c.arguments}}
            for c in reply.tool_calls]}
    return {"role": "assistant", "content": reply.text}


def citations_field(reply: Reply) -> dict[str, Any]:
    """``{"citations": [...]}`` when the reply drew on documents, else nothing."""
    if not reply.citations:
        return {}
    return {"citations": [c.model_dump() for c in reply.citations]}


def server_error(reply: Reply) -> JSONResponse:
    """A turn that failed in the worker (it gave up after its retries): OpenAI's 500, not a
    200 with an apology and a finish_reason OpenAI does not have."""
    return JSONResponse(status_code=500, content=server_error_body(reply))


def server_error_body(reply: Reply) -> dict[str, Any]:
    return {"error": {"message": f"The server could not answer this request: {reply.text}",
                      "type": "server_error", "param": None, "code": None}}


async def stream_chunks(state: WebState, listener: Listener, model: str, created: int,
                        include_usage: bool = False, inbound: Inbound | None = None
                        ) -> AsyncIterator[str]:
    """OpenAI's chunks. With tools, text that may be a call is held back until it is known;
    a call goes out as OpenAI streams one: id and name first, then its arguments as the model
    writes them (``openai_stream.CallStream``)."""
    chunk_id = f"chatcmpl-{uuid.uuid4().hex}"
    options = inbound.options if inbound is not None else None
    hold_all = options is not None and must_call(options)
    deciding = options is not None and uses_tools(options) and not hold_all
    # The worker names the call after the reply's id, which the inbound's id fixes.
    call = CallStream(call_id(reply_id_for([inbound.message_id]))) if inbound else None
    held: list[str] = []
    shown = False  # whether any text went out as content

    def chunk(delta: dict[str, Any], finish_reason: str | None = None,
              extra: dict[str, Any] | None = None) -> str:
        payload = {"id": chunk_id, "object": "chat.completion.chunk", "created": created,
                   "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
                   **(extra or {})}
        return f"data: {json.dumps(payload)}\n\n"

    def usage_chunk(reply: Reply) -> str:
        # OpenAI's stream_options.include_usage: a last chunk with no choices, only usage.
        payload = {"id": chunk_id, "object": "chat.completion.chunk", "created": created,
                   "model": model, "choices": [], "usage": usage(reply)}
        return f"data: {json.dumps(payload)}\n\n"

    def call_chunks(piece: str) -> list[str]:
        assert call is not None
        return [chunk({"tool_calls": [delta]}) for delta in call.feed(piece)]

    ended = False  # not ended when the client disconnected mid-stream (the reply is given up)
    try:
        yield chunk({"role": "assistant", "content": ""})
        async for event in listener.events(state.settings.reply_timeout):
            reply = event.reply
            if reply is None:
                if deciding:
                    held.append(event.text)
                    start = "".join(held).lstrip()
                    if start:
                        # A call starts with "{" (worker/grammar.py); anything else is text.
                        hold_all, deciding = start.startswith("{"), False
                        if not hold_all:
                            yield chunk({"content": "".join(held)})
                            held, shown = [], True
                        else:
                            for line in call_chunks("".join(held)):
                                yield line
                elif hold_all:
                    held.append(event.text)
                    for line in call_chunks(event.text):
                        yield line
                else:
                    yield chunk({"content": event.text})
                    shown = True
                continue
            ended = True
            if reply.finish_reason == "error":
                yield f"data: {json.dumps(server_error_body(reply))}\n\n"
                break
            for index, made in enumerate(reply.tool_calls):
                rest = call.rest(made.arguments) if call and call.started and index == 0 else None
                if rest is None:  # not streamed (a reply stored before we listened)
                    yield chunk({"tool_calls": [{"index": index, "id": made.id,
                                                 "type": "function",
                                                 "function": {"name": made.name,
                                                              "arguments": ""}}]})
                    rest = made.arguments
                if rest:
                    yield chunk({"tool_calls": [{"index": index,
                                                 "function": {"arguments": rest}}]})
            if held and not reply.tool_calls and not (call and call.started):
                yield chunk({"content": "".join(held)})
            elif not shown and not held and not reply.tool_calls and reply.text:
                # No tokens came: a refusal before the model, or a reply stored before we
                # listened (a retried request). Its text is the whole answer.
                yield chunk({"content": reply.text})
            yield chunk({}, reply.finish_reason, citations_field(reply))
            if include_usage:
                yield usage_chunk(reply)
    except AssistantError as exc:
        ended = True
        _, body = error_body(exc)
        yield f"data: {json.dumps(body)}\n\n"
    finally:
        await state.end_stream(listener, client_gone=not ended)
    yield "data: [DONE]\n\n"
