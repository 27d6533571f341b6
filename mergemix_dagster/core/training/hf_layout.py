"""How ``datasets.load_dataset`` reads a domain's corpus paths: builders and data files for every layout.

The project reads a domain from files, globs, folders (searched recursively, hidden files skipped, only
supported suffixes) and ``s3://`` keys or prefixes (core/data/corpora.py). ``load_dataset`` needs one builder
per call and takes a folder only as a glob, so each path becomes one or more *parts*:

- a file (local or ``s3://``): its builder by suffix (``.jsonl``/``.jsonl.gz``/``.json`` -> ``json``,
  ``.parquet`` -> ``parquet``, ``.txt`` -> ``text``, read one document per file as the project does);
- a local folder: ``<folder>/**/*<suffix>`` for each supported suffix found in it (``load_dataset`` skips
  hidden files as the project does);
- a glob naming a supported suffix: as is; any other local glob: ``<glob><suffix>`` for each suffix it
  matches when it ends in ``*``, else the files it matches;
- an ``s3://`` prefix (or a local folder not on this machine): ``<prefix>/**/*<suffix>`` for every
  supported suffix, marked *optional*: the snippet skips an optional part that matches no file and fails
  only when a name has no file at all.

Parts of one name are concatenated in the snippet; a ``.txt`` part's column is ``text`` whatever the
domain's ``text_field``, because the ``text`` builder names it so.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mergemix_dagster.core.data.corpora import SUPPORTED_SUFFIXES, expand_paths, is_glob
from mergemix_dagster.core.errors import CorpusError

BUILDERS = {".jsonl.gz": "json", ".jsonl": "json", ".json": "json", ".parquet": "parquet", ".txt": "text"}
#: keyword arguments ``load_dataset`` needs per builder to read documents as the project does
LOAD_KWARGS = {"text": {"sample_by": "document"}}


def _suffix_of(name: str) -> str | None:
    """The supported suffix ``name`` ends with, as written (case kept, so a glob matches the same files)."""
    lower = name.lower()
    for suf in SUPPORTED_SUFFIXES:
        if lower.endswith(suf):
            return name[len(name) - len(suf):]
    return None


def _every_suffix(root: str) -> list[tuple[str, str, bool]]:
    return [(BUILDERS[s], f"{root.rstrip('/')}/**/*{s}", True) for s in SUPPORTED_SUFFIXES]


def _by_suffix(files: Sequence[Path]) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = {}
    for f in files:
        groups.setdefault(_suffix_of(f.name) or "", []).append(f)
    return groups


def _path_parts(raw: str) -> list[tuple[str, str, bool]]:
    """(builder, data file or pattern, optional) for one path of the settings."""
    suffix = _suffix_of(Path(raw).name) if not raw.endswith("/") else None
    if raw.startswith("s3://"):
        return [(BUILDERS[suffix.lower()], raw, False)] if suffix else _every_suffix(raw)
    if is_glob(raw):
        if suffix and not is_glob(suffix):
            return [(BUILDERS[suffix.lower()], raw, False)]
        try:
            groups = _by_suffix(expand_paths([raw]))
        except CorpusError:  # not on this machine: every suffix, optional, when the glob allows one
            if raw.endswith("*"):
                return [(BUILDERS[s], raw + s, True) for s in SUPPORTED_SUFFIXES]
            return [("json", raw, False)]
        if raw.endswith("*"):
            return [(BUILDERS[s.lower()], raw + s, False) for s in groups]
        return [(BUILDERS[s.lower()], str(f), False) for s, fs in groups.items() for f in fs]
    path = Path(raw).expanduser()
    if path.is_dir():
        groups = _by_suffix(expand_paths([path]))
        return [(BUILDERS[s.lower()], f"{str(path).rstrip('/')}/**/*{s}", False) for s in groups]
    if suffix:
        return [(BUILDERS[suffix.lower()], raw, False)]
    if path.exists():  # a file the project would refuse: let load_dataset say so
        return [("json", raw, False)]
    return _every_suffix(raw)  # a folder that is not on this machine


def hf_parts(paths: Sequence[str], text_field: str) -> list[dict[str, Any]]:
    """The ``load_dataset`` calls that read ``paths``: builder, data files, text column, kwargs, optional.

    Paths with the same builder (and optionality) share one call, in the order they first appear.
    """
    merged: dict[tuple[str, bool], list[str]] = {}
    for raw in paths:
        for builder, pattern, optional in _path_parts(str(raw)):
            files = merged.setdefault((builder, optional), [])
            if pattern not in files:
                files.append(pattern)
    return [
        {
            "builder": builder,
            "data_files": files,
            "text_field": "text" if builder == "text" else text_field,
            "load_kwargs": dict(LOAD_KWARGS.get(builder, {})),
            "optional": optional,
        }
        for (builder, optional), files in merged.items()
    ]
