"""Benchmarks: `python -m bench.<name>` (see docs/performance.md)."""

from __future__ import annotations

import compileall
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def compile_project() -> None:
    """Byte-compile the project's modules before timing, as a user's second run finds them.

    With PYTHONDONTWRITEBYTECODE set (some sandboxes and CI images set it) Python never caches
    the bytecode of our modules, and every timed process would compile them again."""
    for path in sorted(ROOT.iterdir()):
        if path.is_dir() and (path / "__init__.py").is_file():
            compileall.compile_dir(path, quiet=1)
        elif path.suffix == ".py":
            compileall.compile_file(path, quiet=1)
