"""Benchmark candidate evaluation split over W Dagster steps (or W pool processes), and the harness's overhead.

Not a test. Builds (or reuses) the base + K perturbed experts of ``benchmarks/candidates.py``, draws N
mixtures, and scores them all (and the base) on ``DEFAULT_TASKS``:

- ``--path fanout`` (default): through the ``candidate_evaluations`` asset itself, on a store and Dagster
  instance made for the run under the work folder: W = 1 is one scoring step run in process (as ``mergemix
  run`` runs it); W > 1 is ``evaluator.chunk_size = ceil((N + 1) / W)``, i.e. W scoring steps, run by
  Dagster's **multiprocess executor** with ``max_concurrent = W`` (one process per step, torch threads 1 per
  process, or ``--threads``). Wall time includes Dagster's plan and write steps and each process's start and
  loading. The rows of every W (read back from DuckDB) must be identical to W = 1's, bit for bit.
- ``--path pool``: the pre-fan-out path, ``core.evaluation.workers.score_proxies`` with W processes of one
  step (still used inside a scoring step with ``evaluation.workers``).
- Throughput: a forward pre-hook counts the tokens the harness feeds the model (padding included) during one
  evaluation and keeps the batches; replaying those exact batches through ``model(input_ids)`` alone is the
  bare batched forward pass. harness overhead = evaluation wall / bare forward wall.

    .venv/bin/python benchmarks/evaluate.py                 # N=40, W in (1, 2), through the Dagster fan-out
    .venv/bin/python benchmarks/evaluate.py --path pool     # the same through the in-step process pool
    .venv/bin/python benchmarks/evaluate.py --candidates 8 --eval-limit 16    # a quick look
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def run(workers: int, base_dir, expert_dirs, cands, batch, limit, threads=None) -> tuple[list, float, list[float]]:
    """Score ``cands`` with ``score_proxies``, the function the ``candidate_evaluations`` asset calls.

    Returns the rows (candidate index, task, metric, value), the wall time (loading included) and the
    evaluation seconds of each candidate."""
    from mergemix_dagster.core.evaluation.harness import DEFAULT_TASKS
    from mergemix_dagster.core.evaluation.workers import ProxyJob, ScorerSpec, score_proxies

    spec = ScorerSpec(str(base_dir), {n: str(d) for n, d in expert_dirs.items()}, DEFAULT_TASKS, batch_size=batch,
                      limit=limit, device="cpu", threads=threads or (1 if workers > 1 else None))
    jobs = [ProxyJob(str(i), c.as_dict()) for i, c in enumerate(cands)]
    rows, seconds = [], []

    def collect(job, scores, elapsed):
        rows.extend((int(job.candidate_id), s.task, s.metric, s.value) for s in scores)
        seconds.append(elapsed)

    start = time.perf_counter()
    score_proxies(spec, jobs, collect, workers=workers)
    return sorted(rows), time.perf_counter() - start, seconds


DOMAINS = ("math", "code", "web", "sft")  # the experts' domain names in the benchmark's settings
CAPABILITIES = ("math", "code", "language", "knowledge")  # DEFAULT_TASKS' capabilities, in order
CONFIG_VAR = "MERGEMIX_BENCH_CONFIG"


def fanout_job():
    """The evaluation asset's job, rebuilt in each process of the multiprocess executor (``reconstructable``)."""
    import dagster as dg

    from mergemix_dagster.assets.evaluations import build_evaluation_assets
    from mergemix_dagster.assets.partitions import build_partitions
    from mergemix_dagster.core.settings import load_settings
    from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase
    from mergemix_dagster.resources.pools import pools_from
    from mergemix_dagster.resources.settings import PipelineSettings

    path = os.environ[CONFIG_VAR]
    s = load_settings(path)
    return dg.Definitions(
        assets=build_evaluation_assets(build_partitions(s), pools_from(s)),
        jobs=[dg.define_asset_job("bench_fanout", selection=["candidate_evaluations"])],
        resources={"settings": PipelineSettings(config=path), "store": CheckpointStore(root=s.store_uri),
                   "database": EvaluationDatabase(path=s.database_path)},
    ).resolve_job_def("bench_fanout")


