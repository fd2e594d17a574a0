"""Check what a wheel holds: the package with its ``py.typed``, and no tests, docs or pictures.

Usage: ``python tools/wheel_contents.py dist/lightning_convviz-*.whl``
"""

from __future__ import annotations

import sys
import zipfile

REQUIRED = ("lightning_convviz/__init__.py", "lightning_convviz/py.typed")
FORBIDDEN_PREFIXES = ("tests/", "docs/", "benchmarks/", "examples/", "tools/")
FORBIDDEN_SUFFIXES = (".png", ".jsonl", ".ipynb")


def main(path: str) -> None:
    names = zipfile.ZipFile(path).namelist()
    missing = [name for name in REQUIRED if name not in names]
    stray = [
        name
        for name in names
        if name.startswith(FORBIDDEN_PREFIXES) or name.endswith(FORBIDDEN_SUFFIXES)
    ]
    package = [name for name in names if name.startswith("lightning_convviz/")]
    print(f"{path}: {len(names)} files, {len(package)} in lightning_convviz/")
    if missing or stray:
        sys.exit(f"missing: {missing}; should not be there: {stray}")


if __name__ == "__main__":
    main(sys.argv[1])
