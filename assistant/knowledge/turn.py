"""The knowledge base's part of a turn: which collections the conversation's place may use,
and what they hold about its new messages (``assistant.pipeline.run_turn``'s ``ground``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from assistant.envelope import Inbound
from assistant.knowledge.prompt import Grounding
from assistant.knowledge.retrieve import Retriever
from assistant.knowledge.scope import places_of
from assistant.settings import Settings
from assistant.store.db import Store

log = logging.getLogger(__name__)


class KnowledgeGrounder:
    """Callable per turn; None where no collection is attached to the conversation's place."""

    def __init__(self, retriever: Retriever, budget_tokens: int = 700, top_k: int = 5,
                 groups_of: Callable[[str], list[str]] | None = None) -> None:
        self.retriever = retriever
        self.budget_tokens = budget_tokens
        self.top_k = top_k
        self.groups_of = groups_of

    def __call__(self, inbounds: Sequence[Inbound]) -> Grounding | None:
        if not inbounds:
            return None
        try:
            places = places_of(inbounds[0], self.groups_of)
            collections = self.retriever.kb.collections_at(places)
            if not collections:
                return None
            query = "\n".join(i.text for i in inbounds)
            hits = self.retriever.search(query, collections, self.top_k)
        except Exception:
            # The store is down or a collection is broken: answer without the documents
            # rather than not at all; the log says why.
            log.exception("knowledge retrieval failed; answering without documents")
            return None
        return Grounding(hits=tuple(hits), budget_tokens=self.budget_tokens)


def build_grounder(settings: Settings, store: Store) -> KnowledgeGrounder | None:
    """The worker's grounder (None when ASSISTANT_KNOWLEDGE is off). Nothing loads here: the
    embedder loads on the first question asked where a collection is attached."""
    if not settings.knowledge_enabled:
        return None
    from assistant.knowledge import knowledge_embedder
    from assistant.knowledge.store import KnowledgeBase
    from assistant.store.people import People

    people = People(store)

    def groups_of(handle: str) -> list[str]:
        person = people.get(handle)
        return list(person.groups or []) if person is not None else []

    return KnowledgeGrounder(Retriever(KnowledgeBase(store), knowledge_embedder()),
                             budget_tokens=settings.knowledge_tokens,
                             top_k=settings.knowledge_top_k, groups_of=groups_of)
