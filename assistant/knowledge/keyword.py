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
# On SQLite, a word found in more chunks than this is left out of the query (unless every word
# is): it says little about a question (BM25 weighs it near zero anyway), and ranking every
# chunk it matches was most of a query's time at 100,000 chunks (docs/knowledge.md, Measured).
COMMON_MATCHES = 2000
# The most matches ranked per query: past it (only when every word is common) the first
# matches in index order are ranked, not all of them, so no question costs more than this.
RANKED_MAX = 3000


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
            words = _telling(session, words)
            if not words:
                return []
            # Each word quoted: no FTS5 operator can come from the question.
            match = " OR ".join(_quoted(w) for w in words)
            rows = session.execute(sa.text(
                "SELECT c.id FROM (SELECT rowid AS id, "
                "bm25(knowledge_chunks_fts, 2.0, 2.0, 1.0) AS score FROM knowledge_chunks_fts "
                "WHERE knowledge_chunks_fts MATCH :match LIMIT :ranked) AS f "
                "JOIN knowledge_chunks c ON c.id = f.id WHERE c.collection_id IN "
                f"({','.join(str(int(i)) for i in ids)}) "
                "ORDER BY f.score LIMIT :k"),
                {"match": match, "k": k, "ranked": RANKED_MAX}).all()
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


def _quoted(word: str) -> str:
    return '"' + word.replace('"', "") + '"'


def _telling(session: sa.orm.Session, words: list[str]) -> list[str]:
    """The words found in at most ``COMMON_MATCHES`` chunks (counting stops there); if every
    word is common, the two rarest; words found nowhere are dropped."""
    counted = []
    for word in words:
        found = session.scalar(sa.text(
            "SELECT count(*) FROM (SELECT rowid FROM knowledge_chunks_fts "
            "WHERE knowledge_chunks_fts MATCH :match LIMIT :cap)"),
            {"match": _quoted(word), "cap": COMMON_MATCHES + 1}) or 0
        if found:
            counted.append((int(found), word))
    telling = [word for found, word in counted if found <= COMMON_MATCHES]
    return telling or [word for _, word in sorted(counted)[:2]]


def _pg_word(word: str) -> str:
    # to_tsquery's operand: letters and digits only, so no operator comes from the question.
    return re.sub(r"\W", "", word) or "x"
