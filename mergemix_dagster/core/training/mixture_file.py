"""The mixture file handed to a training command: data weights, where each domain's documents are, the recipe.

One JSON object (``format: mergemix-mixture/1``)::

    {"format": "mergemix-mixture/1",
     "weights": {"math": 0.5, "general": 0.5},                    # sums to 1; the sampling ratio per domain
     "domains": {"math": {"paths": ["/store/corpora/math/3f2a.jsonl.gz"], "text_field": "text"}, ...},
     "recipe": {"tokens": 1000000, "seq_len": 256, "batch_size": 16, "learning_rate": 0.002,
                "schedule": "constant", "warmup_steps": 0, "seed": 0, ...}}

Paths are local files or ``s3://`` URIs of jsonl / jsonl.gz / parquet / txt files (field ``text_field``).
A team's own trainer reads ``weights`` and ``domains`` and ignores what it does not need; docs/cluster.md
has the whole command contract.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from mergemix_dagster.core.errors import ConfigError
from mergemix_dagster.core.mixture import Mixture

FORMAT = "mergemix-mixture/1"


@dataclass(frozen=True)
class MixtureFile:
    weights: dict[str, float]
    paths: dict[str, list[str]]
    text_field: dict[str, str] = field(default_factory=dict)
    recipe: dict = field(default_factory=dict)

    @property
    def mixture(self) -> Mixture:
        return Mixture.from_dict(self.weights)

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "weights": self.weights,
            "domains": {
                d: {"paths": list(p), "text_field": self.text_field.get(d, "text")} for d, p in self.paths.items()
            },
            "recipe": self.recipe,
        }


def write_mixture_file(path: Path, weights: Mapping[str, float], paths: Mapping[str, list[str]], recipe: dict) -> Path:
    spec = MixtureFile(dict(weights), {d: [str(p) for p in v] for d, v in paths.items()}, recipe=dict(recipe))
    spec.mixture  # validates the weights (SimplexError)
    missing = sorted(d for d, w in weights.items() if w > 0 and not paths.get(d))
    if missing:
        raise ConfigError(f"mixture file: domains {missing} have weight but no data paths")
    Path(path).write_text(json.dumps(spec.to_json(), indent=2, sort_keys=True))
    return Path(path)


def read_mixture_file(path: Path) -> MixtureFile:
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read mixture file {path}: {exc}") from exc
    if raw.get("format") != FORMAT:
        raise ConfigError(f"{path}: format is {raw.get('format')!r}, expected {FORMAT!r}")
    domains = raw.get("domains", {})
    spec = MixtureFile(
        weights={d: float(w) for d, w in raw["weights"].items()},
        paths={d: list(v["paths"]) for d, v in domains.items()},
        text_field={d: v.get("text_field", "text") for d, v in domains.items()},
        recipe=dict(raw.get("recipe", {})),
    )
    spec.mixture
    return spec
