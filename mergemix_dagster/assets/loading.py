"""Reading upstream artifacts through their pointers (shared by the asset modules)."""


from pathlib import Path

from ..core.corpora import read_corpus
from ..core.errors import StoreError
from ..resources import CheckpointStore
from . import layout


def configured_rows(rows, s, heldout: bool = False):
    """Only the rows of the configured (task, metric) pairs: rows of a metric the settings no longer
    use (say ``acc`` after switching to ``gold_prob``) must neither count as done nor be averaged in."""
    tasks = list(s.evaluation.tasks) + (list(s.validation.heldout_tasks) if heldout else [])
    pairs = {(t.name, t.metric) for t in tasks}
    keep = [(t, m) in pairs for t, m in zip(rows["task"], rows["metric"])]
    return rows[keep]


def read_pointer(store: CheckpointStore, pointer_key: str, what: str) -> dict:
    if not store.exists(pointer_key):
        raise StoreError(f"{what} is not materialized yet: no {store.uri(pointer_key)}")
    return store.get_json(pointer_key)


def corpus_documents(store: CheckpointStore, domain: str) -> tuple[list[str], str]:
    """(documents, fingerprint) of the current corpus of ``domain`` (or ``general``)."""
    pointer = read_pointer(store, layout.corpus_pointer(domain), f"corpus of domain {domain!r}")
    return read_corpus(store.get_file(pointer["key"])), pointer["fingerprint"]


def checkpoint_dir(store: CheckpointStore, pointer_key: str, what: str) -> tuple[Path, str]:
    """(local directory, fingerprint) of the checkpoint a pointer names (a store key or an outside path)."""
    pointer = read_pointer(store, pointer_key, what)
    if "key" in pointer:
        return store.get_dir(pointer["key"]), pointer["fingerprint"]
    return Path(store.fetch_external(pointer["path"])), pointer["fingerprint"]


def base_checkpoint(store: CheckpointStore, stage: str) -> tuple[Path, str]:
    return checkpoint_dir(store, layout.base_pointer(stage), f"base checkpoint of stage {stage!r}")


def expert_checkpoint_dir(store: CheckpointStore, stage: str, domain: str) -> tuple[Path, str]:
    return checkpoint_dir(store, layout.expert_pointer(stage, domain), f"expert {domain!r} of stage {stage!r}")
