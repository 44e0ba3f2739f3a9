"""Harmful requests (S1–S14, and injection the patterns miss): precise rules, then a semantic
check.

The rules (``intent_rules.py``) block the most severe requests whatever else says. The
semantic check scores the normalised text with all-MiniLM-L6-v2 fine-tuned for it (shipped
beside its head, ``assistant.safety.semantic.tune``) and with a small head on the shared,
frozen embedding (``assistant.embedding``), their log-odds averaged; both were trained on
public, licensed data (docs/safety.md, "The semantic check"). Ordinary requests come first: a
score at or above the head's ``block`` threshold refuses, a score between ``flag`` and
``block`` only flags the message for review (moderation log), and a message of fewer than
``MIN_WORDS_TO_BLOCK`` words is never refused on the score alone (and flagged only at a score
that would refuse a longer one).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assistant.embedding import Embedder, default_embedder, tuned_minilm
from assistant.safety.checks.intent_rules import match_rule
from assistant.safety.semantic import head as head_module
from assistant.safety.semantic.head import Head, sigmoid
from assistant.safety.verdict import Action, Category, Subject, Verdict

log = logging.getLogger(__name__)

# Below this many words the score only flags: a few words are too little evidence to refuse
# ("remember me", "hit me", "run it"); the rules still block short harmful requests.
MIN_WORDS_TO_BLOCK = 4
# The embedder reads the first ``max_tokens`` word pieces; a long message (a jailbreak
# template with the request at its end) is also scored on its last this-many words.
TAIL_WORDS = 80


@dataclass(frozen=True)
class Semantic:
    """The embedder and the head it was trained with, scoring views of one text; ``others``:
    more (embedder, head) pairs whose log-odds are averaged with this pair's (the shipped
    check: the tuned encoder and the head on the shared embedder, docs/safety.md). The
    category and the thresholds are the first head's."""

    embedder: Embedder
    head: Head
    others: tuple[tuple[Embedder, Head], ...] = ()

    def __post_init__(self) -> None:
        for embedder, head in ((self.embedder, self.head), *self.others):
            if embedder.model_id != head.model_id:
                raise ValueError(f"the head was fitted on {head.model_id!r} vectors, not "
                                 f"{embedder.model_id!r}")

    def score(self, texts: list[str]) -> tuple[float, str, int]:
        """The highest P(harmful) among ``texts``, its category and which text it was."""
        vectors = self.embedder.embed(texts)
        logits = self.head.logits(vectors)
        for embedder, head in self.others:
            logits = logits + head.logits(embedder.embed(texts))
        scores = sigmoid((logits / (1 + len(self.others))).astype(np.float32))
        best = int(scores.argmax())
        return float(scores[best]), self.head.category(vectors[best:best + 1])[0], best


_shared: Semantic | None = None
# Why the shipped scorer could not be built: kept, so a broken install (a damaged or missing
# encoder) costs each message one raise, not another read and hash of a 22 MB file.
_failed: Exception | None = None
_lock = threading.Lock()


def load_semantic(folder: Path | None = None) -> Semantic:
    """The head in ``folder`` (default: the shipped one) and the encoder it was fitted on: the
    tuned encoder shipped beside it when the head names one (checked against its SHA-256),
    else the shared embedder; plus the head it is averaged with, if it names one (a folder
    under ``folder`` holding a head fitted on the shared embedder)."""
    folder = folder or head_module.default_dir()
    head = head_module.load(folder)
    encoder = head.meta.get("encoder")
    embedder: Embedder = default_embedder()
    if encoder:
        embedder = tuned_minilm(folder / str(encoder), str(head.meta["encoder_sha256"]),
                                head.model_id, int(head.meta.get("max_tokens") or 128))
    others: tuple[tuple[Embedder, Head], ...] = ()
    if head.meta.get("average_with"):
        others = ((default_embedder(), head_module.load(folder / str(head.meta["average_with"]))),)
    return Semantic(embedder, head, others)


def shared_semantic() -> Semantic:
    """The process's semantic scorer: the shipped head and its encoder."""
    global _shared, _failed
    with _lock:
        if _failed is not None:
            raise _failed
        if _shared is None:
            try:
                _shared = load_semantic()
            except Exception as exc:
                _failed = exc
                raise
        return _shared


def texts_to_score(subject: Subject) -> list[str]:
    """Each view of the text, plus the tail of a long one."""
    views = list(dict.fromkeys(subject.views))
    words = subject.normalized.split()
    if len(words) > 2 * TAIL_WORDS:
        views.append(" ".join(words[-TAIL_WORDS:]))
    return views


class Harmful:
    """Refuses requests for harmful help; flags the uncertain ones."""

    name = "harmful"

    def __init__(self, rules: bool = True, semantic: Semantic | None = None,
                 block_threshold: float | None = None, flag_threshold: float | None = None,
                 classify_output: bool = False) -> None:
        self.rules = rules
        self._semantic = semantic
        self.block_threshold = block_threshold
        self.flag_threshold = flag_threshold
        # The head learned from requests; a model's replies are another kind of text, so on
        # output only the rules run unless this is turned on.
        self.classify_output = classify_output

    def inspect(self, subject: Subject) -> Verdict:
        try:
            return self._inspect(subject)
        except Exception:  # a check never raises on odd input
            log.exception("harmful-request check failed; letting the text through")
            return Verdict.allow(self.name)

    def _inspect(self, subject: Subject) -> Verdict:
        if self.rules:
            for view in subject.views:
                found = match_rule(view)
                if found:
                    category, rule = found
                    return Verdict(Action.BLOCK, self.name, category, score=1.0,
                                   reason=f"rule: {rule}", excerpt=view[:80])
        if subject.direction == "output" and not self.classify_output:
            return Verdict.allow(self.name)
        if not subject.normalized.strip():
            return Verdict.allow(self.name)
        semantic = self._semantic or shared_semantic()
        thresholds = semantic.head.thresholds
        block = self.block_threshold if self.block_threshold is not None else thresholds.block
        flag = self.flag_threshold if self.flag_threshold is not None else thresholds.flag
        texts = texts_to_score(subject)
        score, label, which = semantic.score(texts)
        # A few words are little evidence: they are never refused on the score, and flagged
        # for review only at a score that would refuse a longer text ("hello there" scored
        # 0.71, "ok" 0.64: logging them would only bury the real flags).
        short = len(subject.normalized.split()) < MIN_WORDS_TO_BLOCK
        if score < (block if short else flag):
            return Verdict.allow(self.name)
        category = Category(label)
        sure = score >= block and not short
        return Verdict(Action.BLOCK if sure else Action.FLAG, self.name, category,
                       score=round(score, 3),
                       reason=f"semantic: {category.label} (p={score:.2f})",
                       excerpt=texts[which][:80])

