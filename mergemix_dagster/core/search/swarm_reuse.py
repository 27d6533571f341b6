"""``mergemix fit --reuse DIR``: a new swarm fitted together with the runs of an earlier fit (refit on the union).

When domains change between two swarms, the earlier runs still measure mixtures: a run that gave a removed or
revised domain no weight is a point on the face of the new simplex where the added domains are 0, so it is kept
(added domains filled with 0); a run that weighted a removed or revised domain trained on data the new run will not
see, so it is dropped, with the reason. Olmix's other option, freezing the old domains' ratios, is not offered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mergemix_dagster.core.errors import ConfigError
from mergemix_dagster.core.search.fit import read_mixtures, read_swarm_csv

REUSED_PREFIX = "reused:"


@dataclass
class SwarmUnion:
    mixtures_csv: Path
    scores_csv: Path
    reused: list[str]
    dropped: dict[str, str]
    metrics_dropped: list[str] = field(default_factory=list)

    def notes(self) -> list[str]:
        lines = [f"--reuse: {len(self.reused)} earlier runs fitted with the new swarm "
                 f"(ids prefixed {REUSED_PREFIX!r}), {len(self.dropped)} dropped"]
        lines += [f"--reuse: dropped {run}: {why}" for run, why in sorted(self.dropped.items())]
        if self.metrics_dropped:
            lines.append(f"--reuse: metrics the earlier fit did not keep are left out of the union: "
                         f"{', '.join(self.metrics_dropped)}")
        return lines


def union_swarm(previous: Path, mixtures_csv: Path, scores_csv: Path, out: Path, id_column: str | None = None,
                revised: Sequence[str] = ()) -> SwarmUnion:
    """Write the union of ``previous``'s fitted runs and the new swarm under ``out`` and say what was kept."""
    old_mix_path, old_scores_path = previous / "swarm_mixtures.csv", previous / "swarm_scores.csv"
    for path in (old_mix_path, old_scores_path):
        if not path.is_file():
            raise ConfigError(f"--reuse {previous}: {path.name} not found (a folder written by `mergemix fit --out`)")
    old_mix = pd.read_csv(old_mix_path, index_col=0).drop(columns=["split"], errors="ignore")
    old_scores = pd.read_csv(old_scores_path, index_col=0)
    old_mix.index, old_scores.index = old_mix.index.astype(str), old_scores.index.astype(str)
    new_mix, new_scores = read_mixtures(mixtures_csv, id_column=id_column), read_swarm_csv(scores_csv, "scores", id_column)
    unknown = sorted(set(revised) - set(old_mix.columns))
    if unknown:
        raise ConfigError(f"--revised {', '.join(unknown)}: not a domain of the earlier fit {list(old_mix.columns)}")
    new_domains = list(new_mix.columns)
    gone = [d for d in old_mix.columns if d not in new_domains]
    dropped = {}
    for run, row in old_mix.iterrows():
        why = [f"{d} {row[d]:.3g} ({'revised' if d in revised else 'not in the new swarm'})"
               for d in [*gone, *revised] if row[d] > 0]
        if why:
            dropped[f"{REUSED_PREFIX}{run}"] = "weights " + ", ".join(why)
    kept = old_mix.loc[[r for r in old_mix.index if f"{REUSED_PREFIX}{r}" not in dropped]]
    reused_mix = kept.reindex(columns=new_domains, fill_value=0.0)
    metrics = [c for c in new_scores.columns if c in old_scores.columns]
    metrics_dropped = [c for c in new_scores.columns if c not in old_scores.columns]
    reused_scores = old_scores.loc[kept.index, metrics]
    for frame in (reused_mix, reused_scores):
        frame.index = [f"{REUSED_PREFIX}{r}" for r in frame.index]
    out.mkdir(parents=True, exist_ok=True)
    name = new_mix.index.name or "run"
    mix = pd.concat([reused_mix, new_mix[new_domains]]).rename_axis(name)
    scores = pd.concat([reused_scores, new_scores[metrics]]).rename_axis(name)
    union = SwarmUnion(out / "union_mixtures.csv", out / "union_scores.csv", list(reused_mix.index), dropped,
                       metrics_dropped)
    mix.to_csv(union.mixtures_csv)
    scores.to_csv(union.scores_csv)
    return union


__all__ = ["REUSED_PREFIX", "SwarmUnion", "union_swarm"]
