"""Edited prompts reach every worker on its next turn, without a restart.

The admin panel saves a persona version in SQL (``assistant.store.personas``) and then bumps a
counter in Redis (``announce``). Each worker keeps the prompts it built last; before a turn it
reads the counter (one GET) and rebuilds from SQL only when the counter moved, or when its copy
is older than ``max_age_seconds`` (in case an announcement was lost with Redis).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol, TypeVar

import redis

from assistant import keys
from assistant.errors import PromptError
from assistant.prompts import Prompt, PromptFile, PromptLibrary
from assistant.store.db import Store
from assistant.store.personas import Personas


class UsesPrompts(Protocol):
    """What ``LivePrompts.apply`` replaces in a turn's runtime (``assistant.conversation``)."""

    prompts: PromptLibrary
    safety: Any


RuntimeT = TypeVar("RuntimeT", bound=UsesPrompts)
log = logging.getLogger(__name__)

VERSION_KEY = keys.PROMPTS_VERSION
TRACE_SUFFIX = ":persona"


class VersionedPrompts(PromptLibrary):
    """A prompt library with some prompts replaced by saved versions (``versions``: name → id)."""

    def __init__(self, prompts: dict[str, Prompt], versions: Mapping[str, int]) -> None:
        super().__init__(prompts)
        self.versions = dict(versions)


def persona_versions(prompts: PromptLibrary) -> dict[str, int]:
    """The saved versions a library uses, by prompt name ({} for the files alone)."""
    return dict(prompts.versions) if isinstance(prompts, VersionedPrompts) else {}


def announce(client: redis.Redis) -> int:
    """Tell every worker that a prompt changed; returns the new counter."""
    return int(client.incr(VERSION_KEY))


def with_versions(base: PromptLibrary, templates: Mapping[str, tuple[int, str]]
                  ) -> VersionedPrompts:
    """``base`` with each named prompt's template replaced by ``(version id, template)``.

    A saved template that no longer fits its file (the file's variables changed since) is
    skipped with a warning: the file's text is used instead of failing every turn.
    """
    prompts = {name: base[name] for name in base.names()}
    versions: dict[str, int] = {}
    for name, (version_id, template) in templates.items():
        if name not in prompts:
            continue
        spec = prompts[name]
        try:
            prompts[name] = Prompt(name, PromptFile(description=spec.description,
                                                    variables=list(spec.variables),
                                                    template=template))
        except PromptError:
            log.warning("prompt %r version %d no longer fits its file; using the file",
                        name, version_id, exc_info=True)
            continue
        versions[name] = version_id
    return VersionedPrompts(prompts, versions)


class LivePrompts:
    """The newest prompts for each turn (``current``), re-read from SQL only when they changed."""

    def __init__(self, store: Store, client: redis.Redis, base: PromptLibrary,
                 max_age_seconds: float = 60.0) -> None:
        self.personas = Personas(store, base)
        self.client = client
        self.base = base
        self.max_age_seconds = max_age_seconds
        self._library: PromptLibrary | None = None
        self._seen: bytes | str | None = None
        self._loaded_at = 0.0
        self._safety: tuple[Any, PromptLibrary, Any] | None = None

    def current(self) -> PromptLibrary:
        try:
            seen = self.client.get(VERSION_KEY)
        except redis.RedisError:
            log.warning("could not read the prompts' version; keeping the prompts I have")
            seen = self._seen
        fresh = time.monotonic() - self._loaded_at < self.max_age_seconds
        if self._library is not None and seen == self._seen and fresh:
            return self._library
        try:
            newest = self.personas.newest()
        except Exception:
            # The store is down: keep what we had (or the files) and try again next turn.
            log.warning("could not read persona versions; keeping the prompts I have",
                        exc_info=True)
            return self._library or self.base
        editable = set(self.personas.names())
        self._library = with_versions(self.base, {
            name: (version.id, version.template) for name, version in newest.items()
            if name in editable})
        self._seen, self._loaded_at = seen, time.monotonic()
        return self._library

    def apply(self, runtime: RuntimeT) -> RuntimeT:
        """``runtime`` with the newest prompts, for the conversation and the safety refusals."""
        library = self.current()
        if library is runtime.prompts:
            return runtime
        safety = runtime.safety
        if safety is not None and getattr(safety, "prompts", library) is not library:
            cached = self._safety
            if cached is not None and cached[0] is safety and cached[1] is library:
                safety = cached[2]
            else:
                replaced = dataclasses.replace(safety, prompts=library)
                self._safety = (safety, library, replaced)
                safety = replaced
        return dataclasses.replace(runtime, prompts=library, safety=safety)  # type: ignore[type-var]


def trace_versions_key(trace_key: str) -> str:
    """Where a traced prompt's persona versions are kept, beside the trace itself."""
    return trace_key + TRACE_SUFFIX


def traced_versions(client: redis.Redis, reply_id: str) -> dict[str, int] | None:
    """The persona versions the traced prompt of ``reply_id`` used ({}: the files alone)."""
    raw = client.get(trace_versions_key(keys.trace(reply_id)))
    return None if raw is None else {str(k): int(v) for k, v in json.loads(raw).items()}
