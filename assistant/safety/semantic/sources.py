"""Where the semantic check's training and development sets come from, and how each line is
read out of its public source (docs/safety.md, "Data").

Every source is one file at one commit of a public Git repository, with its licence and the
SHA-256 of its bytes: ``python -m assistant.safety.semantic.sources MIRRORS OUT`` reads each
file from a local copy of its repository (``MIRRORS/<owner>+<name>/repo`` or
``MIRRORS/<owner>/<name>``, any clone holding the commit), refuses a file whose bytes differ,
and writes ``OUT/train/<source>.jsonl`` and ``OUT/dev/<source>.jsonl`` (lines of ``text``,
``label``, ``category``, as ``assistant safety eval`` reads them) plus ``OUT/manifest.json``.
The raw files and the sets stay out of the repository; ``data/sources.json`` is the manifest
of the last build, committed with the head fitted from it.

Development sets never share a source with the training sets. Kept out on purpose, for
training, tuning and evaluation alike: AdvBench (also inside red-instruct's
``adversarialqa.json``), HarmBench, Do-Not-Answer, XSTest, JailbreakBench, garak's probes,
verazuo/jailbreak_llms and the MT-Bench / Vicuna-Bench questions.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import json
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Row = dict[str, str]
Role = Literal["train", "dev"]


@dataclass(frozen=True)
class Source:
    name: str
    role: Role
    repo: str  # owner/name on GitHub
    commit: str
    path: str
    licence: str
    read: Callable[[bytes], list[Row]]
    note: str = ""


class SourceError(RuntimeError):
    """A source file is missing or not the one the manifest names."""


def _row(text: str, label: str, category: str) -> Row:
    return {"text": " ".join(text.split()) if len(text) < 600 else text.strip(),
            "label": label, "category": category}


def _stable_sample(rows: Iterable[Row], count: int | None) -> list[Row]:
    """Distinct texts; ``count`` of them chosen by the SHA-256 of their text (no RNG, so a
    rebuild takes the same lines on any machine)."""
    unique: dict[str, Row] = {}
    for row in rows:
        if row["text"] and row["text"] not in unique:
            unique[row["text"]] = row
    ordered = sorted(unique.values(),
                     key=lambda r: hashlib.sha256(r["text"].encode()).hexdigest())
    return ordered if count is None else ordered[:count]


def _jsonl(raw: bytes) -> Iterator[dict[str, Any]]:
    for line in raw.decode("utf-8").splitlines():
        if line.strip():
            yield json.loads(line)


# CategoricalHarmfulQA's 11 categories and 55 subcategories, as S-categories (Llama Guard 3's
# model card puts cyber crime, fraud, weapons and drug crimes in S2, child abuse in S1 and
# sexual exploitation of children in S4).
_CATQA: dict[str, str | dict[str, str]] = {
    "Illegal Activity": "S2",
    "Child Abuse": {"Content Sexual exploitation": "S4", "Online predation": "S4",
                    "*": "S1"},
    "Hate/Harass/Violence": {"Gender-based violence": "S1", "Terrorism and extremism": "S1",
                             "*": "S10"},
    "Malware Viruses": "S2",
    "Physical Harm": {"Self-harm": "S11", "Hazardous material handling": "S9",
                      "Weapon making": "S9", "*": "S1"},
    "Economic Harm": {"Intellectual property theft": "S8", "*": "S2"},
    "Fraud/Deception": "S2",
    "Adult Content": "S12",
    "Political Campaigning": "S13",
    "Privacy Violation Activity": "S7",
    "Tailored Financial Advice": "S2",  # every question asks how to exploit or cheat
}


def read_catqa(raw: bytes) -> list[Row]:
    rows = []
    for category, subcategories in json.loads(raw).items():
        mapping = _CATQA[category]
        for subcategory, questions in subcategories.items():
            if isinstance(mapping, str):
                code = mapping
            else:
                code = mapping.get(subcategory.rstrip(":"), mapping["*"])
            rows += [_row(q, "unsafe", code) for q in questions]
    return _stable_sample(rows, None)


def read_harmfulqa(raw: bytes) -> list[Row]:
    rows = [_row(q, "unsafe", "unsafe") for topics in json.loads(raw).values()
            for questions in topics.values() for q in questions]
    return _stable_sample(rows, None)


def read_dangerousqa(raw: bytes) -> list[Row]:
    return _stable_sample((_row(q, "unsafe", "unsafe") for q in json.loads(raw)), None)


# OpenAI's moderation labels as S-categories; unflagged samples are benign text.
_MODERATION = (("S3", "S4"), ("SH", "S11"), ("V2", "S1"), ("V", "S1"), ("H2", "S10"),
               ("H", "S10"), ("HR", "S10"), ("S", "S12"))


def read_moderation(raw: bytes) -> list[Row]:
    rows = []
    for item in _jsonl(gzip.decompress(raw)):
        code = next((s for label, s in _MODERATION if item.get(label) == 1), None)
        rows.append(_row(item["prompt"], "unsafe" if code else "safe", code or "benign"))
    return _stable_sample(rows, None)


def read_langkit_jailbreaks(raw: bytes) -> list[Row]:
    return _stable_sample((_row(t, "unsafe", "prompt_injection")
                           for t in json.loads(raw)["jailbreak"]), None)


def _instruction(item: dict[str, Any]) -> str:
    text = str(item.get("instruction", ""))
    extra = str(item.get("input", "") or "")
    return f"{text}\n{extra}" if extra.strip() else text


def _gpteacher(count: int | None) -> Callable[[bytes], list[Row]]:
    def read(raw: bytes) -> list[Row]:
        return _stable_sample((_row(_instruction(i), "safe", "benign")
                               for i in json.loads(raw)), count)
    return read


def read_self_instruct(raw: bytes) -> list[Row]:
    rows = []
    for item in _jsonl(raw):
        instances = item.get("instances") or [{}]
        rows.append(_row(_instruction({**item, "input": instances[0].get("input", "")}),
                         "safe", "ordinary"))
    return _stable_sample(rows, None)


def read_clinc150(raw: bytes) -> list[Row]:
    # Short requests and small talk to an assistant: "yep", "no way", "bye-bye", "make a
    # reservation for 2 at 7pm", "freeze my account". Chat turns like these were refused when
    # no training line resembled them (docs/safety.md, "Ordinary chat turns").
    data = json.loads(raw)
    return _stable_sample((_row(text, "safe", "ordinary")
                           for text, _intent in data["train"] + data["oos_train"]), 1500)


def read_gsm8k(raw: bytes) -> list[Row]:
    return _stable_sample((_row(i["question"], "safe", "ordinary") for i in _jsonl(raw)), 350)


def read_humaneval(raw: bytes) -> list[Row]:
    return _stable_sample((_row(i["prompt"], "safe", "ordinary")
                           for i in _jsonl(gzip.decompress(raw))), None)


def read_nq_open(raw: bytes) -> list[Row]:
    return _stable_sample((_row(i["question"], "safe", "ordinary") for i in _jsonl(raw)), 350)


# AILuminate's hazard codes (MLCommons taxonomy v1.0) as Llama Guard 3's S-codes.
_AILUMINATE = {"vcr": "S1", "ncr": "S2", "src": "S3", "cse": "S4", "dfm": "S5",
               "spc_fin": "S6", "spc_hlt": "S6", "spc_lgl": "S6", "prv": "S7", "ipv": "S8",
               "iwp": "S9", "hte": "S10", "ssh": "S11", "sxc_prn": "S12", "spc_ele": "S13"}


def read_ailuminate(raw: bytes) -> list[Row]:
    rows = [_row(r["prompt_text"], "unsafe", _AILUMINATE[r["hazard"]])
            for r in csv.DictReader(io.StringIO(raw.decode("utf-8")))]
    return _stable_sample(rows, None)


def _tensor_trust(category: str) -> Callable[[bytes], list[Row]]:
    def read(raw: bytes) -> list[Row]:
        return _stable_sample((_row(i["attack"], "unsafe", category) for i in _jsonl(raw)
                               if len(i["attack"].strip()) >= 8), 150)
    return read


# CoCoNot (allenai/noncompliance, MIT): what a model should not comply with. Its "requests with
# safety concerns" are harmful requests; misinformation requests (write a false article) are
# left out (no S-category fits them), and so are its privacy requests ("Bill Gates' phone
# number"): with them the head refused users giving their *own* phone or card number
# ("My phone is 06…, call me tomorrow": p=0.997), which the pii check already masks
# (docs/safety.md, "Measured"). The other kinds (incomplete, unsupported, indeterminate,
# "humanising" questions) are harmless for this check. The contrast sets are harmless requests
# written to look like harmful ones ("How can I kill time during a long flight?").
_COCONOT = {"copyright violations": "S8", "triggers for offensive language": "S10",
            "dangerous or sensitive topics": "unsafe", "wildchats": "unsafe"}


def read_coconot_original(raw: bytes) -> list[Row]:
    rows = []
    for item in _jsonl(raw):
        if item["category"] != "Requests with safety concerns":
            rows.append(_row(item["prompt"], "safe", "benign"))
        elif item["subcategory"] in _COCONOT:  # misinformation and privacy: left out
            rows.append(_row(item["prompt"], "unsafe", _COCONOT[item["subcategory"]]))
    return _stable_sample(rows, None)


def read_coconot_contrast(raw: bytes) -> list[Row]:
    return _stable_sample((_row(i["prompt"], "safe", "lookalike") for i in _jsonl(raw)), None)


# SimpleSafetyTests' harm areas as S-codes.
_SST = {"Suicide, Self-Harm, and Eating Disorders": "S11", "Physical harm and Violence": "S1",
        "Illegal and Highly Regulated items": "S2", "Scams and fraud": "S2",
        "Child safety": "S4"}


def read_simple_safety_tests(raw: bytes) -> list[Row]:
    rows = [_row(r["prompts_final"], "unsafe", _SST[r["harm_area"]])
            for r in csv.DictReader(io.StringIO(raw.decode("utf-8")))]
    return _stable_sample(rows, None)


def _cyberseceval(label: str, category: str, count: int | None,
                  field: str = "mutated_prompt") -> Callable[[bytes], list[Row]]:
    """CyberSecEval (meta-llama/PurpleLlama, MIT): code-interpreter abuse requests, the
    harmless look-alikes of its false-refusal set, and direct prompt injections."""
    def read(raw: bytes) -> list[Row]:
        items = [i for i in json.loads(raw) if i.get("injection_type", "direct") == "direct"]
        return _stable_sample((_row(str(i[field]), label, category) for i in items), count)
    return read


# A source that states no licence is only ever measured on, never trained on or shipped.
EVAL_ONLY = "none stated (evaluation only, never trained on or shipped)"

SOURCES: tuple[Source, ...] = (
    # --- training: harmful
    Source("catqa", "train", "declare-lab/red-instruct",
           "73c759c93d2f6b1d8c7b058ab7bcec5fb0c28fa2", "harmful_questions/catqa_english.json",
           "Apache-2.0", read_catqa,
           "CategoricalHarmfulQA: 550 harmful questions in 11 categories, mapped to S-codes"),
    Source("harmfulqa", "train", "declare-lab/red-instruct",
           "73c759c93d2f6b1d8c7b058ab7bcec5fb0c28fa2", "harmful_questions/harmfulqa.json",
           "Apache-2.0", read_harmfulqa, "HarmfulQA's harmful questions (no category)"),
    Source("dangerousqa", "train", "declare-lab/red-instruct",
           "73c759c93d2f6b1d8c7b058ab7bcec5fb0c28fa2", "harmful_questions/dangerousqa.json",
           "Apache-2.0", read_dangerousqa, "DangerousQA (no category)"),
    Source("moderation", "train", "openai/moderation-api-release",
           "f4ab51b5edd3bfbcb349a56324274235b674e0e4", "data/samples-1680.jsonl.gz", "MIT",
           read_moderation, "flagged samples by their first label; unflagged ones as benign"),
    Source("langkit-jailbreaks", "train", "whylabs/langkit",
           "5d6cab1e2ff32181ba5c514aaa2a4473421dc413", "langkit/themes.json", "Apache-2.0",
           read_langkit_jailbreaks, "the jailbreak theme's examples"),
    # --- training: benign
    Source("gpteacher-roleplay", "train", "teknium1/GPTeacher",
           "481075123c29854bddb82655badeef6a438f2436",
           "Roleplay/roleplay-simple-deduped-roleplay-instruct.json", "MIT", _gpteacher(None),
           "role-play instructions"),
    Source("gpteacher-codegen", "train", "teknium1/GPTeacher",
           "481075123c29854bddb82655badeef6a438f2436", "Codegen/codegen-instruct.json", "MIT",
           _gpteacher(1500), "coding instructions, 1,500 of 4,535"),
    Source("gpteacher-toolformer", "train", "teknium1/GPTeacher",
           "481075123c29854bddb82655badeef6a438f2436",
           "Toolformer/toolformer-similarity-0.6-dataset.json", "MIT", _gpteacher(600),
           "general tasks phrased for tool use, 600 of 2,396"),
    Source("self-instruct-seed", "train", "yizhongw/self-instruct",
           "0b26ccaa415992100fa32df62d41b994cf928e23", "data/seed_tasks.jsonl", "Apache-2.0",
           read_self_instruct, "the 175 hand-written seed tasks"),
    Source("clinc150", "train", "clinc/oos-eval",
           "828f8093932c8fe6ca7936c3d2e52903b1c523de", "data/data_full.json", "CC-BY-3.0",
           read_clinc150, "CLINC150's training queries (150 intents, small talk among them) and "
           "its out-of-scope ones, 1,500 of 15,100"),
    # --- training: CoCoNot, harmful requests and harmless ones that look harmful
    Source("coconot-original", "train", "allenai/noncompliance",
           "25bf77cc668814360405cdb8197c4368205806c7", "data/coconot_eval.jsonl", "MIT",
           read_coconot_original,
           "CoCoNot's original set: requests with safety concerns (not misinformation) as "
           "harmful, the other noncompliance kinds as harmless"),
    Source("coconot-contrast-pref", "train", "allenai/noncompliance",
           "25bf77cc668814360405cdb8197c4368205806c7", "data/coconot_pref.jsonl", "MIT",
           read_coconot_contrast, "CoCoNot's contrast set (preference part): harmless look-alikes"),
    Source("coconot-contrast-eval", "train", "allenai/noncompliance",
           "25bf77cc668814360405cdb8197c4368205806c7", "data/coconot_contrast_eval.jsonl", "MIT",
           read_coconot_contrast, "CoCoNot's contrast set (test part): harmless look-alikes"),
    # --- development: ordinary requests
    Source("gsm8k", "dev", "openai/grade-school-math",
           "3101c7d5072418e28b9008a6636bde82a006892c", "grade_school_math/data/test.jsonl",
           "MIT", read_gsm8k, "maths word problems, 350 of the 1,319 test questions"),
    Source("humaneval", "dev", "openai/human-eval",
           "6d43fb980f9fee3c892a914eda09951f772ad10d", "data/HumanEval.jsonl.gz", "MIT",
           read_humaneval, "164 Python function stubs to complete"),
    Source("self-instruct-user", "dev", "yizhongw/self-instruct",
           "0b26ccaa415992100fa32df62d41b994cf928e23",
           "human_eval/user_oriented_instructions.jsonl", "Apache-2.0", read_self_instruct,
           "252 user-oriented tasks (writing, e-mail, planning, code)"),
    Source("nq-open", "dev", "google-research-datasets/natural-questions",
           "fb26a3073b1fe636c97302890a27b491d6530130", "nq_open/NQ-open.dev.jsonl",
           "Apache-2.0 (repository); NQ data CC BY-SA 3.0", read_nq_open,
           "real search questions, 350 of 3,610"),
    # --- development: harmful
    Source("ailuminate", "dev", "mlcommons/ailuminate",
           "769cc2be9d20c8d4fb26ce53b68865ed41dfb8e2",
           "airr_official_1.0_demo_en_us_prompt_set_release.csv", "CC-BY-4.0",
           read_ailuminate, "AILuminate v1.0 demo prompts, 12 hazards + specialised advice"),
    Source("simple-safety-tests", "dev", "bertiev/SimpleSafetyTests",
           "d7aee9a9422a5a5488f478fd79c2479c891c0f3b", "SimpleSafetyTests - test cases.csv",
           "CC-BY-4.0",
           read_simple_safety_tests, "100 clear-cut harmful requests in 5 harm areas"),
    Source("cyberseceval-interpreter", "dev", "meta-llama/PurpleLlama",
           "4be64c3a24442b51c76175e6ec67722cc3f5fe38",
           "CybersecurityBenchmarks/datasets/interpreter/interpreter.json",
           "MIT", _cyberseceval("unsafe", "S14", 150),
           "code-interpreter abuse (S14), 150 of 500"),
    Source("cyberseceval-injection", "dev", "meta-llama/PurpleLlama",
           "4be64c3a24442b51c76175e6ec67722cc3f5fe38",
           "CybersecurityBenchmarks/datasets/prompt_injection/prompt_injection.json",
           "MIT", _cyberseceval("unsafe", "prompt_injection", None, "user_input"),
           "the 196 direct prompt injections (the user's text)"),
    Source("cyberseceval-frr", "dev", "meta-llama/PurpleLlama",
           "4be64c3a24442b51c76175e6ec67722cc3f5fe38",
           "CybersecurityBenchmarks/datasets/mitre_frr/mitre_frr.json",
           "MIT", _cyberseceval("safe", "lookalike", 350),
           "harmless security-coding requests that look like attacks, 350 of 750"),
    Source("tensor-trust-hijacking", "dev", "HumanCompatibleAI/tensor-trust-data",
           "e2385ea9cf448c9641b96e2e39f113ed4979a5b0",
           "benchmarks/hijacking-robustness/v1/hijacking_robustness_dataset.jsonl",
           EVAL_ONLY, _tensor_trust("prompt_injection"), "prompt hijacking attacks, 150 of 775"),
    Source("tensor-trust-extraction", "dev", "HumanCompatibleAI/tensor-trust-data",
           "e2385ea9cf448c9641b96e2e39f113ed4979a5b0",
           "benchmarks/extraction-robustness/v1/extraction_robustness_dataset.jsonl",
           EVAL_ONLY, _tensor_trust("system_prompt_extraction"),
           "prompt extraction attacks, 150 of 569"),
)


def repository_dir(mirrors: Path, repo: str) -> Path:
    owner, name = repo.split("/")
    for candidate in (mirrors / f"{owner}+{name}" / "repo", mirrors / owner / name):
        if candidate.exists():
            return candidate
    raise SourceError(f"no copy of {repo} under {mirrors} (clone it as {owner}/{name})")


def clone(mirrors: Path, url: str = "https://github.com/{repo}.git",
          sources: Iterable[Source] = SOURCES) -> list[str]:
    """Make a copy of every source repository that ``mirrors`` lacks (``mirrors/owner/name``,
    a bare partial clone: file contents arrive as ``git show`` asks for them) and make sure
    it holds the pinned commit. Returns the repositories cloned. Needs ``git`` and the
    network; the bytes are checked against the manifest's SHA-256 when the sets are built."""
    cloned = []
    wanted = list(sources)
    for repo in sorted({s.repo for s in wanted}):
        commits = sorted({s.commit for s in wanted if s.repo == repo})
        try:
            directory = repository_dir(mirrors, repo)
        except SourceError:
            directory = mirrors / repo
            directory.parent.mkdir(parents=True, exist_ok=True)
            _git("clone", "--bare", "--filter=blob:none", url.format(repo=repo),
                 str(directory))
            cloned.append(repo)
        for commit in commits:
            if subprocess.run(["git", "-C", str(directory), "cat-file", "-e",
                               f"{commit}^{{commit}}"], capture_output=True).returncode:
                _git("-C", str(directory), "fetch", "origin", commit)
    return cloned


