"""The knowledge base, measured (issue 24): retrieval quality on a labelled set, retrieval time
at 100,000 chunks on SQLite, and the ingestion rate. Keys merged into ``bench/results.json``
under ``knowledge``; docs/knowledge.md reports them.

Corpus: the long descriptions (READMEs) of 58 packages installed in this project's virtualenv,
read from their ``*.dist-info/METADATA`` (each package's own licence, recorded per document in
the results: MIT, BSD, Apache-2.0, MPL-2.0 and similar). Questions: bench/data/
knowledge_questions.json, written by hand, two per document, each with a phrase copied from
the passage that answers it. A question is answered when one of the top 5 chunks comes from
its document and contains the phrase in its text or its section (the headings above it),
whitespace and case aside.

    python -m bench.knowledge [--chunks 100000] [--output bench/results.json]
"""

from __future__ import annotations

import argparse
import email
import json
import re
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from assistant.knowledge import knowledge_embedder
from assistant.knowledge.ingest import ingest
from assistant.knowledge.keyword import keyword_search
from assistant.knowledge.retrieve import CANDIDATES, Retriever, fuse
from assistant.knowledge.store import CollectionInfo, KnowledgeBase
from assistant.store import connect_store
from bench import system
from bench.load import merge_into
from bench.stats import quantile

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ROOT / "bench" / "data" / "knowledge_questions.json"
TARGETS = {"top5_min": 0.90, "p95_ms_max": 50.0}
TOP_K = 5


@dataclass(frozen=True)
class Question:
    document: str
    text: str
    phrase: str


