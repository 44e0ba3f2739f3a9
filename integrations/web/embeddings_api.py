"""``POST /v1/embeddings`` (OpenAI-compatible) from the local embedding component.

RAG clients embed their documents and questions here with the model the safety check uses
(``assistant.embedding``: all-MiniLM-L6-v2, int8, shipped in a wheel), so nothing leaves the
host. It runs in the web process, in a worker thread, bounded like ``/v1`` chat requests
(``ASSISTANT_API_MAX_MESSAGES`` inputs, ``ASSISTANT_API_MAX_CHARS`` characters). What is
refused: token-id inputs and ``dimensions`` other than the model's (docs/openai-api.md). Each
request is charged to its caller like a chat message (ban, mute, quota, the user's rate bucket:
``assistant.limits.check``), so a caller cannot turn the web process' CPU into an unmetered
embedding service (OWASP LLM10, unbounded consumption).
"""

from __future__ import annotations

import base64
import uuid
from typing import Any, Literal

import redis
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from assistant import limits
from assistant.embedding import MINILM_ID, default_embedder
from assistant.envelope import ConversationKey, Inbound
from assistant.errors import InvalidParameter, ModelNotFound, QueueUnavailable
from assistant.settings import Settings
from integrations.web.auth.principal import Caller, Principal
from integrations.web.deps import State, WebState

router = APIRouter(prefix="/v1", tags=["openai"])
MODEL_NAMES = (MINILM_ID, "all-MiniLM-L6-v2")


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str | list[str] | list[int] | list[list[int]]
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


def _texts(body: EmbeddingRequest, settings: Settings) -> list[str]:
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts:
        raise InvalidParameter("`input` must not be empty.", param="input")
    if not all(isinstance(text, str) for text in texts):
        raise InvalidParameter("Token-id inputs are not supported: send text.", param="input")
    strings = [str(text) for text in texts]
    if any(not text.strip() for text in strings):
        raise InvalidParameter("`input` must not contain empty strings.", param="input")
    if len(strings) > settings.api_max_messages:
        raise InvalidParameter(f"At most {settings.api_max_messages} inputs per request.",
                               param="input")
    if sum(len(text) for text in strings) > settings.api_max_chars:
        raise InvalidParameter(f"At most {settings.api_max_chars} characters per request.",
                               param="input", code="string_above_max_length")
    return strings


def _embed(body: EmbeddingRequest, settings: Settings) -> dict[str, Any]:
    if body.model not in MODEL_NAMES:
        raise ModelNotFound(f"The model `{body.model}` does not exist "
                            f"(embeddings: {MINILM_ID}).")
    texts = _texts(body, settings)
    embedder = default_embedder()
    if body.dimensions is not None and body.dimensions != embedder.dimensions:
        raise InvalidParameter(f"{MINILM_ID} has {embedder.dimensions} dimensions.",
                               param="dimensions")
    vectors = embedder.embed(texts)
    data = []
    for index, vector in enumerate(vectors):
        value: Any = (base64.b64encode(vector.astype("<f4").tobytes()).decode()
                      if body.encoding_format == "base64" else vector.tolist())
        data.append({"object": "embedding", "index": index, "embedding": value})
    tokens = embedder.count_tokens(texts)
    return {"object": "list", "data": data, "model": MINILM_ID,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def _charge(state: WebState, caller: Principal, body: EmbeddingRequest) -> None:
    """The caller's limits, as for a ``/v1`` chat request by the same ``user`` (the key's
    owner outside local mode): raises ``Throttled`` (429 + Retry-After) when refused."""
    fairness = state.dispatcher.limits
    if not fairness.refuses:
        return
    request_id = uuid.uuid4().hex
    inbound = caller.claim(Inbound(
        message_id=request_id, dedupe_id=f"openai-embeddings:{request_id}",
        conversation=ConversationKey(platform="openai", channel="embeddings"),
        user_id=(body.user or "openai-client")[:200], text="embeddings"))
    try:
        limits.check(state.client, fairness, inbound)
    except redis.RedisError as exc:
        raise QueueUnavailable(f"Redis is unavailable: {exc}") from exc


@router.post("/embeddings", responses={400: {}, 404: {}, 429: {}})
async def create_embeddings(body: EmbeddingRequest, state: State,
                            caller: Caller) -> dict[str, Any]:
    """Vectors for one text or a list of texts (normalised, 384 dimensions)."""
    await run_in_threadpool(_charge, state, caller, body)
    return await run_in_threadpool(_embed, body, state.settings)
