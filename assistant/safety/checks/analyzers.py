"""Text to n-grams exactly as scikit-learn's ``TfidfVectorizer.build_analyzer()`` does it, for
the settings our classifiers use, so that a worker scores with a fitted vocabulary without
importing scikit-learn (tests/assistant/safety/test_analyzers.py compares both line by line).

Covered: ``analyzer="word"`` with a ``token_pattern`` and ``analyzer="char_wb"``, each with an
``ngram_range`` and ``lowercase``; no stop words, accent stripping or custom callables
(``settings_of`` refuses a vectorizer that uses them).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Analyzer = Callable[[str], list[str]]

# scikit-learn's ``_VectorizerMixin._white_spaces``: char_wb collapses runs of whitespace.
_WHITE_SPACES = re.compile(r"\s\s+")


def word_ngrams(tokens: list[str], min_n: int, max_n: int) -> list[str]:
    """The tokens' n-grams (joined by a space), unigrams first, in scikit-learn's order."""
    if max_n == 1:
        return tokens
    grams = list(tokens) if min_n == 1 else []
    for n in range(max(min_n, 2), min(max_n + 1, len(tokens) + 1)):
        for i in range(len(tokens) - n + 1):
            grams.append(" ".join(tokens[i:i + n]))
    return grams


def char_wb_ngrams(text: str, min_n: int, max_n: int) -> list[str]:
    """Character n-grams inside each whitespace-separated word padded with one space each side;
    a word shorter than ``min_n`` (with padding) is one gram, counted once."""
    grams: list[str] = []
    for word in _WHITE_SPACES.sub(" ", text).split():
        padded = f" {word} "
        length = len(padded)
        for n in range(min_n, max_n + 1):
            offset = 0
            grams.append(padded[:n])
            while offset + n < length:
                offset += 1
                grams.append(padded[offset:offset + n])
            if offset == 0:
                break
    return grams


def build_analyzer(settings: dict[str, Any]) -> Analyzer:
    """The analyzer for ``settings`` (what ``settings_of`` returns; JSON-serialisable)."""
    kind = settings["analyzer"]
    min_n, max_n = (int(n) for n in settings["ngram_range"])
    lowercase = bool(settings["lowercase"])
    if kind == "word":
        tokenize = re.compile(settings["token_pattern"]).findall

        def words(text: str) -> list[str]:
            return word_ngrams(tokenize(text.lower() if lowercase else text), min_n, max_n)

        return words
    if kind == "char_wb":
        def chars(text: str) -> list[str]:
            return char_wb_ngrams(text.lower() if lowercase else text, min_n, max_n)

        return chars
    raise ValueError(f"unsupported analyzer: {kind!r}")


def settings_of(vectorizer: Any) -> dict[str, Any]:
    """The analyzer settings of a fitted scikit-learn vectorizer; refuses what we don't mirror."""
    params = vectorizer.get_params()
    unsupported = {name: params[name] for name in
                   ("stop_words", "strip_accents", "preprocessor", "tokenizer")
                   if params.get(name) is not None}
    if params["analyzer"] not in ("word", "char_wb") or params.get("input") != "content":
        unsupported["analyzer"] = (params["analyzer"], params.get("input"))
    if unsupported:
        raise ValueError(f"analyzer settings not mirrored without scikit-learn: {unsupported}")
    if params["analyzer"] == "word" and re.compile(params["token_pattern"]).groups > 1:
        raise ValueError("token_pattern with more than one group")
    return {"analyzer": params["analyzer"], "ngram_range": list(params["ngram_range"]),
            "lowercase": bool(params["lowercase"]), "token_pattern": params["token_pattern"]}
