"""Toxicity and harassment: alt-profanity-check's trained linear SVM, plus whom the abuse targets.

The classifier (TF-IDF over words, a calibrated linear SVM; trained by its authors on labelled
offensive-language data and shipped in the wheel) says how offensive a text is. Offensive is
not the same as harmful: "this f***ing build is broken, help" is fine. So the check blocks only
when offensive words are *aimed* at someone — a second-person word ("you", "your") or a group
noun ("immigrants", "women") within a few words of them — and at most flags casual swearing.
Dehumanising talk about a group ("<group> are vermin", "<group> should be exterminated") is
blocked without any swear word, unless it is plainly reported ("Nazi propaganda called ...").

The package's own ``predict_prob`` spends ~3 ms in scikit-learn's input checks for one short
text; this module computes the identical probability from the same fitted vectorizer and
model as plain arrays (tens of microseconds). A test checks both agree. Loading the package
imports scikit-learn, so a subprocess exports those arrays once to a cache (``model_cache``)
and worker processes read the export.

Thresholds, on the calibrated probability: ``block_at`` 0.80 and ``flag_at`` 0.50. On our
labelled cases (tests/data/toxicity_cases.jsonl: 15 abusive, 25 not), the 9 insults aimed at
someone all score ≥ 0.99, while casual swearing spans 0.55–1.00: the probability alone cannot
tell them apart (any block threshold from 0.5 to 0.99 blocks the same lines), the target
can. 0.80 leaves room under 0.99 for leetspeak and misspellings that lower the score. Group
hate without swear words scores 0.06–0.83, which is why it has its own rule. Result: 15/15
caught, 0/25 blocked wrongly, 16/25 flagged.
"""

from __future__ import annotations

import gc
import importlib.util
import logging
import math
import re
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from assistant.safety.checks.model_cache import (
    Exported,
    ExportError,
    installed_version,
    load_or_export,
)
from assistant.safety.checks.model_cache import cache_key as cache_key_of
from assistant.safety.verdict import Action, Category, Subject, Verdict

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"\b\w\w+\b")
# A word whose weight in the SVM is at least this is an offensive word ("idiot" 6.3,
# "stupid" 5.3, "damn" 2.6, "hell" 3.0, "kill" 2.3).
OFFENSIVE_WEIGHT = 2.5
# Offensive word and target at most this many words apart: "you stupid idiot", "fuck you".
TARGET_WINDOW = 4

# "you", but not "your": "your code is shit" is about the code. "your mom" is a person.
_SECOND_PERSON = frozenset("you youre yourself yourselves ya u ur thou thee".split())
_YOUR_PERSON = re.compile(r"\byour\s+(?:mom|mum|mother|momma|mama|dad|father|sister|wife|"
                          r"family|kind|people|kids|children|son|daughter)\b")
GROUPS = frozenset("""
    immigrants migrants refugees foreigners jews jew muslims muslim christians catholics hindus
    sikhs buddhists atheists blacks whites asians arabs mexicans latinos hispanics africans
    chinese indians pakistanis gypsies roma gays gay lesbians lesbian homosexuals trans
    transgender transgenders queers women woman girls females men feminists disabled cripples
    retards autistic natives aboriginals jewish islamic black white asian arab mexican african
    indian migrant immigrant refugee foreigner negroes
    mexicanos inmigrantes judios musulmanes negros gitanos extranjeros moros sudacas
    immigres etrangers juifs musulmans arabes noirs migrants roms
    auslander fluchtlinge juden muslime migranten zigeuner
    immigrati ebrei musulmani stranieri zingari
""".split())
_DEHUMANISING = re.compile(
    r"\b(?:son|sont|sind|sono|sao)\s+(?:\w+\s+){0,2}(?:animales|ratas|basura|cucarachas|"
    r"parasitos|escoria|animaux|rats|vermine|parasites|ordures|cafards|tiere|ratten|"
    r"ungeziefer|abschaum|parasiten|animali|ratti|spazzatura|scarafaggi|vermi|lixo|baratas)\b"
    r"|\b(?:are|is|r|just|like|nothing but|all)\s+(?:\w+\s+){0,2}(?:vermin|animals|subhuman|"
    r"sub-human|parasites?|cockroaches|rats|savages|filth|scum|a disease|a plague|a cancer|"
    r"apes|monkeys|inferior|not human|trash|garbage|terrorists|criminals|rapists|thieves|"
    r"pedophiles|paedophiles|savages|pigs|dogs|inbred|invaders)\b"
    r"|\b(?:should|must|need to|ought to|deserve to|have to)\s+(?:all\s+)?(?:be\s+)?"
    r"(?:exterminated|eradicated|gassed|wiped out|killed|die|burn|be shot|hanged|lynched|"
    r"deported|purged|removed from|sterili[sz]ed|locked up)\b"
    r"|\b(?:kill|exterminate|gas|lynch|eradicate|purge|get rid of)\s+(?:all|every)\b"
)
_SELF_HARM_URGED = re.compile(
    r"\b(?:go\s+)?(?:kill|hang|shoot|off)\s+(?:yo)?urself\b|\bkys\b|\bgo (?:and )?die\b|"
    r"\b(?:i )?hope (?:you|u) (?:die|get cancer|get raped)\b|\bdrink bleach\b"
)
# Words for targeting: a hyphenated compound ("idiot-proofed") is one word, not an insult.
_WORD = re.compile(r"\w[\w'-]*")
# Reported or studied, not meant: history, fiction, analysis of someone else's words.
_REPORTED = re.compile(
    r"\b(?:propaganda|rhetoric|histor\w*|nazis?|holocaust|genocide|called|referred to|"
    r"described|why did|how did|was used|were used|analy[sz]\w*|essay|novel|character|quote|"
    r"slur|stereotype|bias|racism|racist|discriminat\w*|is it (?:ok|okay|true)|why (?:do|are) "
    r"(?:some )?people)\b"
)


