"""The one deterministic rule that holds source units out of the training corpora.

A *source unit* is one standard-library file (keyed by its path relative to the stdlib root, with
``/`` separators) or one ``pydoc_data`` topic (keyed ``topic:<name>``). A unit is held out when the
first byte of ``sha256("mergemix-heldout/v1/" + key)`` is below 32, i.e. about 1 unit in 8. Held-out
units never enter the ``code``/``web``/``general`` corpora; the ``mm_code`` and ``mm_prose``
benchmarks are built only from them. The rule depends on the key alone, not on the Python version or
on any seed, so every run of every builder agrees on it.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
from pathlib import Path
from typing import Iterator

HELDOUT_SALT = "mergemix-heldout/v1/"
HELDOUT_THRESHOLD = 32  # first sha256 byte < 32  ->  held out (12.5 %)

# Path components that mark test suites, generated tables or vendored data; never used anywhere.
_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test", "encodings", "ensurepip"}
_SKIP_FILES = {"pydoc_data/topics.py"}  # the prose source itself; it is not code
MAX_FILE_CHARS = 100_000


def is_heldout(key: str) -> bool:
    """True when the source unit ``key`` is reserved for benchmarks."""
    return hashlib.sha256((HELDOUT_SALT + key).encode("utf-8")).digest()[0] < HELDOUT_THRESHOLD


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def iter_stdlib_files() -> Iterator[tuple[str, Path]]:
    """``(relative_key, path)`` of every usable stdlib ``.py`` file, sorted by key (held-out ones included)."""
    root = stdlib_root()
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        parts = [] if rel_dir == "." else rel_dir.split(os.sep)
        if any(p in _SKIP_DIRS or p.startswith("test") for p in parts):
            dirnames[:] = []
            continue
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("test")]
        for name in filenames:
            if not name.endswith(".py") or name.startswith("test_"):
                continue
            key = "/".join(parts + [name])
            if key in _SKIP_FILES:
                continue
            found.append((key, Path(dirpath) / name))
    found.sort()
    yield from found


def read_source(path: Path) -> str | None:
    """File text, or None when it is not UTF-8, too large, or empty."""
    try:
        if path.stat().st_size > MAX_FILE_CHARS * 4:
            return None
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if not text.strip() or len(text) > MAX_FILE_CHARS or "\x00" in text:
        return None
    return text
