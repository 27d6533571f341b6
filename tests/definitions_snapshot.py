"""What must not change when the code moves: every asset key, partitions definition, code version,
dependency and cache-key input of the bundled configs, collected into one JSON-able dict.

``tests/snapshots/definitions.json`` was written by this module *before* the package was reorganised
(issue 17); ``tests/test_definitions_snapshot.py`` checks that the reorganised package gives the same dict.
Only the imports of this module follow the code when it moves; what it collects does not change.
Regenerate (only for an intended change of behaviour, and say so in the commit):
``.venv/bin/python -m tests.definitions_snapshot > tests/snapshots/definitions.json``.
"""

from __future__ import annotations

import json
import os

CONFIGS = ("default", "smoke", "hierarchy")
SAMPLE_RECIPE = {"base": "b" * 16, "experts": {"math": "m" * 16, "code": "c" * 16}, "method": "linear"}


def _partitions(pdef) -> object:
    import dagster as dg

    if pdef is None:
        return None
    if isinstance(pdef, dg.MultiPartitionsDefinition):
        return {"multi": {d.name: _partitions(d.partitions_def) for d in pdef.partitions_defs}}
    if isinstance(pdef, dg.DynamicPartitionsDefinition):
        return {"dynamic": pdef.name}
    if isinstance(pdef, dg.StaticPartitionsDefinition):
        return {"static": list(pdef.get_partition_keys())}
    return {type(pdef).__name__: repr(pdef)}


def _mapping(mapping) -> object:
    if mapping is None:
        return None
    return {"type": type(mapping).__name__, "dimension": getattr(mapping, "partition_dimension_name", None)}


def _definitions(defs) -> dict:
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        spec = next(s for s in defs.resolve_assets_def(key).specs if s.key == key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "code_version": node.code_version,
            "partitions": _partitions(node.partitions_def),
            "deps": sorted(
                [[d.asset_key.to_user_string(), _mapping(d.partition_mapping)] for d in spec.deps],
                key=lambda x: x[0],
            ),
            "kinds": sorted(spec.kinds or []),
            "pool": node.pools and sorted(node.pools),
            "automation": spec.automation_condition is not None,
        }
    checks = sorted(
        f"{k.asset_key.to_user_string()}:{k.name}" for k in graph.asset_check_keys
    )
    jobs = {}
    for job in defs.jobs or []:
        name = job.name
        resolved = defs.resolve_job_def(name)
        jobs[name] = sorted(
            k.to_user_string() for k in resolved.asset_layer.asset_graph.get_all_asset_keys()
            if resolved.asset_layer.asset_graph.get(k).is_executable
        ) if hasattr(resolved, "asset_layer") else None
    return {
        "assets": assets,
        "checks": checks,
        "jobs": jobs,
        "sensors": sorted(s.name for s in defs.sensors or []),
        "schedules": sorted([s.name, s.cron_schedule] for s in defs.schedules or []),
    }


def _cache_keys(settings) -> dict:
    """Inputs of content-addressed keys that can be computed without running anything."""
    from mergemix_dagster.resources import layout
    from mergemix_dagster.resources.layout import candidate_fingerprint
    from mergemix_dagster.assets.corpora import general_source_fingerprint, source_fingerprint, subdomain_source_fingerprint
    from mergemix_dagster.core.evaluation.fingerprints import evaluation_fingerprints
    from mergemix_dagster.core.training.loop import recipe_from
    from mergemix_dagster.resources.trainers import trainer_identity
    from mergemix_dagster.assets.versions import evaluation_identity
    from dataclasses import asdict

    return {
        "settings": json.loads(json.dumps(settings.model_dump(exclude={"home"}), default=str)),
        "source_fingerprint": {d.name: source_fingerprint(d) for d in settings.domains if not d.paths},
        "subdomain_source_fingerprint": {
            f"{d.name}/{sub.name}": subdomain_source_fingerprint(d, sub)
            for d in settings.domains for sub in d.subdomains if not sub.paths
        },
        "general_source_fingerprint": general_source_fingerprint(settings),
        "evaluation_fingerprints": evaluation_fingerprints(settings, heldout=True),
        "evaluation_identity": evaluation_identity(settings),
        "trainer_identity": trainer_identity(settings.trainer),
        "expert_recipe": asdict(recipe_from(settings.experts)),
        "pretrain_recipe": asdict(recipe_from(settings.pretrain)),
        "candidate_fingerprint": candidate_fingerprint(SAMPLE_RECIPE, {"math": 0.25, "code": 0.75}),
        "content_version": layout.content_version({"a": [1, 2.5, "x"]}),
    }


def _store_keys() -> dict:
    """Where each artifact lives: a home written before the move must be found after it."""
    from mergemix_dagster.resources import layout
    from mergemix_dagster.resources.layout import study_key
    from mergemix_dagster.resources.layout import loss_history_key
    from mergemix_dagster.resources.layout import round_key
    from mergemix_dagster.resources.layout import design_key, result_key
    from mergemix_dagster.resources.layout import TOKENIZER_POINTER

    return {
        "general_corpus": layout.GENERAL_CORPUS,
        "tokenizer": layout.TOKENIZER,
        "tokenizer_pointer": TOKENIZER_POINTER,
        "corpus": layout.corpus_key("math", "f" * 32),
        "corpus_pointer": layout.corpus_pointer("math"),
        "base": layout.base_key("s0", "v1"),
        "base_pointer": layout.base_pointer("s0"),
        "stage_registration": layout.stage_registration("s1"),
        "expert": layout.expert_key("s0", "math", "v1"),
        "expert_pointer": layout.expert_pointer("s0", "math"),
        "subdomain_expert": layout.subdomain_expert_key("s0", "code/repos", "v1"),
        "subdomain_expert_pointer": layout.subdomain_expert_pointer("s0", "code/repos"),
        "subdomain_mixture": layout.subdomain_mixture_key("s0", "code"),
        "candidates": layout.candidates_key("s0"),
        "surrogates": layout.surrogates_key("s0", "v1"),
        "surrogates_pointer": layout.surrogates_pointer("s0"),
        "mixture": layout.mixture_key("s0"),
        "round": round_key("s0", 2),
        "validation_design": design_key("s0"),
        "validation_result": result_key("s0", "fidelity.json"),
        "hierarchy_study": study_key("s0"),
        "loss_history": loss_history_key("stages/s0/experts/math/v1"),
    }


def collect() -> dict:
    from mergemix_dagster.definitions import build_definitions
    from mergemix_dagster.core.settings import load_settings

    out: dict = {"store_keys": _store_keys(), "configs": {}}
    for name in CONFIGS:
        settings = load_settings(name)
        out["configs"][name] = {
            "definitions": _definitions(build_definitions(settings, config=name)),
            "cache_keys": _cache_keys(settings),
        }
    return json.loads(json.dumps(out, sort_keys=True, default=str))


if __name__ == "__main__":
    os.environ.setdefault("MERGEMIX_HOME", "/tmp/mergemix-snapshot-home")
    print(json.dumps(collect(), indent=1, sort_keys=True))
