"""The analyzers without scikit-learn give scikit-learn's n-grams, line by line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assistant.safety.checks import harmful
from assistant.safety.checks.analyzers import build_analyzer, settings_of

DATA = Path(__file__).parents[3]
FILES = [DATA / "assistant" / "safety" / "data" / "train.jsonl",
         DATA / "tests" / "data" / "safety_eval.jsonl"]
ODD = ["", " ", "a", "ab", "  two   spaces\tand\ttabs\n\nlines ", "ÉCOLE Straße İstanbul",
       "x-ray f*ck h0w d0 1", "🙂 emoji 🙂🙂", "\u200bzero\u200bwidth", "日本語のテキスト"]


def texts() -> list[str]:
    lines = [json.loads(line)["text"] for path in FILES
             for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(lines) > 2800
    # Both what the classifier sees (normalised, compounds folded) and the raw lines.
    return lines + [harmful.fold_compounds(harmful.features(line)) for line in lines] + ODD


@pytest.mark.parametrize("part", ["words", "chars"])
def test_same_ngrams_as_scikit_learn(part: str) -> None:
    vectorizer = dict(harmful.build_vectorizer().transformer_list)[part]
    expected = vectorizer.build_analyzer()
    ours = build_analyzer(json.loads(json.dumps(settings_of(vectorizer))))
    for text in texts():
        assert ours(text) == expected(text), text


def test_unsupported_settings_are_refused() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    with pytest.raises(ValueError, match="stop_words"):
        settings_of(TfidfVectorizer(stop_words="english"))
    with pytest.raises(ValueError, match="analyzer"):
        settings_of(TfidfVectorizer(analyzer="char"))