@dataclass(frozen=True, eq=False)
class _Model:
    """The shipped vectorizer and calibrated SVMs, as plain arrays."""

    vocabulary: dict[str, int]  # word -> row of ``idf`` and ``weights``
    idf: np.ndarray[Any, Any]  # (words,)
    weights: np.ndarray[Any, Any]  # (words, folds): each fold's SVM weight
    intercepts: np.ndarray[Any, Any]  # (folds,)
    sigmoids: np.ndarray[Any, Any]  # (folds, 2): (a, b) per fold, p = 1 / (1 + exp(a·d + b))

    def probability(self, tokens: list[str]) -> float:
        counts = Counter(token for token in tokens if token in self.vocabulary)
        scores = np.zeros(len(self.intercepts))
        if counts:
            indexes = np.fromiter((self.vocabulary[word] for word in counts), dtype=np.intp,
                                  count=len(counts))
            values = np.fromiter(counts.values(), dtype=float, count=len(counts)) \
                * self.idf[indexes]
            scores = (values / math.sqrt(float(values @ values))) @ self.weights[indexes]
        margins = scores + self.intercepts
        return float(np.mean(1.0 / (1.0 + np.exp(self.sigmoids[:, 0] * margins
                                                  + self.sigmoids[:, 1]))))

    def weight(self, word: str) -> float:
        index = self.vocabulary.get(word)
        return float(self.weights[index].mean()) if index is not None else 0.0

    def export(self) -> tuple[dict[str, np.ndarray[Any, Any]], dict[str, Any]]:
        """The arrays and JSON metadata that ``_Model.load`` reads back."""
        words = sorted(self.vocabulary, key=self.vocabulary.__getitem__)
        return ({"idf": self.idf, "weights": self.weights, "intercepts": self.intercepts,
                 "sigmoids": self.sigmoids}, {"vocabulary": words})

    @classmethod
    def load(cls, exported: Exported) -> _Model:
        arrays = exported.arrays
        return cls({word: i for i, word in enumerate(exported.meta["vocabulary"])},
                   idf=arrays["idf"], weights=arrays["weights"],
                   intercepts=arrays["intercepts"], sigmoids=arrays["sigmoids"])


_model: _Model | None = None
_model_lock = threading.Lock()


def cache_key() -> str:
    """Names the export: the package's model files and versions (found without importing it,
    which would load scikit-learn)."""
    spec = importlib.util.find_spec("profanity_check")
    if spec is None or not spec.submodule_search_locations:
        raise ExportError("alt-profanity-check is not installed")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    return cache_key_of(sorted(data.glob("*.joblib")), installed_version("alt-profanity-check"),
                        installed_version("scikit-learn"))


def load_model(cache_dir: Path | None = None) -> _Model:
    """alt-profanity-check's fitted model, once per process: read from the export in
    ``cache_dir`` (``model_cache``; made first by a subprocess if missing), so this process
    never imports scikit-learn. If the export fails, it is read here, with a warning."""
    global _model
    with _model_lock:
        if _model is None:
            try:
                _model = _Model.load(load_or_export("toxicity", cache_key(), cache_dir))
            except (ExportError, OSError, ValueError, KeyError) as exc:
                log.warning("no exported toxicity model (%s); loading alt-profanity-check in "
                            "this process instead, which imports scikit-learn", exc)
                _model = load_shipped()
            gc.collect()
            gc.freeze()  # 15k vocabulary entries the collector need not walk again
    return _model


def load_shipped() -> _Model:
    """Read alt-profanity-check's joblib files (imports scikit-learn: the export does it)."""
    from profanity_check import profanity_check as shipped

    return _from_sklearn(shipped.vectorizer, shipped.model)


