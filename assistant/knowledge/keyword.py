"""Keyword search over chunks with the database's own full-text index (migration 0005): FTS5's
BM25 on SQLite, ``ts_rank`` over a GIN-indexed ``tsvector`` on PostgreSQL. Any query word may
match (OR): the ranking, not a filter, decides; common words are left out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import sqlalchemy as sa

from assistant.knowledge.store import KnowledgeBase

# Words too common to say what a question is about (English; other languages pass through,
# where BM25's weighting still discounts frequent words).
STOPWORDS = frozenset("""
a about above after again all am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has
have having he her here hers him his how i if in into is it its itself just me more most my no
nor not now of off on once only or other our ours out over own same she should so some such
than that the their theirs them then there these they this those through to too under until up
very was we were what when where which while who whom why will with would you your yours
tell please know need want get use using
""".split())
MAX_TERMS = 16


def terms(text: str) -> list[str]:
    """The query's words, lowercased, without stopwords and repeats, at most ``MAX_TERMS``."""
    seen: list[str] = []
    for word in re.findall(r"\w+", text.lower()):
        if len(word) > 1 and word not in STOPWORDS and word not in seen:
            seen.append(word)
    return seen[:MAX_TERMS]


def keyword_search(kb: KnowledgeBase, query: str, collection_ids: Sequence[int],
                   k: int) -> list[int]:
    """Chunk ids best first (at most ``k``) in the given collections."""
    words = terms(query)
    if not words or not collection_ids:
        return []
    ids = list(collection_ids)
    with kb.store.session() as session:
        if kb.dialect == "sqlite":
            # Each word quoted: no FTS5 operator can come from the question.
            match = " OR ".join('"' + w.replace('"', "") + '"' for w in words)
            rows = session.execute(sa.text(
                "SELECT c.id FROM knowledge_chunks_fts f "
                "JOIN knowledge_chunks c ON c.id = f.rowid "
                "WHERE knowledge_chunks_fts MATCH :match AND c.collection_id IN "
                f"({','.join(str(int(i)) for i in ids)}) "
                "ORDER BY bm25(knowledge_chunks_fts, 2.0, 1.0) LIMIT :k"),
                {"match": match, "k": k}).all()
        elif kb.dialect == "postgresql":
            rows = session.execute(sa.text(
                "SELECT id FROM knowledge_chunks, "
                "to_tsquery('english', :query) AS query "
                "WHERE search @@ query AND collection_id = ANY(:ids) "
                "ORDER BY ts_rank_cd(search, query) DESC LIMIT :k"),
                {"query": " | ".join(_pg_word(w) for w in words), "ids": ids, "k": k}).all()
        else:
            return []
    return [int(r[0]) for r in rows]


def _pg_word(word: str) -> str:
    # to_tsquery's operand: letters and digits only, so no operator comes from the question.
    return re.sub(r"\W", "", word) or "x"
