"""Long-term memory: save what a person asks to keep, find what matters to a turn, let them
see, edit, export and delete it. Every edge calls this one implementation (docs/memory.md).

Where memories may be made and recalled (``RecallSettings``): on the platforms an admin left
on; in a private conversation (a DM, the person's web chat) always; in a group chat, Slack
channel or Telegram group only when an admin listed that channel, and then a group recalls
only what was said in that same group, so nothing told in private ever reaches a group reply.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from assistant.embedding import Embedder
from assistant.envelope import ConversationKey, Inbound
from assistant.errors import InputRejected
from assistant.recall.commands import Command
from assistant.recall.extract import Classifier, extract
from assistant.recall.search import Index
from assistant.recall.text import clean_fact, quoted
from assistant.safety.checks.normalise import normalize
from assistant.store.db import Store
from assistant.store.memories import Identity, Memories, MemoryRow, Stamp

log = logging.getLogger(__name__)

PURGE_EVERY_SECONDS = 3600.0
# How long recall trusts who a person is (their linked identities) before asking SQL again:
# a link or an unlink an admin makes reaches recall within this time.
IDENTITIES_TTL_SECONDS = 30.0
# People whose search index a process keeps (~1.6 MB each for 1,000 memories).
MAX_CACHED_INDEXES = 256
# Told a fact's text, returns it screened and masked (the input safety chain), or raises
# ``InputRejected`` when the chain blocks it.
Screen = Callable[[str], str]
TokenCounter = Callable[[str], int]
# An automatic memory this close in meaning (cosine of the shared embedder's vectors) to one
# the person has is not saved again: "I am a vegetarian" after "I'm vegetarian" (0.93), "I'm a
# nurse" after "I work as a nurse" (0.88); "I like coffee" after "I like tea" (0.74) is saved.
DUPLICATE_COSINE = 0.85


@dataclass(frozen=True)
class RecallSettings:
    """The admins' knobs (``Settings``' ``ASSISTANT_LONGTERM_*``)."""

    platforms: frozenset[str] = frozenset({"slack", "telegram", "web"})
    # "platform:workspace:channel" (or "platform:channel" for the default workspace) where
    # memories may be made and recalled in a shared conversation.
    group_channels: frozenset[str] = frozenset()
    retention_days: float = 0.0  # 0: kept until the person deletes them
    prompt_tokens: int = 120
    max_items: int = 6
    max_per_person: int = 2000
    min_cosine: float = 0.2
    # Automatic extraction after a turn (``LongTermMemory.notice``); off by default.
    auto: bool = False
    # Conversations where memory is off although their platform has it (same forms as
    # ``group_channels``): nothing made, nothing recalled there.
    off_channels: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: Any) -> RecallSettings:
        return cls(
            platforms=_names(settings.longterm_platforms),
            group_channels=_names(settings.longterm_group_channels, lower=False),
            retention_days=settings.longterm_retention_days,
            prompt_tokens=settings.longterm_prompt_tokens,
            max_per_person=settings.longterm_max_per_person,
            auto=settings.longterm_auto,
            off_channels=_names(settings.longterm_off_channels, lower=False),
        )


def _names(text: str, lower: bool = True) -> frozenset[str]:
    parts = (p.strip() for p in text.split(","))
    return frozenset((p.lower() if lower else p) for p in parts if p)


def _channel_names(conversation: ConversationKey) -> set[str]:
    """How an admin may name this conversation's channel in a setting."""
    names = {f"{conversation.platform}:{conversation.workspace}:{conversation.channel}"}
    if conversation.workspace == "default":
        names.add(f"{conversation.platform}:{conversation.channel}")
    return names


def is_private(conversation: ConversationKey) -> bool:
    """A DM, or a web conversation (the web chat is one person's own)."""
    return conversation.user is not None or conversation.platform == "web"


def owner_of(inbound: Inbound) -> Identity:
    key = inbound.conversation
    return (key.platform, key.workspace, inbound.user_id)