def _normal(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def corpus(directory: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """Write each package's README (from its installed METADATA) to ``directory``."""
    found: dict[str, dict[str, Any]] = {}
    for name in names:
        dist = metadata.distribution(name.replace("_", "-"))
        raw = dist.read_text("METADATA") or ""
        message = email.message_from_string(raw)
        body = str(message.get_payload())
        kind = message.get("Description-Content-Type") or ""
        path = directory / f"{name}{'.md' if 'markdown' in kind else '.txt'}"
        path.write_text(body)
        licence = message.get("License-Expression") or (message.get("License") or "")
        found[name] = {"path": path, "licence": licence.splitlines()[0][:60] if licence else
                       "see the package's classifiers", "version": dist.version}
    return found


def answered(kb: KnowledgeBase, ids: list[int], question: Question,
             sources: dict[str, str]) -> int | None:
    """The rank (1-based) of the first chunk that answers, else None."""
    chunks = kb.chunks(ids)
    for rank, chunk_id in enumerate(ids, start=1):
        chunk = chunks.get(chunk_id)
        # The phrase may be the heading the chunk stands under (its section) or in its text.
        if chunk is not None and chunk.source == sources[question.document] and \
                _normal(question.phrase) in _normal(f"{chunk.section} {chunk.text}"):
            return rank
    return None


def quality(kb: KnowledgeBase, retriever: Retriever, collection: CollectionInfo,
            questions: list[Question], sources: dict[str, str]) -> dict[str, Any]:
    """Top-5 hit rate and MRR of the hybrid search as configured, of each half alone, and of
    the fusion at other weights of the vector list (all from the same two lists)."""
    weights = sorted({retriever.vector_weight, 1.0, 0.5, 0.25, 0.0}, reverse=True)
    ranks: dict[str, list[int | None]] = {"hybrid": [], "vector": [], "keyword": []}
    ranks |= {f"fused_w{w:g}": [] for w in weights}
    misses = []
    for question in questions:
        vector = [i for i, _ in retriever.index.search(
            retriever.embedder.embed([question.text])[0], [collection], CANDIDATES)]
        keyword = keyword_search(kb, question.text, [collection.id], CANDIDATES)
        lists: dict[str, list[int]] = {"vector": vector[:TOP_K], "keyword": keyword[:TOP_K]}
        for w in weights:
            lists[f"fused_w{w:g}"] = [i for i, _ in fuse([vector, keyword], weights=[w, 1.0])
                                      [:TOP_K]]
        lists["hybrid"] = [h.chunk.id for h in
                           retriever.search(question.text, [collection], TOP_K)]
        for name, ids in lists.items():
            ranks[name].append(answered(kb, ids, question, sources))
        if ranks["hybrid"][-1] is None:
            misses.append({"document": question.document, "question": question.text})
    out: dict[str, Any] = {"vector_weight": retriever.vector_weight}
    for name, found in ranks.items():
        out[f"{name}_top5"] = round(sum(r is not None for r in found) / len(found), 4)
        out[f"{name}_mrr"] = round(sum(1 / r for r in found if r) / len(found), 4)
        # Two questions per document, in order: the first ones, and the second ones.
        out[f"{name}_top5_halves"] = [
            round(sum(r is not None for r in found[h::2]) / len(found[h::2]), 4)
            for h in (0, 1)]
    out["misses"] = misses
    return out


def answerable(kb: KnowledgeBase, questions: list[Question], sources: dict[str, str]) -> int:
    """Questions whose phrase lies within one chunk of their document (a label check)."""
    with kb.store.session() as session:
        rows = session.execute(sa.text(
            "SELECT d.source, c.section || ' ' || c.text FROM knowledge_chunks c "
            "JOIN knowledge_documents d ON d.id = c.document_id")).all()
    by_source: dict[str, list[str]] = {}
    for source, text in rows:
        by_source.setdefault(source, []).append(_normal(text))
    return sum(any(_normal(q.phrase) in t for t in by_source.get(sources[q.document], []))
               for q in questions)


def grow(kb: KnowledgeBase, collection: CollectionInfo, target: int, seed: int = 0) -> int:
    """Copy the collection's chunks (text and vector, the vector slightly perturbed and
    normalised again) into it until it holds ``target`` chunks; the copies belong to one
    filler document. Returns the number of chunks."""
    rng = np.random.default_rng(seed)
    with kb.store.session() as session:
        rows = session.execute(sa.text(
            "SELECT section, text, embedding, title FROM knowledge_chunks "
            "WHERE collection_id = :c"),
            {"c": collection.id}).all()
    document_id = kb.add_document(collection.id, "filler (copies)", "filler", "text", "0" * 64, 0)
    base = np.stack([np.frombuffer(r[2], dtype=np.float32) for r in rows])
    have = len(rows)
    batch: list[dict[str, Any]] = []
    position = 0
    while have < target:
        index = position % len(rows)
        vector = base[index] + rng.normal(0, 0.05, base.shape[1]).astype(np.float32)
        vector /= np.linalg.norm(vector)
        batch.append({"d": document_id, "c": collection.id, "p": position, "s": rows[index][0],
                      "t": rows[index][1], "e": vector.astype(np.float32).tobytes(),
                      "title": rows[index][3]})
        position += 1
        have += 1
        if len(batch) == 5000 or have == target:
            with kb.store.session() as session:
                session.execute(sa.text(
                    "INSERT INTO knowledge_chunks (document_id, collection_id, position, "
                    "title, section, page, text, embedding) "
                    "VALUES (:d, :c, :p, :title, :s, NULL, :t, :e)"),
                    batch)
                session.execute(sa.text("UPDATE knowledge_collections SET generation = "
                                        "generation + 1 WHERE id = :c"), {"c": collection.id})
            batch = []
    kb.set_status(document_id, "ready", 100)
    return have


def latency(retriever: Retriever, kb: KnowledgeBase, questions: list[Question],
            rounds: int) -> dict[str, Any]:
    """Retrieval time per question (embedding the question included), cold first query apart."""
    [collection] = kb.collections()
    started = time.perf_counter()
    retriever.search(questions[0].text, [collection], TOP_K)
    cold_ms = (time.perf_counter() - started) * 1000
    times: list[float] = []
    embed_times: list[float] = []
    cpu_times: list[float] = []  # CPU the process spent (both threads): what a busy host adds
    for _ in range(rounds):
        for question in questions:
            collections = kb.collections_at(["web"])  # as a turn does: one scope query
            started = time.perf_counter()
            retriever.embedder.embed([question.text])
            embed_times.append((time.perf_counter() - started) * 1000)
            started, cpu = time.perf_counter(), time.process_time()
            retriever.search(question.text, collections, TOP_K)
            times.append((time.perf_counter() - started) * 1000)
            cpu_times.append((time.process_time() - cpu) * 1000)
    # The clustered index's recall: of the exact 30 nearest, how many it finds (the hybrid
    # search takes 30 from each side).
    overlaps = []
    for question in questions:
        vector = retriever.embedder.embed([question.text])[0]
        exact = {i for i, _ in retriever.index.search(vector, [collection], 30, exact=True)}
        found = {i for i, _ in retriever.index.search(vector, [collection], 30)}
        overlaps.append(len(exact & found) / len(exact))
    return {"cold_first_query_ms": round(cold_ms, 1), "queries": len(times),
            "vector_recall_at_30_vs_exact": round(sum(overlaps) / len(overlaps), 4),
            "p50_ms": round(quantile(times, 0.5), 2), "p95_ms": round(quantile(times, 0.95), 2),
            "max_ms": round(max(times), 2),
            "cpu_p50_ms": round(quantile(cpu_times, 0.5), 2),
            "cpu_p95_ms": round(quantile(cpu_times, 0.95), 2),
            "embed_question_p50_ms": round(quantile(embed_times, 0.5), 2)}


def measure(chunks: int, rounds: int, quality_only: Path | None = None) -> dict[str, Any]:
    questions = [Question(*q) for q in json.loads(QUESTIONS.read_text())]
    names = sorted({q.document for q in questions})
    embedder = knowledge_embedder()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        docs = corpus(work, names)
        reuse = quality_only is not None and quality_only.exists()
        store = connect_store(f"sqlite:///{quality_only or work / 'kb.db'}")
        kb = KnowledgeBase(store)
        embedder.embed(["warm up"])
        started = time.perf_counter()
        pages = 0
        for name in names:
            path = docs[name]["path"]
            if reuse:
                found = next(d for d in kb.documents() if d.source == path.name)
                pages, docs[name]["chunks"] = pages + found.pages, found.chunk_count
                continue
            document = ingest(kb, embedder, "bench", path.name, path.read_bytes())
            pages += document.pages
            docs[name]["chunks"] = document.chunk_count
        ingest_s = time.perf_counter() - started
        kb.attach("bench", "web")
        [collection] = kb.collections()
        sources = {name: docs[name]["path"].name for name in names}
        retriever = Retriever(kb, embedder)
        figures: dict[str, Any] = {
            "documents": len(names), "questions": len(questions),
            "corpus_chunks": collection.chunks, "corpus_pages": pages,
            "answerable_questions": answerable(kb, questions, sources),
            "ingest_seconds": round(ingest_s, 1),
            "ingest_pages_per_minute": round(pages / ingest_s * 60, 1),
            "ingest_chunks_per_second": round(collection.chunks / ingest_s, 1),
            **quality(kb, retriever, collection, questions, sources),
        }
        print(json.dumps({k: v for k, v in figures.items() if k != "misses"}), flush=True)
        if quality_only is not None:
            store.engine.dispose()
            return {"knowledge_quality_only": figures}
        started = time.perf_counter()
        figures["latency_chunks"] = grow(kb, collection, chunks)
        figures["grow_seconds"] = round(time.perf_counter() - started, 1)
        figures["latency"] = latency(Retriever(kb, embedder), kb, questions, rounds)
        figures["vector_backend"] = retriever.index.backend
        figures["sources"] = {name: {"licence": docs[name]["licence"],
                                     "version": docs[name]["version"],
                                     "chunks": docs[name]["chunks"]} for name in names}
        store.engine.dispose()
    checks = {"top5": figures["hybrid_top5"] >= TARGETS["top5_min"],
              "p95": figures["latency"]["p95_ms"] <= TARGETS["p95_ms_max"]}
    return {"knowledge": {**figures, "targets": TARGETS, "target_checks": checks,
                          "meets_targets": all(checks.values()), "loadavg": system.loadavg()}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument("--quality-only", type=Path, default=None, metavar="DB",
                        help="Only the labelled set, on the SQLite file DB (indexed there the "
                             "first time, reused after); nothing is written to --output.")
    args = parser.parse_args(argv)
    results = measure(args.chunks, args.rounds, args.quality_only)
    if args.quality_only is not None:
        return
    merge_into(args.output, results)
    summary = {k: v for k, v in results["knowledge"].items() if k != "sources"}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
