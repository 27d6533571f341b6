"""Where ``mergemix run`` decides what to rerun: every rule, in the order it is asked.

``plan(state)`` returns the next layer of runs of one stage, each a ``PlannedRun(job, partition, reason)``,
and ``[]`` once nothing is left; ``run_stage`` (stage.py) executes plans until then. A stage is a sequence
of steps (``stage_steps``); a step asks one or more rules (public functions below) together. A step asked
``once`` runs its layer and moves on; any other step is asked again until it has nothing to do, so the
next step sees what the previous one made.

A flat stage (``search.hierarchy: none``):

1. once: ``changed_general_corpus``, ``changed_domain_corpora``, ``changed_stage_base``,
   ``damaged_expert_checkpoints``: sources whose files changed since they were read, a stored base or experts
   whose files were damaged or deleted (the base first: a retrained expert reads it). Dagster cannot see a file change before the file is read again (no sensor daemon here).
2. until fresh: ``stale_layer``, the first layer (foundation → corpora → stage base → experts → optimize)
   that is missing or stale by Dagster's data and code versions (``staleness.py``).
3. once: ``stale_evaluations``, the optimize layer again when evaluation rows were scored under other task
   files, metric or limit (they are rescored, not reused); then step 2 again.

A hierarchical stage starts with ``changed_subdomain_corpora`` (once), then
top-down: the flat steps, ``stale_subdomain_work``, ``stale_hierarchical_mixture``;
bottom-up: ``stale_early_layer``, ``stale_subdomain_work``, the flat steps, ``stale_hierarchical_mixture``
(a split domain's expert is the merge of its sub-domain experts, so the fine search comes first).
The sensors and schedules (defs/) ask ``AUTOMATION_RULES`` (``automation_runs``): the flat rules above but the
domain corpora (``corpus_change_sensor``'s), so a daemon retrains a deleted expert and rescores stale rows too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Callable

import dagster as dg

from mergemix_dagster.assets.hierarchy import (
    build_hierarchy_partitions,
    split_domain_partition_key,
    subdomain_expert_partition_key,
)
from mergemix_dagster.assets.partitions import build_partitions, expert_partition_key
from mergemix_dagster.core.data.subdomains import leaf_name
from mergemix_dagster.core.settings import Settings
from mergemix_dagster.runner.staleness import PublicStaleStatus, StageStatus, Status, after, next_runs, stage_status


@dataclass(frozen=True)
class PlannedRun:
    job: str
    partition: object  # None, a partition key string or a dg.MultiPartitionKey, as the job expects it
    reason: str

    def __str__(self) -> str:
        return f"{self.job}[{self.partition if self.partition is not None else '-'}]: {self.reason}"


@dataclass(frozen=True)
class PlanContext:
    """What every rule reads: the graph, the settings, the instance's records, and the stage."""

    defs: dg.Definitions
    settings: Settings
    instance: dg.DagsterInstance
    stage: str


Rule = Callable[[PlanContext], list[PlannedRun]]


# ------------------------------------------------------------------ sources changed outside Dagster


