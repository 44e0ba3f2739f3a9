"""What the edges need from the workers, whatever runs them.

Also the engine's text tools the web process needs to refuse a ``/v1`` request before it is
queued: a prompt sizer and a JSON-schema check.

The web server, the Slack and Telegram processes and the admin panel queue work and watch the
workers through a ``Backend``; they import no ``worker`` module and no Celery. The worker
package registers its implementation (``worker.backend:make_backend``, Celery over Redis)
under the ``assistant.backend`` entry point group, and each process loads it once at start
(``load_backend``), as the senders reach the worker the other way (``assistant.senders``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Any, Protocol

import redis

from assistant.envelope import ChatMessage, ConversationKey, Inbound
from assistant.errors import ConfigError
from assistant.settings import Settings

GROUP = "assistant.backend"
DEFAULT = "celery"


class Backend(Protocol):
    """Queues turns and documents for the workers, and answers about them."""

    @property
    def queue_name(self) -> str:
        """The shared turn queue: a Redis list whose length is the number waiting."""
        ...

    def enqueue_turn(self, conversation: ConversationKey, *, node: str | None = None,
                     retry: bool = True) -> None:
        """Ask a worker to answer ``conversation``'s pending messages; ``node``: that node's
        own queue (conversation affinity). Raises when the broker refuses."""
        ...

    def enqueue_index(self, document_id: int) -> None:
        """Ask a worker to index an uploaded knowledge document."""
        ...

    def node_for(self, conversation: ConversationKey) -> str | None:
        """The node that holds ``conversation``'s model state and can take a turn now."""
        ...

    def is_stranded(self, message: Inbound) -> bool:
        """``message`` waits with no turn running and no task naming its conversation."""
        ...

    def ping(self, timeout: float) -> list[str]:
        """The names of the worker nodes that answer."""
        ...

    def stalled(self, node: str) -> list[int]:
        """The node's pool processes whose running turn made no progress for too long."""
        ...

    def workers(self) -> list[dict[str, Any]]:
        """Every node that answers: host, pool, what runs now, its model."""
        ...

    def resize_pool(self, node: str, delta: int) -> bool:
        """Grow (+n) or shrink (-n) a node's pool; True when the node acknowledged."""
        ...

    def prompt_sizer(self) -> PromptSizer:
        """Counts prompts as the workers' engine will (the served model's tokenizer)."""
        ...

    def check_json_schema(self, schema: dict[str, Any]) -> None:
        """Raise ``SchemaUnsupported`` when the engine cannot constrain a reply to
        ``schema`` (a keyword its grammar converter lacks, a bad ``$ref``)."""
        ...


class PromptSizer(Protocol):
    """Counts a prompt as the engine will read it (``worker/prompt_size.py``), so that the
    web process refuses a request that cannot fit before it is queued."""

    @property
    def known(self) -> bool:
        """Whether the model's tokenizer and template are at hand (else: a bytes bound)."""
        ...

    @property
    def tool_format(self) -> str | None:
        """The chat template's own tool format (None: none, or unknown)."""
        ...

    @property
    def n_vocab(self) -> int | None:
        ...

    def reply_tokens(self, messages: Sequence[ChatMessage], context_size: int,
                     asked: int | None, default: int, raw: bool = False) -> int:
        """The reply's token budget, or ``ContextLengthExceeded``."""
        ...


BackendFactory = Callable[[Settings, redis.Redis], Backend]


def redis_url(settings: Settings) -> str:
    """The queue's Redis URL, or a clear ``ConfigError`` when it is not set."""
    if not settings.redis_url:
        raise ConfigError(
            "REDIS_URL is not set: `assistant up` starts an embedded Valkey and sets it; "
            "otherwise point REDIS_URL at your Redis, e.g. redis://127.0.0.1:6379/0"
        )
    return settings.redis_url


def load_backend(settings: Settings, client: redis.Redis, name: str = DEFAULT) -> Backend:
    """The registered backend ``name``, built for this process's settings and Redis client."""
    found = {entry.name: entry for entry in entry_points(group=GROUP)}
    if name not in found:
        raise ConfigError(
            f"no worker backend {name!r} is registered under the {GROUP!r} entry points "
            f"(found: {sorted(found) or 'none'}); reinstall the project: make install")
    factory: BackendFactory = found[name].load()
    return factory(settings, client)
