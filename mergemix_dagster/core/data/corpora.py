"""Load, validate, hash, store and tokenize domain corpora.

Supported inputs (files, or directories searched recursively in sorted order for these suffixes):

- ``.jsonl`` / ``.jsonl.gz``: one JSON object per line, the document in ``text_field``; blank lines skipped.
- ``.json``: one JSON array of objects, each with ``text_field``.
- ``.parquet``: a table with a string column ``text_field``.
- ``.txt``: the whole file is one document (UTF-8).

Every other file found *inside a directory* or matched by a glob is ignored (READMEs, ``.crc``,
``_SUCCESS``); a file named explicitly with an unsupported suffix is an error. A path with ``*``, ``?`` or
``[`` is a glob (``/data/math/*.jsonl``, ``/data/**/*.parquet``); one that matches no supported file is an
error. Remote URIs are fetched to local files by the checkpoint store before they get here.

``max_chars`` bounds memory: files are read as streams and reading stops once the budget is spent; the
document that crosses the budget is cut to fit, so a single 30M-character document costs ``max_chars``.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import json
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from mergemix_dagster.core.errors import ConfigError, CorpusError, EmptyCorpusError, MalformedCorpusError

SUPPORTED_SUFFIXES = (".jsonl.gz", ".jsonl", ".json", ".parquet", ".txt")


def _suffix(path: Path) -> str | None:
    name = path.name.lower()
    for suf in SUPPORTED_SUFFIXES:
        if name.endswith(suf):
            return suf
    return None


def _text_of(obj: object, text_field: str, where: str) -> str:
    if not isinstance(obj, dict):
        raise MalformedCorpusError(f"{where}: expected a JSON object with a {text_field!r} field, got {type(obj).__name__}")
    if text_field not in obj:
        raise MalformedCorpusError(f"{where}: missing text field {text_field!r} (fields: {sorted(obj)[:10]})")
    value = obj[text_field]
    if not isinstance(value, str):
        raise MalformedCorpusError(f"{where}: field {text_field!r} is {type(value).__name__}, not a string")
    return value


def _read_jsonl_lines(lines: Iterable[str], text_field: str, path: Path) -> list[str]:
    docs: list[str] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise MalformedCorpusError(f"{path}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from exc
        docs.append(_text_of(obj, text_field, f"{path}:{lineno}"))
    return docs


def bad_utf8_position(path: Path) -> str:
    """Where ``path``'s first invalid UTF-8 byte is, as ``byte N (line L)`` counted from the file's start (of
    the decompressed stream for ``.gz``). A ``UnicodeDecodeError`` raised through a text stream counts from
    the start of the chunk it was decoding, which is not a place in the file."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = newlines = 0
    with (gzip.open if path.name.endswith(".gz") else open)(path, "rb") as fh:
        while True:
            chunk = fh.read(1 << 16)
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:  # exc.object: the bytes held back from the last chunk, then this one
                held = len(exc.object) - len(chunk)
                where, line = offset - held + exc.start, newlines + exc.object[:exc.start].count(b"\n") + 1
                return f"byte {where} (line {line})"
            if not chunk:
                return "an unknown position"
            offset += len(chunk)
            newlines += chunk.count(b"\n")


def _not_utf8(path: Path, exc: UnicodeDecodeError) -> MalformedCorpusError:
    return MalformedCorpusError(f"{path}: not valid UTF-8 ({exc.reason} at {bad_utf8_position(path)})")


