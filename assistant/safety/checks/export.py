"""Fit a safety classifier with scikit-learn and write it to the cache as plain arrays.

``python -m assistant.safety.checks.export toxicity FOLDER``. Run by
``model_cache.load_or_export`` in a short-lived subprocess, so that the process that scores
never imports scikit-learn; it can be run by hand to prepare a cache (e.g. in an image build).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from assistant.safety.checks import toxicity
from assistant.safety.checks.model_cache import write


def export_toxicity(folder: Path) -> None:
    arrays, meta = toxicity.load_shipped().export()
    write(folder, arrays, {**meta, "key": toxicity.cache_key()})


EXPORTS = {"toxicity": export_toxicity}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=sorted(EXPORTS))
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    EXPORTS[args.model](args.folder)


if __name__ == "__main__":
    main()
