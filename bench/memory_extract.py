"""``python -m bench.memory_extract``: how right automatic memories are (docs/memory.md),
merged into ``bench/results.json`` under ``memory_extract``.

Each labelled sentence is one message of a person; a memory is "saved" when the shipped
selection (``assistant.recall.extract.extract``: the rule in code, then the real model with its
JSON grammar at temperature 0) keeps it. **Precision**: of the saved sentences, the fraction
labelled a fact the person stated about themselves; **recall**: of those facts, the fraction
saved. The rule alone (every eligible sentence saved) and, with ``--model-alone``, the model
alone (every sentence asked) are measured on the same sentences for comparison.

The set, most of it from a public source we did not write (pinned below, its bytes checked):
Synthetic-Persona-Chat (google-research-datasets, CC-BY-4.0), test split:

- **facts** (positive): persona sentences, the dataset's own list of what each speaker is
  ("I like to dance at the club.", "My favorite sport is ultimate frisbee.");
- **questions** (negative): question sentences from its conversations;
- **about someone else** (negative): persona sentences not among the facts, turned into the
  third person by a fixed rewrite of their opening ("I have …" → "My sister has …");
- **no first person** (negative): statements from its conversations with no I/me/my/we
  ("That sounds like a great job.");
- **small talk in the first person** (negative, our own, below): hedges, passing states,
  plans and requests, the sentences a first-person rule alone would let through.

Sampled with a fixed seed; sentences of the conversations that state something about the
speaker but are not in their persona are left out (unlabelled).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import random
import re
import statistics
import time
from pathlib import Path
from typing import Any

from assistant.recall.extract import MAX_FACTS_PER_MESSAGE, extract, model_classifier, rejection
from assistant.safety.semantic.sources import Source, clone, read_bytes
from bench.load import merge_into

ROOT = Path(__file__).resolve().parents[1]
SOURCE = Source("synthetic-persona-chat", "dev", "google-research-datasets/Synthetic-Persona-Chat",
                "1f367a0f05d388ca96ebbbc9e5752ab19ac76510", "data/Synthetic-Persona-Chat_test.csv",
                "CC-BY-4.0", lambda raw: [], "persona sentences and conversations, test split")
SHA256 = "531356d642b426ef8fc4d65446330cb34c7b473a4cf482ad12a8cf7838fe52a8"

# Our own: first-person sentences that state no lasting fact about the speaker.
SMALL_TALK = [
    "I think so too.", "I guess that makes sense.", "I'm not sure about that.",
    "I see what you mean.", "I agree with you.", "I don't know what to say.",
    "I'm fine, thanks for asking.", "I'm doing well today.", "I'm tired today.",
    "I just woke up.", "I'm bored right now.", "I'm a bit hungry at the moment.",
    "I'll think about it.", "I will call you later.", "I'm going to the shop.",
    "I have to go now.", "I want you to write me a poem.", "I need help with my homework.",
    "I would like a recipe for pancakes.", "I wonder what the weather will be like.",
    "I hope you have a nice day.", "I love that idea.", "I like your answer.",
    "I was just asking.", "I mean the other one.", "I understand now.",
    "I'm sorry to hear that.", "I'm glad you liked it.", "I can't wait for the weekend.",
    "I forgot what I was going to say.", "I am writing a quick test message.",
    "I said that already.", "I changed my mind.", "I was joking.",
    "I have a question for you.", "I need an answer quickly.", "I missed your last message.",
    "I read your reply twice.", "I got it, thank you.", "I am curious about black holes.",
]
# Third-person rewrites of a persona sentence's opening (someone else's fact).
_REWRITES = [
    (re.compile(r"^I am\b", re.I), "My sister is"), (re.compile(r"^I'm\b", re.I), "My friend is"),
    (re.compile(r"^I have\b", re.I), "My brother has"), (re.compile(r"^I like\b", re.I),
                                                         "Alice likes"),
    (re.compile(r"^I love\b", re.I), "He loves"), (re.compile(r"^I work\b", re.I), "She works"),
    (re.compile(r"^I live\b", re.I), "My neighbour lives"), (re.compile(r"^My\b"), "Her"),
    (re.compile(r"^I enjoy\b", re.I), "My colleague enjoys"),
    (re.compile(r"^I play\b", re.I), "Tom plays"),
]
_FIRST_PERSON = re.compile(r"\b(?:i|i'm|i've|i'd|i'll|me|my|mine|myself|we|our|us)\b", re.I)
_SPLIT = re.compile(r"(?<=[.!?])\s+")


def load_rows(mirrors: Path) -> list[list[str]]:
    raw = read_bytes(mirrors, SOURCE)
    digest = hashlib.sha256(raw).hexdigest()
    if digest != SHA256:
        raise SystemExit(f"{SOURCE.path} has SHA-256 {digest}, expected {SHA256}")
    return list(csv.reader(io.StringIO(raw.decode("utf-8"))))[1:]


def third_person(sentence: str) -> str | None:
    for pattern, replacement in _REWRITES:
        if pattern.search(sentence):
            return pattern.sub(replacement, sentence, count=1)
    return None


def build_set(rows: list[list[str]], seed: int, facts: int, each: int
              ) -> list[dict[str, str]]:
    personas: list[str] = []
    questions: list[str] = []
    impersonal: list[str] = []
    for user1, user2, conversation in rows:
        personas += [s.strip() for s in (user1 + "\n" + user2).splitlines() if s.strip()]
        for line in conversation.splitlines():
            text = line.split(":", 1)[1].strip() if ":" in line else ""
            for sentence in _SPLIT.split(text):
                if "[" in sentence or len(sentence.split()) < 3:
                    continue  # placeholders ("[User 1's name]"), fragments
                if sentence.endswith("?"):
                    questions.append(sentence)
                elif not _FIRST_PERSON.search(sentence):
                    impersonal.append(sentence)
    rng = random.Random(seed)
    unique = sorted(set(personas))
    rng.shuffle(unique)
    chosen = unique[:facts]
    rewrites = [r for r in (third_person(s) for s in unique[facts:]) if r]
    items = [{"text": s, "label": "fact", "kind": "persona"} for s in chosen]
    for kind, pool in (("question", sorted(set(questions))),
                       ("someone_else", sorted(set(rewrites))),
                       ("no_first_person", sorted(set(impersonal)))):
        items += [{"text": s, "label": "other", "kind": kind} for s in rng.sample(pool, each)]
    items += [{"text": s, "label": "other", "kind": "small_talk"} for s in SMALL_TALK]
    return items


def scores(items: list[dict[str, Any]], saved: list[bool]) -> dict[str, Any]:
    tp = sum(1 for i, s in zip(items, saved, strict=True) if s and i["label"] == "fact")
    kept = sum(saved)
    facts = sum(1 for i in items if i["label"] == "fact")
    by_kind: dict[str, list[int]] = {}
    for item, s in zip(items, saved, strict=True):
        by_kind.setdefault(item["kind"], [0, 0])
        by_kind[item["kind"]][0] += int(s)
        by_kind[item["kind"]][1] += 1
    return {"saved": kept, "precision": round(tp / kept, 3) if kept else None,
            "recall": round(tp / facts, 3),
            "saved_by_kind": {k: f"{v[0]}/{v[1]}" for k, v in sorted(by_kind.items())}}


def measure(mirrors: Path, model: str, threads: int, seed: int, facts: int, each: int,
            model_alone: bool = False) -> dict[str, Any]:
    from assistant.models import resolve_model_path
    from assistant.prompts import PromptLibrary
    from assistant.settings import Settings
    from worker.llama import LlamaEngine

    items = build_set(load_rows(mirrors), seed, facts, each)
    engine = LlamaEngine(resolve_model_path(model, Settings(_env_file=None).models_dir),
                         context_size=1024, threads=threads, threads_batch=threads)
    prompts = PromptLibrary.load()
    ask = model_classifier(engine, prompts)
    ask("I have a dog.")  # loads the model; not timed
    eligible = [rejection(i["text"]) is None for i in items]
    model_says: list[bool] = []
    seconds: list[float] = []
    for item, passes in zip(items, eligible, strict=True):
        if not (passes or model_alone):
            model_says.append(False)  # never asked in the shipped path
            continue
        started = time.perf_counter()
        model_says.append(ask(item["text"]))
        seconds.append(time.perf_counter() - started)
    # The shipped path, as the worker runs it (each sentence its own message).
    answers = dict(zip((i["text"] for i in items), model_says, strict=True))
    shipped = [bool(extract(i["text"], lambda s: answers.get(s, False))) for i in items]
    dropped_facts: dict[str, int] = {}
    for item in items:
        reason = rejection(item["text"])
        if item["label"] == "fact" and reason is not None:
            dropped_facts[reason] = dropped_facts.get(reason, 0) + 1
    ordered = sorted(seconds)
    return {
        "source": {"repo": SOURCE.repo, "commit": SOURCE.commit, "path": SOURCE.path,
                   "licence": SOURCE.licence, "sha256": SHA256},
        "seed": seed, "model": Path(model).name,
        "sentences": len(items), "facts": sum(1 for i in items if i["label"] == "fact"),
        "by_kind": {k: sum(1 for i in items if i["kind"] == k)
                    for k in sorted({i["kind"] for i in items})},
        "shipped_rule_then_model": scores(items, shipped),
        "rule_alone": scores(items, eligible),
        **({"model_alone": scores(items, model_says)} if model_alone else {}),
        "facts_the_rule_drops": dict(sorted(dropped_facts.items())),
        "model_calls": len(seconds),
        "model_call_ms": {"p50": round(statistics.median(seconds) * 1000, 1),
                          "p95": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 1)},
        "max_facts_per_message": MAX_FACTS_PER_MESSAGE,
        "load_average_at_end": round(os.getloadavg()[0], 2),
        "examples_saved_wrongly": [i["text"] for i, s in zip(items, shipped, strict=True)
                                   if s and i["label"] != "fact"][:8],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=Path, default=Path(os.environ.get(
        "SAFETY_SOURCES", ROOT / ".data" / "safety-sources")),
        help="copies of the source repositories (owner/name or owner+name/repo)")
    parser.add_argument("--clone", action="store_true", help="clone the source if missing")
    parser.add_argument("--model", default="SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--facts", type=int, default=120)
    parser.add_argument("--each", type=int, default=50, help="negatives of each public kind")
    parser.add_argument("--model-alone", action="store_true",
                        help="also ask the model about every sentence (about 2.5x the calls)")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results.json")
    args = parser.parse_args(argv)
    if args.clone:
        clone(args.sources, sources=[SOURCE])
    result = measure(args.sources, args.model, args.threads, args.seed, args.facts, args.each,
                     args.model_alone)
    print(json.dumps(result, indent=2))
    merge_into(args.output, {"memory_extract": result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