def latest_metadata(instance: dg.DagsterInstance, asset: str, partition: str | None) -> dict | None:
    """Metadata of the latest materialization of ``asset[partition]``; None when it was never made."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None),
        limit=1,
    ).records
    return dict(records[0].asset_materialization.metadata) if records else None


def source_changed(metadata: dict | None, current: str) -> bool:
    """Whether a source was read under another fingerprint than ``current`` (remote sources: always)."""
    if metadata is None:
        return False  # never built: the stage plan materializes it
    recorded = metadata.get("source_fingerprint")
    return recorded is None or recorded.value != current or current.endswith("+remote")


def corpus_changes(instance: dg.DagsterInstance, settings: Settings) -> list[str]:
    """Domains whose source files changed (names, sizes, mtimes) since their corpus was last read, and
    domains read from a remote source (re-read every time: only their content tells)."""
    from mergemix_dagster.assets.corpora import source_fingerprint

    return [
        d.name for d in settings.domains
        if source_changed(latest_metadata(instance, "domain_corpus", d.name), source_fingerprint(d))
    ]


def changed_general_corpus(ctx: PlanContext) -> list[PlannedRun]:
    """``foundation_job`` when the general corpus's files changed. Re-reading is content-addressed:
    unchanged content leaves everything downstream fresh."""
    from mergemix_dagster.assets.corpora import general_source_fingerprint

    metadata = latest_metadata(ctx.instance, "general_corpus", None)
    if source_changed(metadata, general_source_fingerprint(ctx.settings)):
        return [PlannedRun("foundation_job", None, "the general corpus's source files changed")]
    return []


def changed_domain_corpora(ctx: PlanContext) -> list[PlannedRun]:
    """``corpora_job`` per domain whose source files changed (see ``corpus_changes``)."""
    return [PlannedRun("corpora_job", d, f"source files of domain {d!r} changed")
            for d in corpus_changes(ctx.instance, ctx.settings)]


def damaged_experts(settings: Settings, stage: str) -> list[str]:
    """Domains whose current expert checkpoint fails its cheap check (a truncated, replaced or edited file) or
    whose checkpoint folder was deleted.

    The damaged copy is quarantined (kept aside, not deleted) so its expert is trained again; a retrained
    expert with the same content leaves everything downstream fresh.
    """
    from mergemix_dagster.core.errors import CheckpointChangedError, TruncatedCheckpointError
    from mergemix_dagster.resources import CheckpointStore
    from mergemix_dagster.resources.layout import expert_pointer

    store = CheckpointStore(root=settings.store_uri)
    damaged = []
    for d in settings.domain_names:
        pointer_key = expert_pointer(stage, d)
        if not store.exists(pointer_key):
            continue
        key = store.get_json(pointer_key)["key"]
        if not store.exists(key):  # a deleted folder is retrained like a damaged one, never left to fail later
            logging.getLogger(__name__).warning(f"expert {d!r} of stage {stage!r}: {store.uri(key)} is gone, retraining")
            damaged.append(d)
            continue
        try:
            store.verify_dir(key, f"expert {d!r} of stage {stage!r}")
        except (CheckpointChangedError, TruncatedCheckpointError) as exc:
            logging.getLogger(__name__).warning(
                f"{type(exc).__name__}: {exc}; kept aside at {store.quarantine(key)}, retraining"
            )
            damaged.append(d)
    return damaged


def damaged_expert_checkpoints(ctx: PlanContext) -> list[PlannedRun]:
    """``experts_job`` per expert whose checkpoint files are damaged (quarantined by ``damaged_experts``) or gone."""
    return [PlannedRun("experts_job", expert_partition_key(d, ctx.stage), f"the checkpoint of expert {d!r} is damaged")
            for d in damaged_experts(ctx.settings, ctx.stage)]


def changed_stage_base(ctx: PlanContext) -> list[PlannedRun]:
    """``stage_base_job`` when the stored base checkpoint was deleted, or the stage's outside checkpoint
    (``model.base``, or the registered mid-training checkpoint) changed since it was read; the embedded base of
    the initial stage has no outside source."""
    from mergemix_dagster.assets.base import checkpoint_source_fingerprint
    from mergemix_dagster.resources import CheckpointStore
    from mergemix_dagster.resources.layout import base_pointer, stage_registration

    settings, stage = ctx.settings, ctx.stage
    store = CheckpointStore(root=settings.store_uri)
    pointer = store.get_json(base_pointer(stage)) if store.exists(base_pointer(stage)) else {}
    if "key" in pointer and not store.exists(pointer["key"]):  # deleted: made again, like a deleted expert
        return [PlannedRun("stage_base_job", stage, f"the base checkpoint {store.uri(pointer['key'])} is gone")]
    if stage == settings.initial_stage and settings.model.base == "embedded":
        return []
    source = settings.model.base if stage == settings.initial_stage else None
    if source is None:
        key = stage_registration(stage)
        source = store.get_json(key)["checkpoint"] if store.exists(key) else None
    metadata = latest_metadata(ctx.instance, "stage_base", stage)
    if source is not None and metadata is not None:
        recorded = metadata.get("source_fingerprint")
        if recorded is None or recorded.value != checkpoint_source_fingerprint(source):
            return [PlannedRun("stage_base_job", stage, f"the stage's base checkpoint {source} changed")]
    return []


def changed_subdomain_corpora(ctx: PlanContext) -> list[PlannedRun]:
    """``subdomain_corpora_job`` per sub-domain never read, or whose files changed since it was read."""
    from mergemix_dagster.assets.corpora import subdomain_source_fingerprint

    runs = []
    for d in ctx.settings.domains:
        for sub in d.subdomains:
            leaf = leaf_name(d.name, sub.name)
            recorded = latest_metadata(ctx.instance, "subdomain_corpus", leaf)
            if recorded is None or source_changed(recorded, subdomain_source_fingerprint(d, sub)):
                why = "never read" if recorded is None else "source files changed"
                runs.append(PlannedRun("subdomain_corpora_job", leaf, f"sub-domain {leaf!r}: {why}"))
    return runs


# ------------------------------------------------------------------ staleness by Dagster's versions


def layer_runs(status: StageStatus) -> list[PlannedRun]:
    """``staleness.next_runs`` (the first layer that is not fresh), each run with the partitions that make it due."""
    def due(items: dict) -> str:
        return ", ".join(f"{k} {s.value}" for k, s in items.items() if s is not Status.FRESH)

    reasons = {
        "foundation_job": lambda p: due(status.foundation),
        "corpora_job": lambda p: f"domain_corpus[{p}] {status.corpora[p].value}",
        "stage_base_job": lambda p: f"stage_base[{p}] {status.base.value}",
        "experts_job": lambda p: f"expert_checkpoint[{p}] {status.experts[p.keys_by_dimension['domain']].value}",
        "optimize_job": lambda p: due(status.downstream),
    }
    return [PlannedRun(job, partition, reasons[job](partition)) for job, partition in next_runs(status)]


def stale_layer(ctx: PlanContext) -> list[PlannedRun]:
    """The first layer of the stage that is missing or stale (``staleness.stage_status``)."""
    return layer_runs(stage_status(ctx.instance, ctx.defs, ctx.settings.domain_names, ctx.stage))


EARLY_JOBS = ("foundation_job", "corpora_job", "stage_base_job")


def stale_early_layer(ctx: PlanContext) -> list[PlannedRun]:
    """``stale_layer`` while it is foundation, corpora or stage base: what sub-domain experts read."""
    return [run for run in stale_layer(ctx) if run.job in EARLY_JOBS]


def stale_evaluation_rows(settings: Settings, stage: str) -> int:
    """How many evaluation rows of the stage's current candidates were scored under other evaluation
    settings (task files, metric, limit) than the current ones; they must be rescored, not reused."""
    from mergemix_dagster.core.evaluation.fingerprints import evaluation_fingerprints
    from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase
    from mergemix_dagster.resources.layout import candidates_key

    store = CheckpointStore(root=settings.store_uri)
    if not store.exists(candidates_key(stage)):
        return 0
    ids = {c["candidate_id"] for c in store.get_json(candidates_key(stage))["candidates"]} | {"base"}
    rows = EvaluationDatabase(path=settings.database_path, store_root=settings.store_uri).evaluations(stage)
    pairs = {(t.name, t.metric) for t in settings.evaluation.tasks}
    current = evaluation_fingerprints(settings)
    return sum(
        1
        for cid, task, metric, fp in zip(rows["candidate_id"], rows["task"], rows["metric"], rows["evaluation_fingerprint"])
        if cid in ids and (task, metric) in pairs and current.get(task) != fp
    )


def stale_evaluations(ctx: PlanContext) -> list[PlannedRun]:
    """``optimize_job`` when evaluation rows were scored under other evaluation settings (task files are
    not Dagster inputs, so their edit leaves the graph fresh)."""
    n = stale_evaluation_rows(ctx.settings, ctx.stage)
    return [PlannedRun("optimize_job", ctx.stage, f"{n} evaluation rows scored under other settings")] if n else []


def stale_subdomain_work(ctx: PlanContext) -> list[PlannedRun]:
    """The first layer of sub-domain work that is not fresh: sub-domain experts, then the search inside each
    split domain."""
    r = PublicStaleStatus(ctx.instance, ctx.defs)
    settings, stage = ctx.settings, ctx.stage
    hp = build_hierarchy_partitions(settings, build_partitions(settings))
    base = r.of("stage_base", stage)
    experts = {
        leaf: after([r.of("subdomain_corpus", leaf), base], r.of("subdomain_expert", subdomain_expert_partition_key(leaf, stage)))
        for leaf in hp.leaf_domain
    }
    todo = [(leaf, s) for leaf, s in experts.items() if s is not Status.FRESH]
    if todo:
        return [PlannedRun("subdomain_experts_job", subdomain_expert_partition_key(leaf, stage),
                           f"subdomain_expert[{leaf}] {s.value}") for leaf, s in todo]
    mixtures = {
        d: after([experts[leaf] for leaf, dom in hp.leaf_domain.items() if dom == d],
                 r.of("subdomain_mixture", split_domain_partition_key(d, stage)))
        for d in settings.split_domains
    }
    return [PlannedRun("subdomain_mixture_job", split_domain_partition_key(d, stage), f"subdomain_mixture[{d}] {s.value}")
            for d, s in mixtures.items() if s is not Status.FRESH]


def stale_hierarchical_mixture(ctx: PlanContext) -> list[PlannedRun]:
    """``hierarchy_job`` when coarse × fine is not fresh, or when ``chosen_mixture`` rewrote ``mixture.json``
    with the coarse weights since (a rerun that chose the same weights leaves Dagster's data version unchanged)."""
    from mergemix_dagster.resources import CheckpointStore
    from mergemix_dagster.resources.layout import mixture_key

    stage = ctx.stage
    store = CheckpointStore(root=ctx.settings.store_uri)
    if store.exists(mixture_key(stage)) and not store.get_json(mixture_key(stage)).get("hierarchy"):
        return [PlannedRun("hierarchy_job", stage, "mixture.json holds the coarse weights only")]
    r = PublicStaleStatus(ctx.instance, ctx.defs)
    coarse = stage_status(ctx.instance, ctx.defs, ctx.settings.domain_names, stage).downstream["chosen_mixture"]
    mixtures = [r.of("subdomain_mixture", split_domain_partition_key(d, stage)) for d in ctx.settings.split_domains]
    status = after([coarse, *mixtures], r.of("hierarchical_mixture", stage))
    return [] if status is Status.FRESH else [PlannedRun("hierarchy_job", stage, f"hierarchical_mixture[{stage}] {status.value}")]


# ------------------------------------------------------------------ the order, and the plan


@dataclass(frozen=True)
class Step:
    rules: tuple[Rule, ...]
    once: bool = False  # asked once; else asked until it has nothing to do
    max_layers: int = 12  # a step still planning after this many layers is a bug, not a slow stage

    @property
    def name(self) -> str:
        return " + ".join(rule.__name__ for rule in self.rules)


FLAT_STEPS = (
    Step((changed_general_corpus, changed_domain_corpora, changed_stage_base, damaged_expert_checkpoints), once=True),
    Step((stale_layer,)),
    Step((stale_evaluations,), once=True),
    Step((stale_layer,)),
)


def stage_steps(settings: Settings, hierarchical: bool = False, max_layers: int = 12,
                subdomain_layers: int = 8) -> tuple[Step, ...]:
    """The steps of a stage, flat or in the order of ``search.hierarchy``."""
    flat = tuple(s if s.once else replace(s, max_layers=max_layers) for s in FLAT_STEPS)
    if not hierarchical:
        return flat
    sub = Step((changed_subdomain_corpora,), once=True)
    early, fine, final = (Step((rule,), max_layers=subdomain_layers)
                          for rule in (stale_early_layer, stale_subdomain_work, stale_hierarchical_mixture))
    if settings.search.hierarchy == "bottom_up":
        return (sub, early, fine, *flat, final)
    return (sub, *flat, fine, final)


#: What the daemon asks each tick, in order; the first rule with runs wins (one layer at a time, as ``plan``).
AUTOMATION_RULES: tuple[Rule, ...] = (
    changed_general_corpus, changed_stage_base, damaged_expert_checkpoints, stale_layer, stale_evaluations,
)


def automation_runs(ctx: PlanContext) -> list[PlannedRun]:
    """The runs a sensor or schedule requests for ``ctx.stage`` now: those of the first ``AUTOMATION_RULES``
    rule that has any."""
    for rule in AUTOMATION_RULES:
        if runs := rule(ctx):
            return runs
    return []


@dataclass
class PlanState:
    """Which step of ``steps`` a stage has reached, and how many layers that step has planned."""

    ctx: PlanContext
    steps: tuple[Step, ...]
    step: int = 0
    layers: int = 0


def plan(state: PlanState) -> list[PlannedRun]:
    """The next layer of runs of ``state``'s stage, in order; ``[]`` when nothing is left. Moves ``state``
    past the steps that have nothing (more) to do."""
    while state.step < len(state.steps):
        step = state.steps[state.step]
        runs = [run for rule in step.rules for run in rule(state.ctx)]
        if runs and not step.once:
            if state.layers >= step.max_layers:
                pending = "; ".join(map(str, runs))
                raise RuntimeError(f"stage {state.ctx.stage!r} still not fresh after {step.max_layers} layers of "
                                   f"{step.name}: {pending}")
            state.layers += 1
            return runs
        state.step, state.layers = state.step + 1, 0
        if runs:
            return runs
    return []
