"""The fitted safety classifiers as plain files, so that worker processes never import
scikit-learn (about 115 MB of private memory per process otherwise; docs/safety.md).

Fitting stays scikit-learn, in a short-lived subprocess (``python -m
assistant.safety.checks.export``) that writes one directory per model: NumPy ``.npy`` arrays
(read with ``allow_pickle=False`` and memory-mapped, so a host's processes share the pages)
and a ``meta.json`` of vocabularies and settings. No pickles. The directory's name carries a
key: the SHA-256 of the training data, the format version and the library versions, so edited
data or an upgraded library makes a new export. Processes that start together take a file
lock, so only one of them exports.

The cache lives in ``<data dir>/safety-cache`` (``ASSISTANT_DATA_DIR``, default ``.data``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
META = "meta.json"
EXPORT_TIMEOUT_S = 600.0


class ExportError(RuntimeError):
    """The export subprocess failed; its output is in the message."""


def default_cache_dir() -> Path:
    """``$ASSISTANT_DATA_DIR/safety-cache`` (the settings' data dir; ``.data`` by default)."""
    return Path(os.environ.get("ASSISTANT_DATA_DIR", ".data")) / "safety-cache"


def cache_key(files: Iterable[Any], *parts: str) -> str:
    """SHA-256 over the format version, ``parts`` (library versions) and each file's bytes."""
    digest = hashlib.sha256(f"format {FORMAT_VERSION}\n".encode())
    for part in parts:
        digest.update(f"{part}\n".encode())
    for file in files:
        digest.update(f"{file.name}\n".encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def installed_version(distribution: str) -> str:
    """A distribution's version from its metadata, without importing it."""
    try:
        return f"{distribution} {metadata.version(distribution)}"
    except metadata.PackageNotFoundError:
        return f"{distribution} missing"


@dataclass(frozen=True)
class Exported:
    """One model's arrays (read-only, memory-mapped) and its JSON metadata."""

    arrays: dict[str, np.ndarray[Any, Any]]
    meta: dict[str, Any]


def write(folder: Path, arrays: dict[str, np.ndarray[Any, Any]], meta: dict[str, Any]) -> None:
    """Write a model to ``folder`` atomically: a temporary sibling, then ``os.replace``."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for name, array in arrays.items():
            np.save(staging / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
        (staging / META).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        staging.chmod(0o755)  # mkdtemp's 0700 would hide it from workers run as other users
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def read(folder: Path) -> Exported:
    meta = json.loads((folder / META).read_text(encoding="utf-8"))
    # asarray: a plain ndarray view of the mapping (np.memmap's subclass slows arithmetic).
    arrays = {path.stem: np.asarray(np.load(path, mmap_mode="r", allow_pickle=False))
              for path in folder.glob("*.npy")}
    return Exported(arrays, meta)


def load_or_export(model: str, key: str, cache_dir: Path | None = None) -> Exported:
    """The exported ``model`` for ``key``, running the export subprocess first if there is
    none yet (under a lock, so concurrent starters export once). Raises ``ExportError``."""
    root = cache_dir or default_cache_dir()
    folder = root / f"{model}-{key[:16]}"
    if (folder / META).is_file():
        return read(folder)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{model}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / META).is_file():  # another process may have exported meanwhile
            export(model, folder)
            _remove_stale(root, model, keep=folder)
    return read(folder)


def _remove_stale(root: Path, model: str, keep: Path) -> None:
    """Earlier exports of ``model`` (other keys). A process still using one keeps its pages:
    unlinked files stay mapped."""
    for folder in root.glob(f"{model}-*"):
        if folder != keep and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)


def export(model: str, folder: Path) -> None:
    """Fit ``model`` with scikit-learn in a subprocess that writes it to ``folder``."""
    command = [sys.executable, "-m", "assistant.safety.checks.export", model, str(folder)]
    # The child finds this very package even when it is not installed (run from a checkout).
    package_root = str(Path(__file__).resolve().parents[3])
    paths = [package_root, *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    log.info("exporting the %s classifier to %s", model, folder)
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env,
                              timeout=EXPORT_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ExportError(f"exporting the {model} classifier failed: {exc}") from exc
    if done.returncode != 0 or not (folder / META).is_file():
        output = (done.stderr or done.stdout).strip()[-2000:]
        raise ExportError(f"exporting the {model} classifier failed "
                          f"(exit {done.returncode}): {output}")
