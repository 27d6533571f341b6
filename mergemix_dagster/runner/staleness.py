"""Which partitions of a stage are missing or stale, and which runs bring the stage up to date.

Dagster decides direct staleness from data versions (content hashes of corpora and checkpoints) and code
versions. It does not carry staleness through partition mappings (a stale expert does not make its
stage's candidates stale until the expert is rerun), so we propagate it along our one-way graph:
corpus → expert ← stage base; experts → candidates → evaluations → surrogates → mixture.

The plan for a stage is the *first* layer with work to do; the sensor then chains the next layer once
those runs finish (a Dagster run cannot mix partitions definitions, so one run per layer and partition).

How a partition's own status is decided, on public APIs only: Dagster records on every materialization
the asset's code version (``dagster/code_version``), its data version (``dagster/data_version``) and the
data version of each input it read (``dagster/input_data_version/<key>``; for several upstream partitions,
the sha256 of their data versions concatenated in partition-key order). A materialized partition is stale
when its recorded code version differs from the asset's current one, or a recorded input data version
differs from that input's current data version: the rule behind the UI's "Stale" badge, whose resolver
(``CachingStaleStatusResolver``) Dagster does not expose. tests/test_native.py checks that this module and
that resolver agree, partition by partition, on stand-in assets with the same partition mappings.

Why hand-written at all: the two rules Dagster cannot express. (1) Staleness through partition mappings
(above). (2) "Only the latest stage": declarative automation (``AutomationCondition``) has no condition for
"the last dynamic partition", and ``any_deps_updated`` would rerun every older stage after a corpus edit.
New stages, which need no staleness rule, are launched natively: ``stage_automation_sensor`` (see
defs/sensors.py) submits one asset backfill over all of a new stage's partitions.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum

import dagster as dg

from mergemix_dagster.assets.groups import OPTIMIZE_ASSETS
from mergemix_dagster.assets.partitions import STAGE_PARTITIONS_NAME, expert_partition_key


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


CODE_VERSION_TAG = "dagster/code_version"
DATA_VERSION_TAG = "dagster/data_version"
INPUT_DATA_VERSION_TAG = "dagster/input_data_version/"


class PublicStaleStatus:
    """Missing / stale / fresh of single asset partitions, from the instance's materialization records.

    Caches what it reads, so a whole stage costs one query per partition; make a new one per decision.
    ``defs`` is the ``Definitions`` (``mergemix run``) or a sensor's ``context.repository_def``.
    """

    def __init__(self, instance: dg.DagsterInstance, defs: dg.Definitions | dg.RepositoryDefinition) -> None:
        self.instance, self.defs = instance, defs
        self._tags: dict[tuple[str, str | None], dict[str, str] | None] = {}

    def assets_def(self, key: dg.AssetKey) -> dg.AssetsDefinition:
        if isinstance(self.defs, dg.RepositoryDefinition):
            return self.defs.assets_defs_by_key[key]
        return self.defs.resolve_assets_def(key)

    def tags(self, key: dg.AssetKey, partition: str | None) -> dict[str, str] | None:
        """Tags of the latest materialization of ``key[partition]`` (None: never materialized)."""
        cache_key = (key.to_user_string(), partition)
        if cache_key not in self._tags:
            records = self.instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition is not None else None),
                limit=1,
            ).records
            self._tags[cache_key] = dict(records[0].asset_materialization.tags or {}) if records else None
        return self._tags[cache_key]

    def upstream_partitions(
        self, up: dg.AssetKey, down: dg.AssetKey, partition: str | None, mapping: dg.PartitionMapping | None = None
    ) -> list[str | None]:
        """The partitions of ``up`` that ``down[partition]`` reads, for the mappings this project uses:
        unpartitioned, identical partitions, multi → one of its dimensions, one dimension → multi; any other
        explicit ``mapping`` (the sub-domain family's) through its public
        ``get_upstream_mapped_partitions_result_for_partitions``."""
        up_def = self.assets_def(up).partitions_def
        down_def = self.assets_def(down).partitions_def
        if up_def is None:
            return [None]
        if up_def == down_def:
            return [partition]
        if isinstance(down_def, dg.MultiPartitionsDefinition):  # key "a|b": dimensions in name order
            by_dimension = dict(zip((d.name for d in down_def.partitions_defs), str(partition).split("|")))
            for dim in down_def.partitions_defs:
                if dim.partitions_def == up_def:
                    return [by_dimension[dim.name]]
        if isinstance(up_def, dg.MultiPartitionsDefinition):
            for dim in up_def.partitions_defs:
                if dim.partitions_def == down_def:
                    keys = up_def.get_partition_keys(dynamic_partitions_store=self.instance)
                    return [str(k) for k in keys if k.keys_by_dimension[dim.name] == partition]
        if mapping is not None and down_def is not None:
            result = mapping.get_upstream_mapped_partitions_result_for_partitions(
                down_def.subset_with_partition_keys([str(partition)]), down_def, up_def,
                dynamic_partitions_store=self.instance,
            )
            return sorted(str(k) for k in result.partitions_subset.get_partition_keys())
        raise NotImplementedError(f"no partition mapping rule for {down.to_user_string()} <- {up.to_user_string()}")

    def current_input_version(self, up: dg.AssetKey, partitions: list[str | None]) -> str | None:
        """The data version Dagster records for an input read from ``partitions`` of ``up``: the upstream's own
        when it is unpartitioned, else a hash over the materialized partitions (even a single one)."""
        if partitions == [None]:
            tags = self.tags(up, None)
            return tags.get(DATA_VERSION_TAG) if tags else None
        versions = [
            (str(p), tags[DATA_VERSION_TAG])
            for p in partitions
            if (tags := self.tags(up, p)) is not None and DATA_VERSION_TAG in tags
        ]
        return hashlib.sha256("".join(v for _, v in sorted(versions)).encode()).hexdigest()

    def status(self, key: dg.AssetKey, partition: str | None) -> "Status":
        tags = self.tags(key, partition)
        if tags is None:
            return Status.MISSING
        spec = next(s for s in self.assets_def(key).specs if s.key == key)
        if tags.get(CODE_VERSION_TAG) != spec.code_version:
            return Status.STALE
        for dep in spec.deps:
            recorded = tags.get(INPUT_DATA_VERSION_TAG + dep.asset_key.to_user_string())
            partitions = self.upstream_partitions(dep.asset_key, key, partition, dep.partition_mapping)
            current = self.current_input_version(dep.asset_key, partitions)
            if recorded != current and recorded != self.own_version(dep.asset_key, partitions):
                return Status.STALE
        return Status.FRESH

    def own_version(self, up: dg.AssetKey, partitions: list[str | None]) -> str | None:
        """The data version of the one partition of ``up`` read, unhashed: what Dagster records for an input
        of a graph-backed asset (``candidate_evaluations``, whose plan op reads ``merge_candidates``)."""
        if len(partitions) != 1 or partitions[0] is None:
            return None
        tags = self.tags(up, partitions[0])
        return tags.get(DATA_VERSION_TAG) if tags else None

    def of(self, asset: str, partition: object = None) -> Status:
        """``status`` by asset name; a multi-partition key is spelled as Dagster stores it (``a|b``)."""
        return self.status(dg.AssetKey(asset), None if partition is None else str(partition))


def after(upstream: list[Status], own: Status) -> Status:
    """An asset whose upstream is not fresh is at best stale (or missing if never made)."""
    if own is Status.MISSING:
        return Status.MISSING
    return Status.STALE if any(u is not Status.FRESH for u in upstream) else own


def stage_status(
    instance: dg.DagsterInstance, defs: dg.Definitions | dg.RepositoryDefinition, domains: tuple[str, ...], stage: str
) -> StageStatus:
    r = PublicStaleStatus(instance, defs)
    general = r.of("general_corpus")
    foundation = {"general_corpus": general, "base_tokenizer": after([general], r.of("base_tokenizer"))}
    corpora = {d: r.of("domain_corpus", d) for d in domains}
    base = after(list(foundation.values()), r.of("stage_base", stage))
    experts = {d: after([corpora[d], base], r.of("expert_checkpoint", expert_partition_key(d, stage))) for d in domains}
    downstream: dict[str, Status] = {}
    upstream = list(experts.values())
    for asset in OPTIMIZE_ASSETS:
        downstream[asset] = after(upstream, r.of(asset, stage))
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
