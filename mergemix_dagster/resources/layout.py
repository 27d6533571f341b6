"""Where each artifact lives: keys in the checkpoint store, the pointers that name the current version, and
the folders of a home that hold what people read (exports, reports, validation plots, lm-eval's own JSON).
Every path is written here; nothing else spells ``stages/...``.

Artifacts are written once under a key that contains the hash of their inputs
(``stages/s0/experts/math/<version>/``), so finished work is never overwritten; a small
``current.json`` pointer per slot names the version downstream assets use.
"""

import hashlib
import json
from pathlib import Path
from typing import Any

GENERAL_CORPUS = "corpora/general.jsonl.gz"
TOKENIZER = "tokenizer"


def corpus_key(domain: str, fingerprint: str) -> str:
    return f"corpora/{domain}/{fingerprint[:16]}.jsonl.gz"


def corpus_pointer(domain: str) -> str:
    return f"corpora/{domain}/current.json"


def base_key(stage: str, version: str) -> str:
    return f"stages/{stage}/base/{version}"


def base_pointer(stage: str) -> str:
    return f"stages/{stage}/base/current.json"


def stage_registration(stage: str) -> str:
    return f"stages/{stage}/registration.json"


def expert_key(stage: str, domain: str, version: str) -> str:
    return f"stages/{stage}/experts/{domain}/{version}"


def expert_pointer(stage: str, domain: str) -> str:
    return f"stages/{stage}/experts/{domain}/current.json"


def subdomain_expert_key(stage: str, leaf: str, version: str) -> str:
    """A sub-domain expert (``leaf`` is ``code/repos``): apart from the domain experts, so no key is shared."""
    return f"stages/{stage}/subdomain_experts/{leaf}/{version}"


def subdomain_expert_pointer(stage: str, leaf: str) -> str:
    return f"stages/{stage}/subdomain_experts/{leaf}/current.json"


def subdomain_mixture_key(stage: str, domain: str) -> str:
    """The weights inside one split domain, chosen by its own search."""
    return f"stages/{stage}/subdomains/{domain}/mixture.json"


STAGES_PREFIX = "stages/"


def score_key(stage: str, candidate_id: str, version: str) -> str:
    """One scored model's scores, written by the step that scored it and read by the step that writes DuckDB
    (``version``: its model fingerprint and evaluation fingerprints)."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in candidate_id)
    return f"stages/{stage}/scores/{safe}/{version}.json"


def rounds_summary_key(stage: str) -> str:
    return f"stages/{stage}/rounds/summary.json"


def final_surrogates_key(stage: str, version: str) -> str:
    """The surrogates refitted on the seed design and every round: what the chosen mixture was searched on."""
    return f"stages/{stage}/surrogates/final/{version}"


def export_key(stage: str, filename: str) -> str:
    return f"stages/{stage}/exports/{filename}"


def reference_key(stage: str, run_id: str) -> str:
    """A reference model trained on a real mixture (validation, hierarchy study)."""
    return f"stages/{stage}/references/{run_id}"


# Folders of a home (``$MERGEMIX_HOME``) that people open; the store may be elsewhere (S3).


def exports_dir(home: Path, stage: str) -> Path:
    return home / "exports" / stage


def reports_dir(home: Path, stage: str) -> Path:
    return home / "reports" / stage


def validation_dir(home: Path, stage: str) -> Path:
    return home / "validation" / stage


def lm_eval_dir(home: Path, stage: str) -> Path:
    return home / "lm_eval" / stage


def stage_comparison_plot(home: Path) -> Path:
    return home / "stage_comparison.png"


def candidates_key(stage: str) -> str:
    return f"stages/{stage}/candidates.json"


def surrogates_key(stage: str, version: str) -> str:
    return f"stages/{stage}/surrogates/{version}"


def surrogates_pointer(stage: str) -> str:
    return f"stages/{stage}/surrogates/current.json"


def mixture_key(stage: str) -> str:
    return f"stages/{stage}/mixture.json"


def content_version(payload: Any, length: int = 16) -> str:
    """A short stable hash of JSON-serializable inputs: the identity of an artifact."""
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def candidate_fingerprint(recipe: dict, weights: dict[str, float]) -> str:
    """Identity of one merged model: its α and everything it is merged from."""
    return content_version(
        {"base": recipe["base"], "experts": recipe["experts"], "method": recipe["method"], "alpha": weights}
    )


def face_fingerprint(recipe: dict, weights: dict[str, float]) -> str:
    """Identity of the merged model itself, whatever the other domains are: the base, the method, and the
    expert and weight of each domain with weight > 0. A domain at weight 0 adds nothing to the merge
    (``linear`` and ``dare`` add ``0·δ`` exactly, in domain order; ``ties`` weighs signs and means by
    ``α_k``, equal up to the order of a float sum), so a mixture over
    three domains and the same mixture with a new fourth domain at 0 are one model, while a changed expert of
    a domain in the support makes another. ``candidate_fingerprint`` (every expert) stays the key of rows."""
    support = sorted(d for d, w in weights.items() if w > 0)
    return content_version({"base": recipe["base"], "method": recipe["method"], "face": [
        [d, recipe["experts"][d], weights[d]] for d in support]})


def design_key(stage: str) -> str:
    return f"stages/{stage}/validation/design.json"


def result_key(stage: str, name: str) -> str:
    return f"stages/{stage}/validation/{name}"


def study_key(stage: str) -> str:
    return f"stages/{stage}/hierarchy_study.json"


def round_key(stage: str, r: int) -> str:
    return f"stages/{stage}/rounds/round{r}.json"


def loss_history_key(checkpoint_key: str) -> str:
    """Where a run's loss history is kept: next to its checkpoint, so a reused checkpoint keeps its curve."""
    return f"{checkpoint_key}.loss_history.json"


TOKENIZER_POINTER = f"{TOKENIZER}/current.json"

# The store's copy of what DuckDB holds (``resources/index.py``): the database is rebuilt from these records.
INDEX_PREFIX = "index/"


def _index_name(name: str) -> str:
    return hashlib.sha256(str(name).encode()).hexdigest()[:24]


def _index_stage(stage: str) -> str:
    """The stage as a folder name: itself when it is a valid stage name, else a hash (never leaves the prefix)."""
    import re

    return stage if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", str(stage)) else f"_{_index_name(stage)}"


def index_evaluations_key(stage: str, candidate_id: str) -> str:
    """Every evaluation row of one candidate of ``stage``."""
    return f"{INDEX_PREFIX}{_index_stage(stage)}/evaluations/{_index_name(candidate_id)}.json"


def index_chosen_key(stage: str) -> str:
    return f"{INDEX_PREFIX}{_index_stage(stage)}/chosen_mixture.json"


def index_training_run_key(stage: str, run_id: str) -> str:
    return f"{INDEX_PREFIX}{_index_stage(stage)}/training_runs/{_index_name(run_id)}.json"