def fanout_home(root: Path, workers: int, base_dir, expert_dirs, cands, batch, limit, threads) -> Path:
    """A store whose stage s0 points at the benchmark's checkpoints, its seed design, and a settings file."""
    import yaml

    from mergemix_dagster.core.evaluation.harness import DEFAULT_TASKS
    from mergemix_dagster.resources import CheckpointStore, layout

    shutil.rmtree(root, ignore_errors=True)
    store = CheckpointStore(root=str(root / "store"))
    names = dict(zip(sorted(expert_dirs), DOMAINS))
    store.put_json(layout.base_pointer("s0"), {"path": str(base_dir), "fingerprint": "bench-base"})
    for expert, domain in names.items():
        store.put_json(layout.expert_pointer("s0", domain), {"path": str(expert_dirs[expert]), "fingerprint": expert})
    recipe = {"stage": "s0", "base": "bench-base", "experts": {d: e for e, d in names.items()}, "method": "linear"}
    candidates = [{"candidate_id": f"c{i:03d}", "alpha": {names[e]: w for e, w in c.as_dict().items()},
                   "fingerprint": layout.candidate_fingerprint(recipe, {names[e]: w for e, w in c.as_dict().items()})}
                  for i, c in enumerate(cands)]
    store.put_json(layout.candidates_key("s0"), recipe | {"domains": list(DOMAINS), "candidates": candidates})
    settings = {
        "home": str(root / "home"), "store_root": str(root / "store"), "database": str(root / "bench.duckdb"),
        "domains": [{"name": d, "capability": c} for d, c in zip(DOMAINS, CAPABILITIES)],
        "search": {"n_candidates": len(cands)},
        "evaluation": {"tasks": [{"name": t.name, "capability": t.capability, "metric": t.metric} for t in DEFAULT_TASKS],
                       "batch_size": batch, "limit": limit, "device": "cpu",
                       "threads": threads or (1 if workers > 1 else None)},
        "evaluator": {"chunk_size": -(-(len(cands) + 1) // workers)},
    }
    path = root / "settings.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def run_fanout(workers: int, base_dir, expert_dirs, cands, batch, limit, threads, workdir: Path):
    """Score ``cands`` (and the base) through ``candidate_evaluations``: W scoring steps, multiprocess executor."""
    import dagster as dg

    from mergemix_dagster.resources import EvaluationDatabase

    root = workdir / f"fanout-W{workers}"
    path = fanout_home(root, workers, base_dir, expert_dirs, cands, batch, limit, threads)
    os.environ[CONFIG_VAR] = str(path)
    (root / "dagster").mkdir(parents=True)
    start = time.perf_counter()
    with dg.instance_for_test(temp_dir=str(root / "dagster")) as instance:
        instance.add_dynamic_partitions("stage", ["s0"])
        executor = "multiprocess" if workers > 1 else "in_process"
        config = {"multiprocess": {"max_concurrent": workers}} if workers > 1 else {"in_process": {}}
        result = dg.execute_job(dg.reconstructable(fanout_job), instance, tags={"dagster/partition": "s0"},
                                run_config={"execution": {"config": config}})
        wall = time.perf_counter() - start
        if not result.success:
            raise SystemExit(f"W={workers}: the {executor} run failed")
        meta = result.asset_materializations_for_node("candidate_evaluations")[0].metadata
        steps = meta["scoring_steps"].value
        per = meta["seconds_per_candidate"].value
    frame = EvaluationDatabase(path=str(root / "bench.duckdb")).evaluations("s0")
    rows = sorted(zip(frame["candidate_id"], frame["task"], frame["metric"], frame["value"]))
    return rows, wall, steps, per


def throughput(base_dir, batch, limit) -> dict:
    import torch

    from mergemix_dagster.core.evaluation.harness import DEFAULT_TASKS, Evaluator
    from mergemix_dagster.core.training.model import load_checkpoint

    model, tokenizer = load_checkpoint(base_dir)
    evaluator = Evaluator(DEFAULT_TASKS, batch_size=batch, limit=limit)
    evaluator.evaluate(model, tokenizer)  # warm: encodings cached, as for every candidate after the first
    seen: list = []
    hook = model.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append((args[0] if args else kwargs["input_ids"]).clone()), with_kwargs=True
    )
    start = time.perf_counter()
    evaluator.evaluate(model, tokenizer)
    harness = time.perf_counter() - start
    hook.remove()
    tokens = sum(x.numel() for x in seen)
    start = time.perf_counter()
    with torch.no_grad():
        for x in seen:
            model(input_ids=x)
    bare = time.perf_counter() - start
    return {"batches": len(seen), "tokens": tokens, "harness_s": harness, "bare_s": bare}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--candidates", type=int, default=40)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--eval-limit", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: 1 when W > 1)")
    p.add_argument("--workdir", type=Path, default=REPO / "benchmarks" / ".scratch")
    p.add_argument("--path", choices=("fanout", "pool"), default="fanout",
                   help="fanout: W Dagster steps (multiprocess executor); pool: W processes of one step")
    p.add_argument("--no-throughput", action="store_true", help="skip the harness-overhead measurement")
    args = p.parse_args(argv)

    import candidates as cand_bench

    build_args = argparse.Namespace(layers=2, hidden=128, heads=4, intermediate=344, vocab=2048, experts=4,
                                    noise=0.02, tokenizer_chars=300_000, seed=0)
    base_dir, expert_dirs = cand_bench.build(args.workdir.resolve(), build_args)
    cands = cand_bench.mixtures(sorted(expert_dirs), args.candidates, 0)
    print(f"{len(cands)} candidates, {len(expert_dirs)} experts, {os.cpu_count()} cores")

    runs = {}
    for w in args.workers:
        if args.path == "fanout":
            rows, wall, steps, per = run_fanout(w, base_dir, expert_dirs, cands, args.batch_size, args.eval_limit,
                                                args.threads, args.workdir.resolve())
            runs[w] = (rows, wall)
            print(f"W={w} (Dagster fan-out, {'multiprocess' if w > 1 else 'in-process'} executor, {steps} scoring "
                  f"step(s)): {len(rows)} rows in {wall:.1f} s wall ({per:.2f} s per candidate in its step)")
            continue
        rows, wall, busy = run(w, base_dir, expert_dirs, cands, args.batch_size, args.eval_limit, args.threads)
        runs[w] = (rows, wall)
        print(f"W={w} (in-step pool): {len(rows)} rows in {wall:.1f} s wall "
              f"({sum(busy) / len(busy):.2f} s per candidate in its worker)")
    first = args.workers[0]
    for w in args.workers[1:]:
        same = runs[w][0] == runs[first][0]
        print(f"W={w} vs W={first}: rows identical: {same}; wall ratio W{first}/W{w} = {runs[first][1] / runs[w][1]:.2f}")
    if args.no_throughput:
        return 0

    t = throughput(base_dir, args.batch_size, args.eval_limit)
    print(f"one evaluation: {t['batches']} forward batches, {t['tokens']:,} tokens (padding included)")
    print(f"  harness:      {t['harness_s']:.2f} s  -> {t['tokens'] / t['harness_s']:,.0f} scored tokens/s")
    print(f"  bare forward: {t['bare_s']:.2f} s  -> {t['tokens'] / t['bare_s']:,.0f} tokens/s")
    print(f"  harness overhead: {t['harness_s'] / t['bare_s']:.2f}x the bare batched forward pass")
    return 0


if __name__ == "__main__":
    sys.exit(main())