class LongTermMemory:
    """The store, the shared embedder and the settings; one per process (its search index
    cache is per process, refreshed when a person's memories change)."""

    def __init__(self, store: Store, embedder: Embedder, settings: RecallSettings,
                 screen: Screen | None = None) -> None:
        self.memories = Memories(store)
        self.embedder = embedder
        self.settings = settings
        self.screen = screen
        self._indexes: dict[tuple[object, ...], tuple[Stamp, Index]] = {}
        self._lock = threading.Lock()
        self._purged_at = float("-inf")
        self._identities: dict[Identity, tuple[float, list[Identity]]] = {}

    # -- where ----------------------------------------------------------------------------------

    def refusal(self, conversation: ConversationKey) -> str | None:
        """Why memories are not made or recalled here (a ``REFUSAL_REASONS`` key), or None."""
        if conversation.platform not in self.settings.platforms:
            return "platform"
        if _channel_names(conversation) & self.settings.off_channels:
            return "channel"
        if not is_private(conversation) and not self._group_allowed(conversation):
            return "group"
        return None

    def _group_allowed(self, conversation: ConversationKey) -> bool:
        return bool(_channel_names(conversation) & self.settings.group_channels)

    @staticmethod
    def _channel_filter(conversation: ConversationKey) -> tuple[str, str, str] | None:
        """Private conversations recall everything; a group only its own channel's memories."""
        if is_private(conversation):
            return None
        return (conversation.platform, conversation.workspace, conversation.channel)

    # -- making ---------------------------------------------------------------------------------

    def remember(self, inbound: Inbound, fact: str) -> MemoryRow:
        """Keep ``fact`` (already screened by the worker's input chain) for the message's
        author. A rerun of the same message returns the memory it made the first time."""
        owner = owner_of(inbound)
        if self.refusal(inbound.conversation) is not None:
            raise InputRejected("memories are not kept in this conversation")
        owners = self.memories.identities_of(*owner)
        made = self.memories.find_by_message(owners, inbound.message_id)
        if made is not None:
            return made
        text = clean_fact(fact)
        if self.memories.count(owners) >= self.settings.max_per_person:
            raise InputRejected(f"you have {self.settings.max_per_person} memories, the most I "
                                "keep: forget some first (/memory lists them)")
        self._purge_if_due(force=True)
        conversation = inbound.conversation
        return self.memories.add(
            owner, text, self._vector(text), self.embedder.model_id,
            source_channel=conversation.channel, source_conversation=conversation.redis_id,
            source_message=inbound.message_id, private=is_private(conversation))

    def notice(self, inbound: Inbound, classify: Classifier, screen: Screen | None = None
               ) -> list[MemoryRow]:
        """Automatic extraction (``RecallSettings.auto``), after the reply was delivered: the
        sentences of the person's message that state a lasting fact about them
        (``assistant.recall.extract``), each screened like a message (``screen``: the input
        safety chain; a blocked one is dropped), cleaned, and saved unless the person has one
        of the same meaning. ``inbound`` is the message as the worker screened it."""
        if not self.settings.auto or inbound.history is not None:
            return []
        if self.refusal(inbound.conversation) is not None:
            return []
        owner = owner_of(inbound)
        owners = self.memories.identities_of(*owner)
        if self.memories.find_by_message(owners, inbound.message_id) is not None:
            return []  # a rerun of the turn, or an explicit "remember" message
        facts = extract(inbound.text, classify)
        if not facts:
            return []
        index = self._index(owners, None)
        known = [index.vectors] if index is not None else []
        count = self.memories.count(owners)
        conversation = inbound.conversation
        saved: list[MemoryRow] = []
        for fact in facts:
            try:
                text = clean_fact(screen(fact) if screen is not None else fact)
            except InputRejected:
                continue
            vector = np.asarray(self.embedder.embed([text])[0], dtype=np.float32)
            if any(len(v) and float(np.max(v @ vector)) >= DUPLICATE_COSINE for v in known):
                continue
            if count >= self.settings.max_per_person:
                break
            saved.append(self.memories.add(
                owner, text, vector.tobytes(), self.embedder.model_id,
                source_channel=conversation.channel,
                source_conversation=conversation.redis_id,
                source_message=inbound.message_id, private=is_private(conversation),
                automatic=True))
            known.append(vector[None, :])
            count += 1
        return saved

    def edit(self, owner: Identity, memory_id: int, text: str) -> MemoryRow | None:
        """Replace a memory's words (screened like a message first); None: not theirs."""
        if self.screen is not None:
            text = self.screen(text)
        cleaned = clean_fact(text)
        return self.memories.update(self.memories.identities_of(*owner), memory_id, cleaned,
                                    self._vector(cleaned), self.embedder.model_id)

    def _vector(self, text: str) -> bytes:
        return np.asarray(self.embedder.embed([text])[0], dtype=np.float32).tobytes()

    # -- seeing and deleting -------------------------------------------------------------------

    def listing(self, owner: Identity) -> list[MemoryRow]:
        self._purge_if_due()
        return self.memories.list(self.memories.identities_of(*owner))

    def forget(self, owner: Identity, number: int | None = None) -> int:
        """Delete memory ``number`` as ``listing`` numbers them (1 = oldest), or all of them."""
        owners = self.memories.identities_of(*owner)
        if number is None:
            return self.memories.delete_all(owners)
        rows = self.memories.list(owners)
        if not 1 <= number <= len(rows):
            raise InputRejected(f"there is no memory number {number}: /memory lists "
                                f"{len(rows)}")
        return self.memories.delete(owners, [rows[number - 1].id])

    def delete(self, owner: Identity, memory_id: int) -> bool:
        return self.memories.delete(self.memories.identities_of(*owner), [memory_id]) == 1

    def export(self, owner: Identity) -> dict[str, object]:
        rows = self.listing(owner)
        return {"identity": {"platform": owner[0], "workspace": owner[1], "user": owner[2]},
                "memories": [row.public() for row in rows]}

    def _purge_if_due(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.settings.retention_days <= 0:
            return
        if not force and now - self._purged_at < PURGE_EVERY_SECONDS:
            return
        self._purged_at = now
        purged = self.memories.purge_older_than(self.settings.retention_days)
        if purged:
            log.info("retention: deleted %d memories older than %s days", purged,
                     self.settings.retention_days)

    # -- recalling ------------------------------------------------------------------------------

    def recall(self, inbounds: Sequence[Inbound], count_tokens: TokenCounter) -> list[str]:
        """The memories worth putting in this turn's prompt, best first, as quoted lines
        within ``prompt_tokens``. Nothing is embedded when the person has no memories here."""
        first = inbounds[0]
        if first.history is not None or self.refusal(first.conversation) is not None:
            return []
        self._purge_if_due()
        owners = self._owners(owner_of(first))
        channel = self._channel_filter(first.conversation)
        index = self._index(owners, channel)
        if index is None:
            return []
        query = " ".join(i.text for i in inbounds)
        # The form the safety check embedded (the model is uncased; this only folds case,
        # spacing and look-alikes), so the shared embedder usually has its vector already.
        vector = self.embedder.embed([normalize(query)])[0]
        hits = index.search(query, vector, limit=self.settings.max_items,
                            min_cosine=self.settings.min_cosine)
        chosen: list[str] = []
        used = 0
        for hit in hits:
            line = quoted(hit.row.text)
            if not line:
                continue
            cost = count_tokens(line)
            if used + cost > self.settings.prompt_tokens:
                continue  # a shorter one further down may still fit
            chosen.append(line)
            used += cost
        return chosen

    def _owners(self, owner: Identity) -> list[Identity]:
        now = time.monotonic()
        with self._lock:
            cached = self._identities.get(owner)
        if cached is not None and now - cached[0] < IDENTITIES_TTL_SECONDS:
            return cached[1]
        owners = self.memories.identities_of(*owner)
        with self._lock:
            if len(self._identities) > 10_000:  # a bound, not an LRU: rebuilt as people talk
                self._identities.clear()
            self._identities[owner] = (now, owners)
        return owners

    def _index(self, owners: list[Identity], channel: tuple[str, str, str] | None
               ) -> Index | None:
        key = (tuple(owners), channel)
        stamp = self.memories.stamp(owners, channel=channel)
        if stamp.count == 0:
            with self._lock:
                self._indexes.pop(key, None)
            return None
        with self._lock:
            cached = self._indexes.get(key)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        rows = self.memories.list(owners, channel=channel)
        rows = [self._current(row) for row in rows]
        index = Index.build(rows, self.embedder.dimensions)
        with self._lock:
            self._indexes.pop(key, None)
            self._indexes[key] = (stamp, index)
            while len(self._indexes) > MAX_CACHED_INDEXES:  # the least recently rebuilt go
                self._indexes.pop(next(iter(self._indexes)))
        return index

    def _current(self, row: MemoryRow) -> MemoryRow:
        """A row whose vector another embedding model made is re-embedded (and saved)."""
        if row.embedding_model == self.embedder.model_id:
            return row
        updated = self.memories.update(
            [(row.platform, row.workspace, row.user_id)], row.id, row.text,
            self._vector(row.text), self.embedder.model_id)
        return updated or row

    # -- commands -------------------------------------------------------------------------------

    def run(self, command: Command, inbound: Inbound) -> tuple[str, dict[str, str]]:
        """Carry out a command; returns the name of the prompt that answers it and its
        variables (the worker renders it). Refusals come back as ``memory_refused``."""
        owner = owner_of(inbound)
        try:
            if command.kind == "remember":
                reason = self.refusal(inbound.conversation)
                if reason is not None:
                    return "memory_refused", {"reason": REFUSAL_REASONS[reason]}
                if not command.fact:
                    raise InputRejected("tell me what to remember, e.g. /remember I'm "
                                        "vegetarian")
                row = self.remember(inbound, command.fact)
                return "memory_saved", {"fact": row.text}
            if command.kind == "list":
                if inbound.conversation.platform not in self.settings.platforms:
                    return "memory_refused", {"reason": REFUSAL_REASONS["platform"]}
                if not is_private(inbound.conversation):
                    return "memory_refused", {"reason": REFUSAL_REASONS["list_in_group"]}
                return listing_prompt(self.listing(owner))
            if not is_private(inbound.conversation):
                return "memory_refused", {"reason": REFUSAL_REASONS["list_in_group"]}
            deleted = self.forget(owner, None if command.every else command.number)
            return "memory_forgot", {"count": str(deleted)}
        except InputRejected as exc:
            return "memory_refused", {"reason": str(exc)}


REFUSAL_REASONS = {
    "platform": "long-term memory is turned off here by the admins",
    "channel": "long-term memory is turned off in this conversation by the admins",
    "group": "I don't keep memories from group conversations; tell me in a private chat",
    "list_in_group": "your memories are private: ask me in a private chat",
}


# After a memory the assistant noticed by itself (not asked to keep) in ``/memory``'s list.
AUTOMATIC_MARK = " (noticed)"


def listing_prompt(rows: Sequence[MemoryRow]) -> tuple[str, dict[str, str]]:
    if not rows:
        return "memory_empty", {}
    items = "\n".join(f"{n}. {row.text}" + (AUTOMATIC_MARK if row.automatic else "")
                      for n, row in enumerate(rows, start=1))
    return "memory_list", {"items": items}


def build_recall(settings: Any, store: Store, screen: Screen | None = None
                 ) -> LongTermMemory | None:
    """The process' long-term memory from ``Settings``; None when no platform has it on."""
    recall_settings = RecallSettings.from_settings(settings)
    if not recall_settings.platforms:
        return None
    from assistant.embedding import default_embedder

    return LongTermMemory(store, default_embedder(), recall_settings, screen)


_edge_memories: dict[str, LongTermMemory | None] = {}
_edge_lock = threading.Lock()


def edge_memory(settings: Any) -> LongTermMemory | None:
    """The long-term memory of an edge process (Slack, Telegram, web), built on first use.
    Edges list, delete and export; saving goes through the worker, behind the safety chain."""
    from assistant.store import shared_store

    with _edge_lock:
        if settings.sql_url not in _edge_memories:
            _edge_memories[settings.sql_url] = build_recall(settings,
                                                            shared_store(settings.sql_url))
        return _edge_memories[settings.sql_url]


def answer_at_edge(settings: Any, prompts: Any, command: Command,
                   conversation: ConversationKey, user_id: str) -> str:
    """``/memory`` and ``/forget N|all`` answered by an edge, at once (no model, no
    embedding): the text to send back."""
    memory = edge_memory(settings)
    if memory is None:
        return str(prompts.render("memory_refused", reason=REFUSAL_REASONS["platform"]))
    inbound = Inbound(dedupe_id="edge-command", conversation=conversation, user_id=user_id,
                      text="")
    name, variables = memory.run(command, inbound)
    return str(prompts.render(name, **variables))


def safety_screen(safety: Any, inbound: Inbound) -> Screen | None:
    """The input safety chain (``assistant.safety.service.SafetyService``) as a ``Screen``
    for a sentence of ``inbound`` under its channel's policy: masked text, or
    ``InputRejected`` when blocked. No strike and no moderation entry: the message itself was
    screened and logged already; this only keeps a part of it out."""
    if safety is None:
        return None
    policy = safety.policy_for(inbound)

    def screen(text: str) -> str:
        outcome = safety.run_input(text, policy)
        if outcome.blocked:
            raise InputRejected("blocked by the input checks")
        return str(outcome.text)

    return screen


def notice_after_turn(recall: LongTermMemory, engine: Any, prompts: Any, safety: Any,
                      inbounds: Sequence[Inbound]) -> int:
    """The worker's hook after a turn's reply was delivered: automatic memories from each of
    the person's new messages. Never raises (the turn is answered already); returns how many
    memories it saved."""
    if not recall.settings.auto:
        return 0
    from assistant.recall.extract import model_classifier

    saved = 0
    classify = model_classifier(engine, prompts)
    for inbound in inbounds:
        try:
            saved += len(recall.notice(inbound, classify, safety_screen(safety, inbound)))
        except Exception:
            log.exception("automatic memory extraction failed; the turn is unaffected")
    return saved
