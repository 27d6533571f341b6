"""Run a stage with a hierarchical search: the flat pipeline (``pipeline.run_stage``) and the sub-domain assets,
in the order the direction needs, running only partitions that are missing or stale.

- top-down: sub-domain corpora → the flat pipeline (coarse mixture over domain experts trained on the natural
  sub-domain mix) → sub-domain experts → the search inside each split domain → coarse × fine;
- bottom-up: sub-domain corpora → foundation and stage base → sub-domain experts → the search inside each
  split domain → the flat pipeline (a split domain's expert is the consolidated merge) → coarse × fine.
"""

from __future__ import annotations

from typing import Callable

import dagster as dg

from mergemix_dagster.assets.hierarchy import build_hierarchy_partitions, split_domain_partition_key, subdomain_expert_partition_key
from mergemix_dagster.core.data.subdomains import leaf_name
from mergemix_dagster.assets.partitions import build_partitions
from mergemix_dagster.runner.stage import OWNER_TAG, STAGE_TAG, _changed, _latest_metadata, home_lock, owner_tag, register_stage, run_stage
from mergemix_dagster.core.settings import Settings
from mergemix_dagster.runner.staleness import Status, _after, _direct, _resolver, next_runs, stage_status

EARLY_JOBS = ("foundation_job", "corpora_job", "stage_base_job")


def subdomain_corpus_changes(instance: dg.DagsterInstance, settings: Settings) -> list[str]:
    """Sub-domains never read, or whose files changed since their corpus was last read."""
    from mergemix_dagster.assets.corpora import subdomain_source_fingerprint

    out = []
    for d in settings.domains:
        for sub in d.subdomains:
            leaf = leaf_name(d.name, sub.name)
            recorded = _latest_metadata(instance, "subdomain_corpus", leaf)
            if recorded is None or _changed(recorded, subdomain_source_fingerprint(d, sub)):
                out.append(leaf)
    return out


def fine_plan(instance: dg.DagsterInstance, defs: dg.Definitions, settings: Settings, stage: str) -> list[tuple[str, object]]:
    """The first layer of sub-domain work that is not fresh: experts, then the searches inside domains, then
    the coarse × fine mixture (which also waits for a fresh ``chosen_mixture``)."""
    r = _resolver(instance, defs)
    hp = build_hierarchy_partitions(settings, build_partitions(settings))
    base = _direct(r, "stage_base", stage)
    experts = {
        leaf: _after([_direct(r, "subdomain_corpus", leaf), base],
                     _direct(r, "subdomain_expert", str(subdomain_expert_partition_key(leaf, stage))))
        for leaf in hp.leaf_domain
    }
    todo = [leaf for leaf, s in experts.items() if s is not Status.FRESH]
    if todo:
        return [("subdomain_experts_job", subdomain_expert_partition_key(leaf, stage)) for leaf in todo]
    mixtures = {
        d: _after([experts[leaf] for leaf, dom in hp.leaf_domain.items() if dom == d],
                  _direct(r, "subdomain_mixture", str(split_domain_partition_key(d, stage))))
        for d in settings.split_domains
    }
    todo = [d for d, s in mixtures.items() if s is not Status.FRESH]
    if todo:
        return [("subdomain_mixture_job", split_domain_partition_key(d, stage)) for d in todo]
    return []


def final_plan(instance: dg.DagsterInstance, defs: dg.Definitions, settings: Settings, stage: str) -> list[tuple[str, object]]:
    """``hierarchy_job`` when coarse × fine is not fresh, or when ``chosen_mixture`` rewrote ``mixture.json``
    with the coarse weights since (a rerun that chose the same weights leaves Dagster's data version unchanged)."""
    from mergemix_dagster.resources.layout import mixture_key
    from mergemix_dagster.resources import CheckpointStore

    store = CheckpointStore(root=settings.store_uri)
    if store.exists(mixture_key(stage)) and not store.get_json(mixture_key(stage)).get("hierarchy"):
        return [("hierarchy_job", stage)]
    r = _resolver(instance, defs)
    coarse = stage_status(instance, defs, settings.domain_names, stage).downstream["chosen_mixture"]
    mixtures = [_direct(r, "subdomain_mixture", str(split_domain_partition_key(d, stage))) for d in settings.split_domains]
    status = _after([coarse, *mixtures], _direct(r, "hierarchical_mixture", stage))
    return [] if status is Status.FRESH else [("hierarchy_job", stage)]


def run_hierarchy(
    defs: dg.Definitions,
    settings: Settings,
    instance: dg.DagsterInstance,
    stage: str,
    on_step: Callable[[str, object, float], None] | None = None,
    log_level: str = "INFO",
    on_check_failed: Callable[[str], None] | None = None,
    max_layers: int = 8,
) -> dict[str, float]:
    """Materialize what a hierarchical ``stage`` is missing or has stale; returns seconds per job."""
    import time

    timings: dict[str, float] = {}

    def execute(job_name: str, partition) -> None:
        start = time.perf_counter()
        result = defs.resolve_job_def(job_name).execute_in_process(
            instance=instance, partition_key=partition, raise_on_error=True,
            tags={STAGE_TAG: stage, OWNER_TAG: owner_tag()},
            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        )
        for check in result.get_asset_check_evaluations():
            if not check.passed and on_check_failed:
                on_check_failed(f"check {check.check_name} of {check.asset_key.to_user_string()}[{partition}] failed: "
                                f"{getattr(check, 'description', None) or 'see the Dagster UI'}")
        elapsed = time.perf_counter() - start
        timings[job_name] = timings.get(job_name, 0.0) + elapsed
        if on_step:
            on_step(job_name, partition, elapsed)

    def drain(plan_of: Callable[[], list[tuple[str, object]]]) -> None:
        for _ in range(max_layers):
            plan = plan_of()
            if not plan:
                return
            for job_name, partition in plan:
                execute(job_name, partition)
        raise RuntimeError(f"stage {stage!r}: sub-domain work still not fresh after {max_layers} layers")

    def coarse() -> None:
        for job, seconds in run_stage(defs, settings, instance, stage, on_step=on_step, log_level=log_level,
                                      on_check_failed=on_check_failed).items():
            timings[job] = timings.get(job, 0.0) + seconds

    with home_lock(settings):
        register_stage(instance, stage)
        for leaf in subdomain_corpus_changes(instance, settings):
            execute("subdomain_corpora_job", leaf)
        if settings.search.hierarchy == "bottom_up":
            drain(lambda: [p for p in next_runs(stage_status(instance, defs, settings.domain_names, stage))
                           if p[0] in EARLY_JOBS])
            drain(lambda: fine_plan(instance, defs, settings, stage))
            coarse()
        else:
            coarse()
            drain(lambda: fine_plan(instance, defs, settings, stage))
        drain(lambda: final_plan(instance, defs, settings, stage))
    return timings


def run_study(defs: dg.Definitions, instance: dg.DagsterInstance, stage: str, log_level: str = "INFO") -> None:
    """The trained ⟨MergeMix, MergeMix⟩ / ⟨MergeMix, uniform⟩ / ⟨uniform, uniform⟩ comparison of ``stage``."""
    defs.resolve_job_def("hierarchy_study_job").execute_in_process(
        instance=instance, partition_key=stage, raise_on_error=True,
        tags={STAGE_TAG: stage, OWNER_TAG: owner_tag()},
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
    )

