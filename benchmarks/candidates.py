"""Benchmark preparing + evaluating N merge candidates: in-memory re-merge vs reload per candidate.

Not a test. Builds a small Llama (default: the embedded tiny spec, 2 layers, d=128, vocab 2048)
with a BPE tokenizer trained on the embedded general corpus, saves a base and K experts (base + a
small random perturbation) as HF checkpoints into a scratch folder, draws N mixtures (Dirichlet,
seeded) and times two ways of scoring them:

- in memory: ONE model load, the base + expert state dicts loaded once into an
  ``InMemoryMerger``, then per candidate ``merger.apply(mixture)`` + evaluation;
- reload: per candidate a streaming ``merge_checkpoints`` to disk + ``load_checkpoint`` of the
  result + evaluation.

The switch time (getting the candidate's weights into a model) is reported separately from the
evaluation time (``Evaluator(DEFAULT_TASKS, batch_size=64).evaluate(model, tokenizer)``). It also
checks that both paths give bit-identical weights and identical scores for every candidate.

Usage::

    .venv/bin/python benchmarks/candidates.py                         # tiny model, N=40
    .venv/bin/python benchmarks/candidates.py --layers 8 --hidden 512 --vocab 8192
    .venv/bin/python benchmarks/candidates.py --no-eval              # switch times only
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_WORKDIR = REPO / "benchmarks" / ".scratch"


def build(workdir: Path, args) -> tuple[Path, dict[str, Path]]:
    import torch

    from mergemix_dagster.core.data.defaults import build_general_documents
    from mergemix_dagster.core.training.model import TinyModelSpec, new_tiny_llama, save_checkpoint, train_tokenizer

    spec = {"layers": args.layers, "hidden": args.hidden, "vocab": args.vocab, "heads": args.heads,
            "intermediate": args.intermediate, "experts": args.experts, "noise": args.noise,
            "tokenizer_chars": args.tokenizer_chars, "seed": args.seed}
    root = workdir / f"cand-L{args.layers}-d{args.hidden}-v{args.vocab}-k{args.experts}"
    names = [f"expert{i}" for i in range(args.experts)]
    stamp = root / "spec.json"
    if stamp.exists() and json.loads(stamp.read_text()) == spec:
        print(f"reusing checkpoints in {root}")
        return root / "base", {n: root / n for n in names}
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    t = time.perf_counter()
    docs = build_general_documents(max_chars=args.tokenizer_chars, seed=args.seed)
    tokenizer = train_tokenizer(docs, args.vocab)
    print(f"tokenizer: {len(tokenizer)} tokens from {sum(map(len, docs)) / 1e3:.0f} kB of general documents "
          f"({time.perf_counter() - t:.1f}s)")
    model_spec = TinyModelSpec(vocab_size=args.vocab, hidden_size=args.hidden, num_layers=args.layers,
                               num_heads=args.heads, intermediate_size=args.intermediate)
    model = new_tiny_llama(model_spec, tokenizer, seed=args.seed)
    save_checkpoint(model, tokenizer, root / "base")
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(args.seed + 1)
    with torch.no_grad():
        for name in names:
            for k, p in model.named_parameters():
                p.copy_(base[k] + args.noise * torch.randn(p.shape, generator=gen))
            save_checkpoint(model, tokenizer, root / name)
    stamp.write_text(json.dumps(spec))
    n = sum(p.numel() for p in model.parameters())
    print(f"model: {n / 1e6:.2f}M params (tied embeddings); base + {args.experts} experts in {root}")
    return root / "base", {n: root / n for n in names}


def mixtures(domains: list[str], n: int, seed: int):
    import numpy as np

    from mergemix_dagster.core.mixture import Mixture

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        w = rng.dirichlet(np.ones(len(domains)))
        w = w / w.sum()
        out.append(Mixture.from_array(domains, w))
    return out


def summary(xs: list[float]) -> str:
    if not xs:
        return "n/a"
    return f"median {statistics.median(xs) * 1e3:8.1f} ms  (min {min(xs) * 1e3:.1f}, max {max(xs) * 1e3:.1f})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--candidates", type=int, default=40, help="N candidates (default 40)")
    p.add_argument("--experts", type=int, default=4, help="K experts (default 4)")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=344)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--noise", type=float, default=0.02, help="std of the expert perturbation (default 0.02)")
    p.add_argument("--tokenizer-chars", type=int, default=300_000, help="general-corpus characters for the tokenizer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64, help="evaluation batch size (default 64)")
    p.add_argument("--eval-limit", type=int, default=None, help="evaluate only the first N examples of each task")
    p.add_argument("--no-eval", action="store_true", help="time the switches only")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="scratch folder (default benchmarks/.scratch)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)

    sys.path.insert(0, str(REPO))
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from mergemix_dagster.core.merge import InMemoryMerger, merge_checkpoints
    from mergemix_dagster.core.training.model import load_checkpoint, load_state_dict, read_config

    workdir = args.workdir.resolve()
    base_dir, expert_dirs = build(workdir, args)
    domains = sorted(expert_dirs)
    cands = mixtures(domains, args.candidates, args.seed)

    evaluator = None
    if not args.no_eval:
        try:
            from mergemix_dagster.core.evaluation.harness import DEFAULT_TASKS, Evaluator
        except ImportError as e:
            print(f"evaluation skipped: mergemix_dagster.core.evaluation.harness not importable ({e})")
        else:
            t = time.perf_counter()
            evaluator = Evaluator(DEFAULT_TASKS, batch_size=args.batch_size, limit=args.eval_limit)
            print(f"Evaluator({[s.name for s in DEFAULT_TASKS]}, batch_size={args.batch_size}, "
                  f"limit={args.eval_limit}) built in {time.perf_counter() - t:.1f}s")

    def evaluate(model, tok):
        if evaluator is None:
            return None, 0.0
        t = time.perf_counter()
        scores = evaluator.evaluate(model, tok)
        return [(s.task, s.value) for s in scores], time.perf_counter() - t

    # warm-up (imports, lm-eval first call, page cache) on the base: not counted
    model, tok = load_checkpoint(base_dir)
    evaluate(model, tok)
    del model

    # ---- in memory: one load, re-merge per candidate ----
    t0 = time.perf_counter()
    model, tok = load_checkpoint(base_dir)
    merger = InMemoryMerger(model, load_state_dict(base_dir), {d: load_state_dict(expert_dirs[d]) for d in domains},
                            base_config=read_config(base_dir), expert_configs={d: read_config(expert_dirs[d]) for d in domains})
    setup_s = time.perf_counter() - t0
    mem_switch, mem_eval, mem_scores, mem_weights = [], [], [], []
    for mix in cands:
        t = time.perf_counter()
        merger.apply(mix)
        mem_switch.append(time.perf_counter() - t)
        scores, e = evaluate(model, tok)
        mem_eval.append(e)
        mem_scores.append(scores)
        mem_weights.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    mem_total = time.perf_counter() - t0
    del merger, model

    # ---- reload: streaming merge to disk + load per candidate ----
    run_dir = workdir / "cand-runs"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    re_merge, re_load, re_eval, mismatched_w, mismatched_s = [], [], [], 0, 0
    t0 = time.perf_counter()
    for i, mix in enumerate(cands):
        out = run_dir / f"cand{i:03d}"
        t = time.perf_counter()
        merge_checkpoints(base_dir, expert_dirs, mix, out)
        t1 = time.perf_counter()
        model, tok2 = load_checkpoint(out)
        t2 = time.perf_counter()
        re_merge.append(t1 - t)
        re_load.append(t2 - t1)
        scores, e = evaluate(model, tok2)
        re_eval.append(e)
        sd = model.state_dict()
        if any(not torch.equal(sd[k], v) for k, v in mem_weights[i].items()):
            mismatched_w += 1
        if scores != mem_scores[i]:
            mismatched_s += 1
        del model
        shutil.rmtree(out)
    re_total = time.perf_counter() - t0
    shutil.rmtree(run_dir, ignore_errors=True)

    n_params = sum(v.numel() for k, v in mem_weights[0].items() if k != "lm_head.weight")
    re_switch = [a + b for a, b in zip(re_merge, re_load)]
    print(f"\nN={args.candidates} candidates, K={args.experts} experts, model {n_params / 1e6:.2f}M params, "
          f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs")
    print("\n[in memory]  one load + InMemoryMerger, then merger.apply(α) per candidate")
    print(f"  setup (load model + K+1 state dicts + merger, once): {setup_s * 1e3:.0f} ms")
    print(f"  switch per candidate  {summary(mem_switch)}")
    if evaluator:
        print(f"  eval per candidate    {summary(mem_eval)}")
    print(f"  total for {args.candidates}: {mem_total:.1f} s")
    print("\n[reload]     merge_checkpoints to disk + load_checkpoint per candidate")
    print(f"  merge to disk         {summary(re_merge)}")
    print(f"  load_checkpoint       {summary(re_load)}")
    print(f"  switch per candidate  {summary(re_switch)}")
    if evaluator:
        print(f"  eval per candidate    {summary(re_eval)}")
    print(f"  total for {args.candidates}: {re_total:.1f} s")
    sw_mem, sw_re = statistics.median(mem_switch), statistics.median(re_switch)
    print(f"\nswitch: in-memory is {sw_re / sw_mem:.0f}x faster than reload (median)")
    if evaluator:
        ev = statistics.median(mem_eval)
        print(f"switch / evaluation: in memory {sw_mem / ev:.4f}, reload {sw_re / ev:.3f}  (median switch over median eval)")
        print(f"scores identical on both paths: {args.candidates - mismatched_s}/{args.candidates}")
    print(f"weights bit-identical on both paths: {args.candidates - mismatched_w}/{args.candidates}")
    if args.json:
        args.json.write_text(json.dumps({
            "args": {k: str(v) for k, v in vars(args).items()}, "params": n_params, "setup_s": setup_s,
            "mem_switch_s": mem_switch, "mem_eval_s": mem_eval, "mem_total_s": mem_total,
            "reload_merge_s": re_merge, "reload_load_s": re_load, "reload_eval_s": re_eval, "reload_total_s": re_total,
            "weights_mismatched": mismatched_w, "scores_mismatched": mismatched_s}, indent=2))
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
