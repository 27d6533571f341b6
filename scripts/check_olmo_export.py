"""Check the OLMo export against OLMo-core itself (not a test: ai2-olmo-core upgrades huggingface_hub, so it
lives in its own venv that also sees the project's packages; docs/exports.md has the commands).

It writes tiny token files, exports a mixture with a token plan, loads the YAML into OLMo-core's
``SourceMixtureList``, builds the mixture with ``SourceMixtureDatasetConfig`` and prints the tokens OLMo-core
selects per source; then checks that OLMo-core refuses a mixture that repeats a source beyond the epoch cap.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import yaml
from olmo_core.data.source_mixture import SourceMixtureConfig, SourceMixtureDatasetConfig, SourceMixtureList
from olmo_core.exceptions import OLMoConfigurationError

from mergemix_dagster.core.training.exports import write_exports
from mergemix_dagster.core.data.token_plan import plan_tokens
from mergemix_dagster.core.settings import Settings

AVAILABLE = {"math": 200_000, "code/repos": 1_000_000, "code/competitions": 50_000}
TARGET = 1_000_000


def olmo_build(path: Path) -> dict[str, int]:
    doc = yaml.safe_load(path.read_text())
    sources = SourceMixtureList(sources=[SourceMixtureConfig(**s) for s in doc["sources"]])
    config = SourceMixtureDatasetConfig(
        source_list=sources, requested_tokens=TARGET, global_batch_size=1024, render_tables=False, quiet=True
    )
    built = config.build(npdtype=np.uint32, sequence_length=256)
    return {o.name: sum(p.tokens for p in o.path_tokens) for o in built.sources}


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="olmo-export-"))
    paths = {}
    for name, n in AVAILABLE.items():
        f = root / f"{name.replace('/', '_')}.npy"
        np.memmap(f, dtype=np.uint32, mode="w+", shape=(n,)).flush()
        paths[name] = [str(f)]
    settings = Settings(
        home=str(root / "home"),
        domains=[{"name": "math"}, {"name": "code", "subdomains": [{"name": "repos"}, {"name": "competitions"}]}],
        target={"tokens": TARGET, "max_epochs": 4},
        export={"olmo_paths": paths},
    )
    weights = {"math": 0.5, "code/repos": 0.3, "code/competitions": 0.2}  # competitions at exactly 4 epochs
    plan = plan_tokens(weights, TARGET, AVAILABLE, 4)
    selected = olmo_build(write_exports({"weights": weights}, plan, settings, root / "ok", ["olmo"])["olmo"])
    print("planned vs selected by OLMo-core:")
    for a in plan.allocations:
        print(f"  {a.name:<18} {a.tokens:>9,} {selected[a.name]:>9,}")
    over = {"math": 0.45, "code/repos": 0.3, "code/competitions": 0.25}  # 5 epochs of competitions
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan_over = plan_tokens(over, TARGET, AVAILABLE, 4)
    try:
        olmo_build(write_exports({"weights": over}, plan_over, settings, root / "over", ["olmo"])["olmo"])
    except OLMoConfigurationError as exc:
        print(f"over the cap ({plan_over.over_repeated}): refused by OLMo-core: {exc}")
    else:
        raise SystemExit("OLMo-core accepted a source beyond its repetition cap")


if __name__ == "__main__":
    main()
