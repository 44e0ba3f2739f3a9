"""The engine's build directory (scripts/llama-wheel.sh) is keyed by everything that changes
the binary: version, build options, compiler flags (AMX on or off) and the CPU of a native
build. A changed flag or host therefore builds again instead of reusing a wheel made for
something else, which pip's own cache (keyed by the source archive) would do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "llama-wheel.sh"


def wheel_dir(**env: str) -> str:
    clean = {key: value for key, value in os.environ.items()
             if not key.startswith("LLAMA_") and key not in ("CFLAGS", "CXXFLAGS")}
    done = subprocess.run([str(SCRIPT), sys.executable, "0.3.36"], capture_output=True,
                          text=True, check=True, cwd=ROOT,
                          env={**clean, "LLAMA_WHEEL_PRINT_ONLY": "1", **env})
    return done.stdout.strip()


def test_every_flag_that_changes_the_binary_changes_the_directory() -> None:
    default = wheel_dir()
    assert Path(default).name.startswith("llama-cpp-python-0.3.36-")
    assert wheel_dir() == default  # stable: the same inputs reuse the build
    variants = {
        "options": wheel_dir(LLAMA_CMAKE_ARGS="-DGGML_CUDA=ON"),
        "portable": wheel_dir(LLAMA_PORTABLE="1"),
        "cflags": wheel_dir(CFLAGS="-O3"),
    }
    if os.uname().machine == "x86_64":
        variants["amx"] = wheel_dir(LLAMA_ALLOW_AMX="1")
    assert len({default, *variants.values()}) == 1 + len(variants), variants


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="AMX is an x86-64 extension")
def test_the_installed_build_was_made_with_amx_off() -> None:
    """The venv's engine came from a directory whose recorded flags turn AMX off."""
    installed = (ROOT / ".venv" / ".installed")
    if not installed.exists():
        pytest.skip("not installed by `make install`")
    info = (Path(installed.read_text().split()[0]) / "BUILD-INFO").read_text()
    assert "-mno-amx-tile" in info and "-mno-amx-int8" in info


def test_the_lock_pins_every_dependency_within_its_range() -> None:
    """requirements.lock (installed with --require-hashes by make install and the image) pins
    each dependency of pyproject.toml, with hashes, at a version its range allows: a dependency
    added without `make lock` fails here, not at a user's install."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(line) for line in
              project["dependencies"] + project["optional-dependencies"]["test"]]
    pinned: dict[str, str] = {}
    hashed: set[str] = set()
    current = ""
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line[0].isspace() and "==" in line and not line.startswith("#"):
            name, _, rest = line.partition("==")
            current = canonicalize_name(name.split("[")[0])
            pinned[current] = rest.split()[0].split(";")[0]
        elif "--hash=sha256:" in line and current:
            hashed.add(current)
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement.name} is not in requirements.lock: run make lock"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"requirements.lock pins {name}=={pinned[name]}, outside {requirement}")
    assert set(pinned) <= hashed, "every pinned package has its hashes"
