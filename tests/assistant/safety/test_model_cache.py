"""The toxicity classifier's export cache: exported once by a subprocess, read without
scikit-learn."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from profanity_check import predict_prob

from assistant.safety.checks import model_cache, toxicity
from assistant.safety.checks.model_cache import ExportError, cache_key, load_or_export

EVAL = Path(__file__).parents[2] / "data" / "safety_eval.jsonl"

WORKER_START = """
import sys
from pathlib import Path

def private_mb():
    with open("/proc/self/smaps_rollup") as smaps:
        fields = dict(line.split(":", 1) for line in smaps if ":" in line)
    return sum(int(fields[name].split()[0]) for name in ("Private_Clean", "Private_Dirty")) / 1024

before = private_mb()
cache = Path(sys.argv[1])
from assistant.safety.checks import toxicity
toxicity.load_model(cache)
offensive = toxicity.offensive_probability("you are a worthless idiot")
loaded = sorted(m for m in sys.modules if m == "sklearn" or m.startswith(("sklearn.", "scipy")))
print(f"private memory {before:.1f} MB at start, {private_mb():.1f} MB with the check loaded")
assert not loaded, loaded
assert offensive > 0.9
"""


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache the model was exported to (by the subprocess, as a worker's start does)."""
    folder = tmp_path_factory.mktemp("safety-cache")
    load_or_export("toxicity", toxicity.cache_key(), folder)
    return folder


def test_the_export_is_plain_arrays_and_json(cache_dir: Path) -> None:
    folders = sorted(p.name.split("-")[0] for p in cache_dir.iterdir() if p.is_dir())
    assert folders == ["toxicity"]
    for folder in cache_dir.iterdir():
        if folder.is_dir():
            assert {p.suffix for p in folder.iterdir()} == {".npy", ".json"}


def test_worker_start_does_not_import_scikit_learn(cache_dir: Path) -> None:
    done = subprocess.run([sys.executable, "-c", WORKER_START, str(cache_dir)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    print(done.stdout)  # the private-memory figures (pytest -s shows them)
    assert "with the check loaded" in done.stdout


def test_exported_toxicity_model_matches_the_package(cache_dir: Path) -> None:
    model = toxicity._Model.load(load_or_export("toxicity", toxicity.cache_key(), cache_dir))
    texts = [json.loads(line)["text"] for line in EVAL.read_text().splitlines() if line.strip()]
    texts += ["", "you are a worthless idiot", "what the hell"]
    expected = predict_prob(texts)
    for text, probability in zip(texts, expected, strict=True):
        assert abs(model.probability(toxicity._TOKEN.findall(text.lower()))
                   - float(probability)) < 1e-9, text


def test_concurrent_starts_export_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exports: list[Path] = []
    real_export = model_cache.export

    def counted(model: str, folder: Path) -> None:
        exports.append(folder)
        real_export(model, folder)

    monkeypatch.setattr(model_cache, "export", counted)
    results: list[object] = []
    starters = [threading.Thread(target=lambda: results.append(
        load_or_export("toxicity", toxicity.cache_key(), tmp_path))) for _ in range(4)]
    for starter in starters:
        starter.start()
    for starter in starters:
        starter.join()
    assert len(exports) == 1 and len(results) == 4
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".toxicity-")]  # no temp


def test_edited_training_data_makes_a_new_key(tmp_path: Path) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text('{"text": "hello", "label": "safe"}\n')
    before = cache_key([data], "scikit-learn 1.9.1")
    data.write_text('{"text": "hello there", "label": "safe"}\n')
    assert cache_key([data], "scikit-learn 1.9.1") != before
    assert cache_key([data], "scikit-learn 1.9.2") != cache_key([data], "scikit-learn 1.9.1")


def test_a_new_key_replaces_the_old_export(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_export(model: str, folder: Path) -> None:
        model_cache.write(folder, {"x": __import__("numpy").zeros(2)}, {"model": model})

    monkeypatch.setattr(model_cache, "export", fake_export)
    load_or_export("toxicity", "a" * 64, tmp_path)
    exported = load_or_export("toxicity", "b" * 64, tmp_path)
    assert [p.name for p in tmp_path.glob("toxicity-*")] == ["toxicity-" + "b" * 16]
    assert exported.meta == {"model": "toxicity"} and not exported.arrays["x"].flags.writeable


def test_a_failed_export_raises_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="exporting the nonsense classifier failed"):
        model_cache.export("nonsense", tmp_path / "nonsense")


def test_without_an_export_the_check_loads_in_process(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def failing(model: str, key: str, cache_dir: Path | None = None) -> None:
        raise ExportError(f"exporting the {model} classifier failed (exit 1): disk full")

    monkeypatch.setattr(toxicity, "load_or_export", failing)
    monkeypatch.setattr(toxicity, "_model", None)
    with caplog.at_level(logging.WARNING):
        shipped = toxicity.load_model()
    assert shipped.probability(["idiot"]) > 0.9
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and all("disk full" in w for w in warnings)
