"""Which partitions of a stage are missing or stale, and which runs bring the stage up to date.

Dagster decides direct staleness from data versions (content hashes of corpora and checkpoints) and code
versions. It does not carry staleness through partition mappings (a stale expert does not make its
stage's candidates stale until the expert is rerun), so we propagate it along our one-way graph:
corpus → expert ← stage base; experts → candidates → evaluations → surrogates → mixture.

The plan for a stage is the *first* layer with work to do; the sensor then chains the next layer once
those runs finish (a Dagster run cannot mix partitions definitions, so one run per layer and partition).

Why private Dagster APIs, and only here: a partition's stale status (the "Stale" badge of the UI) is exposed
only through ``CachingStaleStatusResolver`` and ``AssetGraphView`` in ``dagster._core``; the public API
gives materializations and data versions but not the resolved status. Rather than recompute Dagster's rule
ourselves (and disagree with the UI), this module — and no other — imports those internals, in
``_resolver`` and ``_direct``. Replacing the chaining with a native asset backfill (issue 12) would remove
them; a Dagster upgrade that moves them breaks only this module, and tests/test_stages.py says so at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import dagster as dg
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._time import get_current_datetime

from .jobs import OPTIMIZE_ASSETS
from .partitions import STAGE_PARTITIONS_NAME, expert_partition_key


class Status(str, Enum):
    FRESH = "fresh"
    STALE = "stale"
    MISSING = "missing"


@dataclass(frozen=True)
class StageStatus:
    stage: str
    foundation: dict[str, Status]  # general corpus and tokenizer (unpartitioned)
    corpora: dict[str, Status]
    base: Status
    experts: dict[str, Status]
    downstream: dict[str, Status]  # optimize assets, in order

    @property
    def fresh(self) -> bool:
        return all(s is Status.FRESH for s in self.all().values())

    def all(self) -> dict[str, Status]:
        out = dict(self.foundation)
        out |= {f"domain_corpus[{d}]": s for d, s in self.corpora.items()}
        out[f"stage_base[{self.stage}]"] = self.base
        out |= {f"expert_checkpoint[{d}|{self.stage}]": s for d, s in self.experts.items()}
        out |= {f"{a}[{self.stage}]": s for a, s in self.downstream.items()}
        return out

    def not_fresh(self) -> list[str]:
        return [k for k, s in self.all().items() if s is not Status.FRESH]


def _resolver(instance: dg.DagsterInstance, defs: dg.Definitions) -> CachingStaleStatusResolver:
    graph = defs.resolve_asset_graph()
    view = AssetGraphView(
        temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
        instance=instance,
        asset_graph=graph,
    )
    return CachingStaleStatusResolver(instance, graph, view)


def _direct(resolver: CachingStaleStatusResolver, key: str, partition: str | None) -> Status:
    status = resolver.get_status(dg.AssetKey(key), partition)
    return {StaleStatus.FRESH: Status.FRESH, StaleStatus.STALE: Status.STALE}.get(status, Status.MISSING)


def _after(upstream: list[Status], own: Status) -> Status:
    """An asset whose upstream is not fresh is at best stale (or missing if never made)."""
    if own is Status.MISSING:
        return Status.MISSING
    return Status.STALE if any(u is not Status.FRESH for u in upstream) else own


def stage_status(instance: dg.DagsterInstance, defs: dg.Definitions, domains: tuple[str, ...], stage: str) -> StageStatus:
    r = _resolver(instance, defs)
    general = _direct(r, "general_corpus", None)
    foundation = {"general_corpus": general, "base_tokenizer": _after([general], _direct(r, "base_tokenizer", None))}
    corpora = {d: _direct(r, "domain_corpus", d) for d in domains}
    base = _after(list(foundation.values()), _direct(r, "stage_base", stage))
    experts = {
        d: _after([corpora[d], base], _direct(r, "expert_checkpoint", str(expert_partition_key(d, stage))))
        for d in domains
    }
    downstream: dict[str, Status] = {}
    upstream = list(experts.values())
    for asset in OPTIMIZE_ASSETS:
        downstream[asset] = _after(upstream, _direct(r, asset, stage))
        upstream = [downstream[asset]]
    return StageStatus(stage, foundation, corpora, base, experts, downstream)


def next_runs(status: StageStatus) -> list[tuple[str, object]]:
    """(job name, partition key) of the first layer that is not fresh; empty when the stage is fresh."""
    if any(s is not Status.FRESH for s in status.foundation.values()):
        return [("foundation_job", None)]
    if any(s is not Status.FRESH for s in status.corpora.values()):
        return [("corpora_job", d) for d, s in status.corpora.items() if s is not Status.FRESH]
    if status.base is not Status.FRESH:
        return [("stage_base_job", status.stage)]
    todo = [d for d, s in status.experts.items() if s is not Status.FRESH]
    if todo:
        return [("experts_job", expert_partition_key(d, status.stage)) for d in todo]
    if any(s is not Status.FRESH for s in status.downstream.values()):
        return [("optimize_job", status.stage)]
    return []


def latest_stage(instance: dg.DagsterInstance) -> str | None:
    stages = instance.get_dynamic_partitions(STAGE_PARTITIONS_NAME)
    return stages[-1] if stages else None
