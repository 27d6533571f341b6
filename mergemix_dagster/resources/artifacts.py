"""Reading upstream artifacts through their pointers (shared by the asset modules).

Checkpoints are verified as they are read: a cut safetensors file, or a file whose size or sampled bytes
differ from the signatures recorded when it was written, is refused by name. ``MERGEMIX_VERIFY=full`` also
compares the full content hash (reads every byte).
"""


import math
import os
import tempfile
from pathlib import Path

from mergemix_dagster.core.data.corpora import read_corpus, write_corpus
from mergemix_dagster.core.errors import StoreError
from mergemix_dagster.core.training.model import verify_checkpoint
from mergemix_dagster.resources import CheckpointStore, layout


def configured_rows(rows, s, heldout: bool = False):
    """Only the rows of the configured (task, metric) pairs, scored under the current evaluation settings.

    Rows of a metric the settings no longer use (say ``acc`` after switching to ``gold_prob``), or scored
    with another ``limit`` or other task files (their ``evaluation_fingerprint`` differs), must neither
    count as done nor be averaged in: they are rescored.
    """
    tasks = list(s.evaluation.tasks) + (list(s.validation.heldout_tasks) if heldout else [])
    pairs = {(t.name, t.metric) for t in tasks}
    keep = [(t, m) in pairs for t, m in zip(rows["task"], rows["metric"])]
    if "evaluation_fingerprint" in rows.columns and len(rows):
        from mergemix_dagster.core.evaluation.fingerprints import evaluation_fingerprints

        current = evaluation_fingerprints(s, heldout)
        keep = [k and current.get(t) == fp for k, t, fp in zip(keep, rows["task"], rows["evaluation_fingerprint"])]
    return rows[keep]


def has_items(cell) -> bool:
    """An ``item_values`` cell that holds items (None, or NaN in a frame built by hand, holds none)."""
    return cell is not None and not (isinstance(cell, float) and math.isnan(cell))


def items_by_benchmark(rows) -> dict[tuple[str, str], object]:
    """(task, metric) -> the ``item_values`` cell of each of one candidate's rows (None without the column)."""
    cells = rows["item_values"] if "item_values" in rows.columns else [None] * len(rows)
    return {(t, m): v for t, m, v in zip(rows["task"], rows["metric"], cells)}


def read_pointer(store: CheckpointStore, pointer_key: str, what: str) -> dict:
    if not store.exists(pointer_key):
        raise StoreError(f"{what} is not materialized yet: no {store.uri(pointer_key)}")
    return store.get_json(pointer_key)


def corpus_documents(store: CheckpointStore, domain: str) -> tuple[list[str], str]:
    """(documents, fingerprint) of the current corpus of ``domain`` (or ``general``)."""
    pointer = read_pointer(store, layout.corpus_pointer(domain), f"corpus of domain {domain!r}")
    return read_corpus(store.get_file(pointer["key"])), pointer["fingerprint"]


def full_verification() -> bool:
    return os.environ.get("MERGEMIX_VERIFY", "").lower() == "full"


def checkpoint_identity(pointer: dict) -> str:
    """What downstream keys use: the weights' fingerprint, and the tokenizer's when it was recorded apart
    (an outside base), so a changed tokenizer retrains the experts instead of reusing them."""
    if pointer.get("tokenizer"):
        return layout.content_version({"weights": pointer["fingerprint"], "tokenizer": pointer["tokenizer"]}, 64)
    return pointer["fingerprint"]


def checkpoint_dir(store: CheckpointStore, pointer_key: str, what: str) -> tuple[Path, str]:
    """(local directory, identity) of the checkpoint a pointer names (a store key or an outside path),
    verified against what was recorded when it was written."""
    pointer = read_pointer(store, pointer_key, what)
    full = pointer["fingerprint"] if full_verification() else None
    if "key" in pointer:
        return store.verify_dir(pointer["key"], what, full_fingerprint=full), checkpoint_identity(pointer)
    local = Path(store.fetch_external(pointer["path"]))
    if local.is_dir():
        verify_checkpoint(local, what, manifest=pointer.get("manifest"), fingerprint=full)
    return local, checkpoint_identity(pointer)


def base_checkpoint(store: CheckpointStore, stage: str) -> tuple[Path, str]:
    return checkpoint_dir(store, layout.base_pointer(stage), f"base checkpoint of stage {stage!r}")


def expert_checkpoint_dir(store: CheckpointStore, stage: str, domain: str) -> tuple[Path, str]:
    return checkpoint_dir(store, layout.expert_pointer(stage, domain), f"expert {domain!r} of stage {stage!r}")


def store_corpus(store: CheckpointStore, docs: list[str], key: str) -> str:
    """Write ``docs`` under ``key`` unless a corpus with that (content-addressed) key is stored; returns its URI."""
    if store.exists(key):
        return store.uri(key)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.jsonl.gz"
        write_corpus(docs, path)
        return store.put_file(path, key)


def missing_checkpoints(store: CheckpointStore) -> list[str]:
    """One line per current base or expert whose pointer names a checkpoint that is no longer stored (deleted
    by hand): ``mergemix run`` makes it again (``runner/plan.py``); ``mergemix check`` says so."""
    if not store.is_s3 and not Path(store.root).expanduser().is_dir():
        return []
    lines = []
    for key in store.list_keys(layout.STAGES_PREFIX):
        parts = key.split("/")  # stages/<stage>/base/current.json, stages/<stage>/experts/<domain>/current.json
        if not key.endswith("/current.json") or parts[2] not in ("base", "experts"):
            continue
        target = store.get_json(key).get("key")
        if target and not store.exists(target):
            what = f"expert {parts[3]!r}" if parts[2] == "experts" else "the base"
            lines.append(f"{what} of stage {parts[1]!r}: {store.uri(target)} is gone; `mergemix run` makes it again")
    return lines
