"""The core imports no platform SDK, no Celery, no web framework and no llama_cpp."""

import ast
from pathlib import Path

FORBIDDEN = {"celery", "kombu", "llama_cpp", "slack_bolt", "slack_sdk", "telegram", "fastapi",
             "starlette", "uvicorn"}
ROOT = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    """Top-level packages a module imports, at its top or inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_imports_no_framework() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_modules(path) & FORBIDDEN)
        for path in (ROOT / "assistant").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_core_never_imports_the_edges() -> None:
    for path in (ROOT / "assistant").rglob("*.py"):
        assert not imported_modules(path) & {"integrations", "worker"}, path


def test_the_worker_never_imports_the_platforms() -> None:
    """Senders reach the worker through the ``assistant.senders`` entry points (issue 14)."""
    offenders = [str(path.relative_to(ROOT)) for path in (ROOT / "worker").rglob("*.py")
                 if "integrations" in imported_modules(path)]
    assert offenders == []


def test_every_registered_sender_loads_and_is_off_without_its_token() -> None:
    from importlib.metadata import entry_points

    from assistant.settings import Settings
    from worker.senders import GROUP

    found = {entry.name: entry.load() for entry in entry_points(group=GROUP)}
    assert set(found) == {"slack", "telegram"}
    unconfigured = Settings(SLACK_BOT_TOKEN=None, TELEGRAM_BOT_TOKEN=None)  # type: ignore[call-arg]
    assert all(factory(unconfigured, None) is None for factory in found.values())


def test_the_check_sees_forbidden_imports(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("import celery\nfrom fastapi import FastAPI\n")
    assert imported_modules(sample) == {"celery", "fastapi"}
