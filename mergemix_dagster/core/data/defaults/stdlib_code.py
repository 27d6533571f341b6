"""``code`` domain: Python source of the running interpreter's standard library (PSF licence)."""

from __future__ import annotations

import random

from mergemix_dagster.core.data.defaults.split import is_heldout, iter_stdlib_files, read_source


def clean_code(text: str) -> str:
    """Normalise line endings, drop trailing whitespace and runs of more than two blank lines."""
    lines = [ln.rstrip() for ln in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    out: list[str] = []
    blank = 0
    for ln in lines:
        blank = blank + 1 if not ln else 0
        if blank <= 2:
            out.append(ln)
    return "\n".join(out).strip("\n") + "\n"


def training_code_files() -> list[tuple[str, object]]:
    return [(key, path) for key, path in iter_stdlib_files() if not is_heldout(key)]


def heldout_code_files() -> list[tuple[str, object]]:
    return [(key, path) for key, path in iter_stdlib_files() if is_heldout(key)]


def build_code_documents(max_chars: int, seed: int) -> list[str]:
    """One document per training stdlib file, in a seeded random order, until ``max_chars``."""
    files = training_code_files()
    random.Random(f"code/{seed}").shuffle(files)
    docs: list[str] = []
    total = 0
    for _, path in files:
        if total >= max_chars:
            break
        text = read_source(path)
        if text is None:
            continue
        doc = clean_code(text)
        docs.append(doc)
        total += len(doc)
    return docs
