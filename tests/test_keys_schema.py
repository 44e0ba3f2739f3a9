"""One key schema (issue 14): every Redis key, queue and task name is built in
``assistant/keys.py``, and docs/architecture.md lists exactly the keys that module builds."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from assistant import keys

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("assistant", "worker", "integrations")
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def string_parts(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string constant in a module, f-strings' literal parts included."""
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def test_no_module_but_keys_names_a_key_a_queue_or_the_task() -> None:
    offenders = []
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "assistant" / "keys.py":
                continue
            for line, text in string_parts(ast.parse(path.read_text(), str(path))):
                if text.startswith(f"{keys.PREFIX}:") or text in (keys.TURNS_QUEUE,
                                                                   keys.ANSWER_TASK):
                    offenders.append(f"{path.relative_to(ROOT)}:{line}: {text!r}")
    assert offenders == []


def documented_patterns() -> set[str]:
    """The key patterns in the first column of the architecture page's key table."""
    text = ARCHITECTURE.read_text()
    section = text.split("## Who owns which data", 1)[1].split("\n## ", 1)[0]
    found: set[str] = set()
    for row in section.splitlines():
        if not row.startswith("| `"):
            continue
        first_cell = row.split("|")[1]
        found.update(re.findall(r"`([^`]+)`", first_cell))
    return found


def test_the_architecture_page_lists_exactly_the_keys_the_schema_builds() -> None:
    built = {entry.pattern for entry in keys.schema()}
    documented = documented_patterns()
    assert sorted(built - documented) == [], "built in assistant/keys.py, missing in the doc"
    assert sorted(documented - built) == [], "in the doc, not built by assistant/keys.py"


def test_every_key_builder_says_what_it_holds() -> None:
    undocumented = [entry.name for entry in keys.schema()
                    if not entry.doc and not entry.name.isupper()]
    assert undocumented == []


def test_the_schema_draws_conversation_scoped_keys_with_their_placeholders() -> None:
    patterns = {entry.name: entry.pattern for entry in keys.schema()}
    assert patterns["reply"] == "reply:<conv>:<msg id>"
    assert patterns["lock"] == "lock:<conv>"
    assert patterns["quota"] == "quota:<platform>:<workspace>:<user>:<day>"
    assert "conv:<conv>:messages" in {entry.pattern for entry in keys.schema()}