def _from_sklearn(vectorizer: Any, model: Any) -> _Model:
    folds = model.calibrated_classifiers_
    # What ``probability`` assumes: lowercased \w\w+ words, counts × IDF, L2 norm. (Its English
    # stop words are simply absent from the vocabulary.)
    params = vectorizer.get_params()
    assumed = {"analyzer": "word", "ngram_range": (1, 1), "lowercase": True,
               "token_pattern": "(?u)" + _TOKEN.pattern, "preprocessor": None,
               "tokenizer": None, "strip_accents": None, "binary": False,
               "sublinear_tf": False, "use_idf": True, "norm": "l2"}
    changed = {name: params.get(name) for name, value in assumed.items()
               if params.get(name) != value}
    if changed:
        raise ValueError(f"alt-profanity-check's vectorizer is not as assumed: {changed}")
    return _Model(
        vocabulary={str(word): int(index) for word, index in vectorizer.vocabulary_.items()},
        idf=np.asarray(vectorizer.idf_, dtype=float),
        weights=np.column_stack([fold.estimator.coef_[0] for fold in folds]),
        intercepts=np.array([float(fold.estimator.intercept_[0]) for fold in folds]),
        sigmoids=np.array([(float(fold.calibrators[0].a_), float(fold.calibrators[0].b_))
                           for fold in folds]),
    )


def offensive_probability(text: str) -> float:
    """alt-profanity-check's probability that ``text`` is offensive."""
    return load_model().probability(_TOKEN.findall(text.lower()))


def aimed_at_someone(text: str, model: _Model) -> bool:
    """An offensive word within a few words of "you" (or "your mom") or of a group noun."""
    tokens = [word for word in _WORD.findall(text) if len(word) > 1 or word == "u"]
    targets = [i for i, token in enumerate(tokens) if token in _SECOND_PERSON or token in GROUPS
               or token == "your" and _YOUR_PERSON.match(" ".join(tokens[i:i + 2]))]
    if not targets:
        return False
    for i, token in enumerate(tokens):
        if model.weight(token) >= OFFENSIVE_WEIGHT:
            if any(abs(i - t) <= TARGET_WINDOW for t in targets):
                return True
    return False


def dehumanising(text: str) -> bool:
    """Group noun plus dehumanising or eliminationist words, not plainly reported speech."""
    if _REPORTED.search(text):
        return False
    for match in _DEHUMANISING.finditer(text):
        around = text[max(0, match.start() - 40):match.end() + 25]
        if any(word in GROUPS for word in _TOKEN.findall(around)):
            return True
    return False


def tells_to_self_harm(text: str) -> bool:
    """"Kill yourself" and its kin: harassment that urges self-harm."""
    return bool(_SELF_HARM_URGED.search(text)) and not _REPORTED.search(text)


class Toxicity:
    """Blocks abuse aimed at a person or group (S10); flags swearing that is aimed at nobody."""

    name = "toxicity"

    def __init__(self, block_at: float = 0.80, flag_at: float = 0.50,
                 cache_dir: Path | None = None) -> None:
        self.block_at = block_at
        self.flag_at = flag_at
        self.cache_dir = cache_dir

    def inspect(self, subject: Subject) -> Verdict:
        try:
            return self._inspect(subject)
        except Exception:  # a check never raises on odd input
            log.exception("toxicity check failed; letting the text through")
            return Verdict.allow(self.name)

    def _inspect(self, subject: Subject) -> Verdict:
        model = load_model(self.cache_dir)
        best: Verdict | None = None
        for view in subject.views:
            tokens = _TOKEN.findall(view)
            probability = model.probability(tokens)
            if dehumanising(view):
                return self._verdict(Action.BLOCK, max(probability, self.block_at), view,
                                     "dehumanising words about a group")
            if tells_to_self_harm(view):
                return self._verdict(Action.BLOCK, max(probability, self.block_at), view,
                                     "urging someone to harm themselves",
                                     category=Category.SELF_HARM)
            if probability >= self.block_at and aimed_at_someone(view, model):
                return self._verdict(Action.BLOCK, probability, view,
                                     "offensive words aimed at a person or group")
            if probability >= self.flag_at and best is None:
                # No category: swearing aimed at nobody is not hate, and a policy that blocks
                # S10 must not turn this flag into a refusal.
                best = self._verdict(Action.FLAG, probability, view,
                                     "offensive language, aimed at nobody", category=None)
        return best or Verdict.allow(self.name)

    def _verdict(self, action: Action, score: float, view: str, reason: str,
                 category: Category | None = Category.HATE) -> Verdict:
        return Verdict(action, self.name, category, score=round(score, 3),
                       reason=f"{reason} (p={score:.2f})", excerpt=view[:80])