def _git(*args: str) -> None:
    done = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SourceError(f"git {' '.join(args)}: {done.stderr.strip()}")


def read_bytes(mirrors: Path, source: Source) -> bytes:
    directory = repository_dir(mirrors, source.repo)
    done = subprocess.run(["git", "-C", str(directory), "show",
                           f"{source.commit}:{source.path}"], capture_output=True, check=False)
    if done.returncode != 0:
        raise SourceError(f"{source.repo}@{source.commit[:12]}:{source.path}: "
                          f"{done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def build(mirrors: Path, out: Path, expected: dict[str, str] | None = None
          ) -> list[dict[str, Any]]:
    """Write every source's lines under ``out`` and return the manifest. ``expected``: the
    SHA-256 per source name that the bytes must have (the committed manifest's)."""
    manifest = []
    for source in SOURCES:
        raw = read_bytes(mirrors, source)
        digest = hashlib.sha256(raw).hexdigest()
        want = (expected or {}).get(source.name)
        if want and want != digest:
            raise SourceError(f"{source.name}: {source.path} has SHA-256 {digest}, the "
                              f"manifest says {want}")
        rows = source.read(raw)
        target = out / source.role / f"{source.name}.jsonl"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                          encoding="utf-8")
        labels = sorted({r["label"] for r in rows})
        manifest.append({
            "name": source.name, "role": source.role, "repo": source.repo,
            "commit": source.commit, "path": source.path, "licence": source.licence,
            "sha256": digest, "lines_used": len(rows), "labels": labels,
            "note": source.note,
        })
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def committed_manifest() -> list[dict[str, Any]]:
    """``data/sources.json``: the manifest the shipped head was fitted from."""
    from importlib import resources

    text = (resources.files("assistant.safety") / "data" / "sources.json").read_text("utf-8")
    return list(json.loads(text))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mirrors", type=Path, help="folder holding the source repositories")
    parser.add_argument("out", type=Path, help="where the train/ and dev/ sets go")
    parser.add_argument("--check", action="store_true",
                        help="refuse bytes that differ from data/sources.json")
    parser.add_argument("--clone", action="store_true",
                        help="first clone the repositories MIRRORS lacks (needs the network)")
    args = parser.parse_args(argv)
    expected = {m["name"]: m["sha256"] for m in committed_manifest()} if args.check else None
    try:
        if args.clone:
            for repo in clone(args.mirrors):
                print(f"cloned {repo}")
        manifest = build(args.mirrors, args.out, expected)
    except SourceError as exc:
        sys.exit(f"error: {exc}")
    for entry in manifest:
        print(f"{entry['role']:<6}{entry['name']:<26}{entry['lines_used']:>6}  {entry['licence']}")


if __name__ == "__main__":
    main()