def _load_file(path: Path, text_field: str) -> list[str]:
    suf = _suffix(path)
    try:
        if suf == ".jsonl":
            with open(path, encoding="utf-8") as fh:
                return _read_jsonl_lines(fh, text_field, path)
        if suf == ".jsonl.gz":
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                return _read_jsonl_lines(fh, text_field, path)
        if suf == ".json":
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise MalformedCorpusError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from exc
            if not isinstance(data, list):
                raise MalformedCorpusError(f"{path}: expected a JSON array of objects, got {type(data).__name__}")
            return [_text_of(obj, text_field, f"{path}[{i}]") for i, obj in enumerate(data)]
        if suf == ".parquet":
            import pyarrow.parquet as pq

            try:
                table = pq.read_table(path)
            except Exception as exc:  # pyarrow raises several types for broken files
                raise MalformedCorpusError(f"{path}: cannot read parquet ({exc})") from exc
            if text_field not in table.column_names:
                raise MalformedCorpusError(f"{path}: missing text column {text_field!r} (columns: {table.column_names})")
            values = table.column(text_field).to_pylist()
            for i, v in enumerate(values):
                if not isinstance(v, str):
                    raise MalformedCorpusError(f"{path}: row {i}: column {text_field!r} is {type(v).__name__}, not a string")
            return values
        if suf == ".txt":
            return [path.read_text(encoding="utf-8")]
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, exc) from exc
    except (OSError, EOFError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise CorpusError(f"{path}: corpus file does not exist") from exc
        raise MalformedCorpusError(f"{path}: cannot read ({exc})") from exc
    raise MalformedCorpusError(f"{path}: unsupported corpus format; supported suffixes: {list(SUPPORTED_SUFFIXES)}")


def load_documents(paths: Sequence[str | Path], text_field: str = "text") -> list[str]:
    """Documents of all ``paths`` in order (directories and globs: supported files, recursively, sorted)."""
    return read_documents(paths, text_field)


GLOB_CHARS = ("*", "?", "[")


def is_glob(path: str | Path) -> bool:
    return any(c in str(path) for c in GLOB_CHARS)


def _visible(f: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in f.relative_to(root).parts)


#: set to 1 to read corpus files that are symlinks to places outside the folder named in ``paths``
ALLOW_OUTSIDE_LINKS = "MERGEMIX_ALLOW_OUTSIDE_LINKS"


def _glob_root(raw: str | Path) -> Path:
    """The folder a glob cannot leave: its path up to the first part with a wildcard."""
    parts = Path(raw).expanduser().parts
    fixed = [p for p in parts[: next(i for i, p in enumerate(parts) if is_glob(p))]]
    return Path(*fixed) if fixed else Path(".")


def _inside(f: Path, root: Path, raw: str | Path) -> Path:
    """``f``, unless it is a symlink (or under one) that resolves outside ``root``: ``CorpusError`` naming the
    setting that allows it. A corpus is read into the store and the UI's previews, so a link to ``/etc/shadow``
    must not be."""
    import os

    if os.environ.get(ALLOW_OUTSIDE_LINKS) == "1":
        return f
    target, base = f.resolve(), root.resolve()
    if not target.is_relative_to(base):
        raise CorpusError(
            f"corpus path {raw}: {f} is a link to {target}, outside {base}; copy the file in, or set "
            f"{ALLOW_OUTSIDE_LINKS}=1 to read links that leave the corpus folder"
        )
    return f


def expand_paths(paths: Sequence[str | Path]) -> list[Path]:
    """The corpus files ``paths`` name, in order: files as given, directories and globs expanded (sorted).

    Raises ``CorpusError`` for a path that does not exist, for a directory or glob without a supported file,
    for a device, pipe or socket, and for a symlink that leaves the folder ``paths`` names (the file's own
    folder for a file) unless ``$MERGEMIX_ALLOW_OUTSIDE_LINKS`` is 1, so a typo fails before any training.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if is_glob(raw):
            matched = sorted(Path(m) for m in glob.glob(str(path), recursive=True))
            found = [f for f in matched if f.is_file() and _suffix(f)]
            if not found:
                raise CorpusError(
                    f"corpus glob {raw} matches no {'/'.join(SUPPORTED_SUFFIXES)} file ({len(matched)} paths matched)"
                )
            files.extend(_inside(f, _glob_root(raw), raw) for f in found)
        elif path.is_dir():
            found = sorted(f for f in path.rglob("*") if f.is_file() and _suffix(f) and _visible(f, path))
            if not found:
                raise CorpusError(f"corpus directory {path} holds no {'/'.join(SUPPORTED_SUFFIXES)} file")
            files.extend(_inside(f, path, raw) for f in found)
        elif path.is_file():
            files.append(_inside(path, path.absolute().parent, raw))
        elif path.exists():
            raise CorpusError(f"corpus path {path} is not a regular file or folder (a device, pipe or socket)")
        else:
            raise CorpusError(f"corpus path does not exist: {path}")
    return files


def _iter_jsonl(fh, text_field: str, path: Path) -> Iterator[str]:
    for lineno, line in enumerate(fh, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise MalformedCorpusError(f"{path}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from exc
        yield _text_of(obj, text_field, f"{path}:{lineno}")


def iter_file_documents(path: Path, text_field: str = "text", txt_chars: int | None = None) -> Iterator[str]:
    """The documents of one file, one at a time (``.txt``: at most ``txt_chars`` characters are read)."""
    suf = _suffix(path)
    try:
        if suf == ".jsonl":
            with open(path, encoding="utf-8") as fh:
                yield from _iter_jsonl(fh, text_field, path)
            return
        if suf == ".jsonl.gz":
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                yield from _iter_jsonl(fh, text_field, path)
            return
        if suf == ".parquet":
            import pyarrow.parquet as pq

            try:
                pf = pq.ParquetFile(path)
            except Exception as exc:  # pyarrow raises several types for broken files
                raise MalformedCorpusError(f"{path}: cannot read parquet ({exc})") from exc
            if text_field not in pf.schema_arrow.names:
                raise MalformedCorpusError(f"{path}: missing text column {text_field!r} (columns: {pf.schema_arrow.names})")
            row = 0
            for batch in pf.iter_batches(batch_size=256, columns=[text_field]):
                for v in batch.column(0).to_pylist():
                    if not isinstance(v, str):
                        raise MalformedCorpusError(f"{path}: row {row}: column {text_field!r} is {type(v).__name__}, not a string")
                    row += 1
                    yield v
            return
        if suf == ".txt":
            with open(path, encoding="utf-8") as fh:
                yield fh.read(-1 if txt_chars is None else max(0, txt_chars))
            return
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, exc) from exc
    except (OSError, EOFError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise CorpusError(f"{path}: corpus file does not exist") from exc
        raise MalformedCorpusError(f"{path}: cannot read ({exc})") from exc
    yield from _load_file(path, text_field)  # .json arrays (read whole) and unsupported suffixes (an error)


def read_documents(paths: Sequence[str | Path], text_field: str = "text", max_chars: int | None = None) -> list[str]:
    """Documents of ``paths`` (files, directories, globs) in order, at most ``max_chars`` characters in all.

    Reading stops when the budget is spent and the last document is cut to fit, so memory is bounded by
    ``max_chars`` plus one line of a JSONL file, whatever the files hold. Blank documents do not count.
    """
    docs: list[str] = []
    left = max_chars
    for path in expand_paths(paths):
        for doc in iter_file_documents(path, text_field, txt_chars=left):
            if left is not None and doc.strip():
                doc = doc[:left]
                left -= len(doc)
            docs.append(doc)
            if left is not None and left <= 0:
                return docs
    return docs


def validate_documents(
    domain: str, docs: Sequence[str], min_documents: int = 1, *, source: str | None = None
) -> list[str]:
    """The usable documents (strings that are not blank); raise when fewer than ``min_documents`` remain.

    ``source`` (the files / URI / builder the documents came from) is named in the error message.
    """
    usable = [d for d in docs if isinstance(d, str) and d.strip()]
    if len(usable) < max(1, min_documents):
        where = f" (source: {source})" if source else ""
        raise EmptyCorpusError(
            f"domain {domain!r}{where} has {len(usable)} usable (non-blank) documents out of {len(docs)}; "
            f"at least {max(1, min_documents)} needed"
        )
    return usable


def corpus_fingerprint(docs: Sequence[str]) -> str:
    """sha256 hex over the documents' content, order-sensitive and boundary-sensitive."""
    h = hashlib.sha256()
    for d in docs:
        b = d.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def write_corpus(docs: Sequence[str], path: Path) -> None:
    """``jsonl.gz`` with one ``{"text": ...}`` per line; byte-identical for identical docs (gzip mtime 0)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        with io.TextIOWrapper(gz, encoding="utf-8", newline="\n") as fh:
            for d in docs:
                fh.write(json.dumps({"text": d}, ensure_ascii=False) + "\n")


def read_corpus(path: Path) -> list[str]:
    """Inverse of :func:`write_corpus`."""
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"corpus file does not exist: {path}")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return _read_jsonl_lines(fh, "text", path)


def tokenize_documents(docs: Sequence[str], tokenizer, batch_size: int = 1000) -> np.ndarray:
    """One flat ``int32`` stream: each document's ids (no special tokens) followed by ``eos_token_id``."""
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise ConfigError("the tokenizer has no eos_token_id; it is needed to separate documents")
    parts: list[np.ndarray] = []
    eos_arr = np.asarray([eos], dtype=np.int32)
    for start in range(0, len(docs), batch_size):
        batch = list(docs[start:start + batch_size])
        enc = tokenizer(batch, add_special_tokens=False, return_attention_mask=False)["input_ids"]
        for ids in enc:
            parts.append(np.asarray(ids, dtype=np.int32))
            parts.append(eos_arr)
    if not parts:
        return np.zeros(0, dtype=np.int32)
    return np.concatenate(parts)
