"""The package works outside the checkout: a wheel built from this tree, installed into a fresh
virtualenv in another directory, loads its prompts, migrates its store and prints its settings.

The wheel is installed without its dependencies, which the fresh environment borrows from the
test's own environment through a path file (resolving them again from PyPI would take minutes
and prove pip, not us); the project's own files come only from the wheel.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                    "--disable-pip-version-check", "-w", str(base / "dist"), str(ROOT)],
                   check=True, cwd=base)
    (wheel,) = (base / "dist").glob("assistant-*.whl")
    env_dir = base / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip())
    # The dependencies, not the project: our site-packages holds the project only as an
    # editable link, whose .pth is not read from a directory named in another .pth file.
    (site / "borrowed-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # Without PYTHONPATH: a checkout on it would make pip see the project as installed
    # already in the new environment and skip the wheel.
    outside = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-deps", "--disable-pip-version-check", str(wheel)],
                   check=True, cwd=base, env=outside)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "assistant/prompt_files/system.toml" in names
    return env_dir


def run_outside(env_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return subprocess.run([str(arg) for arg in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_installed_wheel_loads_its_own_prompts_outside_the_checkout(
        installed: Path, tmp_path: Path) -> None:
    done = run_outside(installed, installed / "bin" / "python", "-c",
                       "import assistant, json\n"
                       "from assistant.prompts import PromptLibrary, DEFAULT_PROMPTS_DIR\n"
                       "library = PromptLibrary.load()\n"
                       "print(json.dumps({'module': assistant.__file__,"
                       " 'prompts': str(DEFAULT_PROMPTS_DIR),"
                       " 'system': library['system'].render(**{name: 'x' for name in"
                       " library['system'].variables})}))", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["module"].startswith(str(installed)) and str(ROOT) not in found["module"]
    assert found["prompts"].startswith(str(installed))
    assert found["system"].strip()


def test_the_installed_command_prints_its_settings_and_migrates_a_store(
        installed: Path, tmp_path: Path) -> None:
    done = run_outside(installed, installed / "bin" / "assistant", "config", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ASSISTANT_MODEL"] == "smollm2"
    migrate = run_outside(installed, installed / "bin" / "python", "-c",
                          "from assistant.store import connect_store\n"
                          f"connect_store('sqlite:///{tmp_path / 'store.db'}')", cwd=tmp_path)
    assert migrate.returncode == 0, migrate.stderr
    assert (tmp_path / "store.db").stat().st_size > 0
