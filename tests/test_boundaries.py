"""Who may import whom (docs/architecture.md, "Import rules").

- The core (``assistant/``) imports no platform SDK, no Celery, no web framework, no
  llama_cpp, no edge and no worker module, and has no import cycle of its own.
- The edges (``integrations/``) import no Celery and no ``worker`` module: they reach the
  workers through ``assistant.backend`` (entry points), not imports.
- The worker imports no platform: senders come through the ``assistant.senders`` entry points.
- The Slack and Telegram HTTP routes do not import the web app's internals, nor it theirs
  (it mounts them by name, lazily, when they are configured).
- Every module the CLI names as a string exists.
"""

import ast
import re
from pathlib import Path

import pytest

FORBIDDEN = {"celery", "kombu", "llama_cpp", "slack_bolt", "slack_sdk", "telegram", "fastapi",
             "starlette", "uvicorn"}
ROOT = Path(__file__).resolve().parent.parent


def imported_names(path: Path) -> set[str]:
    """Dotted modules a module imports, at its top or inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def imported_modules(path: Path) -> set[str]:
    """Top-level packages a module imports, at its top or inside functions."""
    return {name.split(".")[0] for name in imported_names(path)}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path, known: set[str]) -> set[str]:
    """The project modules ``path`` imports when it runs (``TYPE_CHECKING`` blocks aside),
    counting ``from package import module``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {id(child) for node in ast.walk(tree)
               if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
               for stmt in node.body for child in ast.walk(stmt)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found & known


def import_cycles(package: str) -> list[list[str]]:
    """Groups of ``package``'s modules that import each other (Tarjan's strongly connected
    components of the runtime import graph, groups of more than one)."""
    paths = {module_name(path): path for path in (ROOT / package).rglob("*.py")}
    graph = {name: runtime_imports(path, set(paths)) - {name} for name, path in paths.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return cycles


def test_core_imports_no_framework() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_modules(path) & FORBIDDEN)
        for path in (ROOT / "assistant").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_core_never_imports_the_edges() -> None:
    for path in (ROOT / "assistant").rglob("*.py"):
        assert not imported_modules(path) & {"integrations", "worker"}, path


def test_the_core_has_no_import_cycle() -> None:
    assert import_cycles("assistant") == []


def test_the_edges_import_no_celery_and_no_worker_module() -> None:
    offenders = {}
    for path in (ROOT / "integrations").rglob("*.py"):
        relative = str(path.relative_to(ROOT))
        names = imported_names(path)
        bad = {name for name in names if name.split(".")[0] in {"celery", "kombu", "worker"}}
        if bad:
            offenders[relative] = sorted(bad)
    assert offenders == {}


def test_platform_routes_and_the_web_app_do_not_import_each_other() -> None:
    for platform in ("slack", "telegram"):
        for path in (ROOT / "integrations" / platform).rglob("*.py"):
            names = imported_names(path)
            assert not any(name.startswith("integrations.web") for name in names), path
    mounted = {"integrations.slack.http", "integrations.telegram.webhook"}
    web_app = imported_names(ROOT / "integrations" / "web" / "app.py") - mounted
    assert not any(name.startswith(("integrations.slack", "integrations.telegram"))
                   for name in web_app)


def test_the_cli_names_only_modules_that_exist() -> None:
    text = (ROOT / "assistant" / "cli.py").read_text(encoding="utf-8")
    named = set(re.findall(r"[\"'](?:worker|integrations|assistant)(?:\.\w+)+", text))
    named = {name.strip("\"'").split(":")[0] for name in named}
    assert {"worker.app", "integrations.web.app"} <= named
    for name in named:
        path = ROOT.joinpath(*name.split("."))
        assert path.with_suffix(".py").exists() or (path / "__init__.py").exists(), name


def test_the_cycle_check_sees_a_cycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg import b\n")
    (package / "b.py").write_text("from typing import TYPE_CHECKING\nimport pkg.a\n")
    (package / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                  "    from pkg import a\n")
    (package / "d.py").write_text("import pkg.c\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert import_cycles("pkg") == [["pkg.a", "pkg.b"]]


def test_the_backend_entry_point_loads_without_building_anything_at_import() -> None:
    """``assistant.backend`` finds the Celery backend; importing the worker's app module
    builds no settings and no Celery app (they are built on first use)."""
    import subprocess
    import sys

    code = ("import worker.app, worker.backend; "
            "assert worker.app.worker_app.cache_info().currsize == 0; "
            "assert worker.app.worker_settings.cache_info().currsize == 0; "
            "from importlib.metadata import entry_points; "
            "found = {e.name: e.value for e in entry_points(group='assistant.backend')}; "
            "assert found == {'celery': 'worker.backend:make_backend'}, found")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}  # no REDIS_URL at all
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_a_worker_turns_prompts_and_window_never_load_langsmith() -> None:
    """langchain's PromptTemplate and the Runnable wrapper of ``trim_messages`` import
    langsmith's tracers (+16 MB in every worker process, ~330 modules); the worker uses
    langchain's formatter and the plain trimming function, so a pool process never loads
    them (measured: ``import worker.tasks`` 117 -> 101 MB max RSS)."""
    import subprocess
    import sys

    code = (
        "import sys, worker.tasks\n"
        "from assistant.envelope import ChatMessage\n"
        "from assistant.memory.history import Summary\n"
        "from assistant.memory.window import build_window\n"
        "from assistant.prompts import PromptLibrary\n"
        "library = PromptLibrary.load()\n"
        "for name in library.names():\n"
        "    prompt = library[name]\n"
        "    prompt.render(**{v: 'x' for v in prompt.variables})\n"
        "turns = [ChatMessage(role=('user', 'assistant')[i % 2], text='word ' * 30)\n"
        "         for i in range(20)]\n"
        "window = build_window(turns, Summary(), 100, lambda ms: 31 * len(ms))\n"
        "assert 0 < len(window.messages) < 20, window\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'langsmith'\n"
        "                or m.startswith('langchain_core.tracers'))\n"
        "assert not loaded, loaded[:10]\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
           "REDIS_URL": "redis://127.0.0.1:9/0"}  # never connected to: import only
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr


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
