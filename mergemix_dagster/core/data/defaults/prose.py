"""``web`` (prose) domain: English prose of the Python documentation shipped with the interpreter.

Sources (PSF licence): the ``pydoc_data.topics`` help topics and the docstrings of standard-library
modules, classes and functions. Only prose paragraphs are kept: indented blocks (code samples,
grammar, tables), doctest lines, reST headings and symbol-heavy lines are dropped.
"""

from __future__ import annotations

import inspect
import random
import re
from functools import lru_cache

from mergemix_dagster.core.data.defaults.split import is_heldout, iter_stdlib_files, read_source

_DOCSTRING_RX = re.compile(r'(?s)(?:"""(.*?)"""|\'\'\'(.*?)\'\'\')')
_HEADING_RX = re.compile(r"^[*=~^\-#+]{3,}$")
_SENTENCE_SPLIT_RX = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_SYMBOLS = set("{}[]=<>_|\\@$%`*#")


def _prose_paragraphs(text: str) -> list[str]:
    text = inspect.cleandoc(text.replace("\r\n", "\n"))
    kept: list[str] = []
    for block in re.split(r"\n\s*\n", text):
        lines = block.split("\n")
        if not lines or any(ln.startswith((" ", "\t")) for ln in lines):
            continue  # indented: code sample, grammar, table, or list continuation
        if any(ln.lstrip().startswith((">>>", "...", "- ", "* ", "+ ", ":", "..")) for ln in lines):
            continue
        if any(_HEADING_RX.match(ln.strip()) for ln in lines):
            continue
        para = " ".join(ln.strip() for ln in lines)
        para = re.sub(r"\s+", " ", para).strip()
        if para.endswith("::"):
            para = para[:-1]
        if len(para) < 40 or len(para.split()) < 6 or para[-1] not in ".?!:":
            continue
        letters = sum(c.isalpha() or c == " " for c in para)
        symbols = sum(c in _SYMBOLS for c in para)
        if letters / len(para) < 0.8 or symbols / len(para) > 0.02 or not para[0].isupper():
            continue
        if not para.isascii():
            continue
        kept.append(para)
    return kept


@lru_cache(maxsize=1)
def prose_units() -> tuple[tuple[str, str], ...]:
    """``(key, document)`` for every prose unit (topics and per-file docstrings), held-out ones included.

    Kept for the process (it only reads the interpreter's own documentation): parsing every standard-library
    docstring takes seconds, and a stage asks for it twice (the web domain and the general corpus)."""
    import pydoc_data.topics as topics

    units: list[tuple[str, str]] = []
    for name in sorted(topics.topics):
        paras = _prose_paragraphs(topics.topics[name])
        if paras:
            units.append((f"topic:{name}", "\n\n".join(paras)))
    for key, path in iter_stdlib_files():
        text = read_source(path)
        if text is None:
            continue
        paras: list[str] = []
        seen: set[str] = set()
        for m in _DOCSTRING_RX.finditer(text):
            for p in _prose_paragraphs(m.group(1) or m.group(2) or ""):
                if p not in seen:
                    seen.add(p)
                    paras.append(p)
        if paras and sum(len(p) for p in paras) >= 80:
            units.append((key, "\n\n".join(paras)))
    return tuple(units)


def split_sentences(paragraph_text: str) -> list[str]:
    out: list[str] = []
    for para in paragraph_text.split("\n\n"):
        out.extend(s.strip() for s in _SENTENCE_SPLIT_RX.split(para) if s.strip())
    return out


def build_prose_documents(max_chars: int, seed: int) -> list[str]:
    """One document per training prose unit, seeded order, until ``max_chars`` (or the pool runs out)."""
    docs = [doc for key, doc in prose_units() if not is_heldout(key)]
    random.Random(f"web/{seed}").shuffle(docs)
    kept: list[str] = []
    total = 0
    for doc in docs:
        if total >= max_chars:
            break
        kept.append(doc)
        total += len(doc)
    return kept
