"""``mergemix-train``: the project's training loop as a command, for ``torchrun`` and Dagster Pipes.

    torchrun --nproc_per_node 8 -m mergemix_dagster.core.training.ddp \\
        --init /ckpt/base --mixture mixture.json --tokens 5000000000 --lr 1e-5 --schedule constant --out /ckpt/expert

It follows the command contract of docs/cluster.md, so it can itself be the ``command`` trainer. With
``WORLD_SIZE > 1`` it starts a process group (nccl on CUDA, gloo on CPU) and ``core.training.loop.train`` runs
data-parallel (DDP; with ``--fsdp`` FSDP2 shards the model over the ranks); the loop is the one the
in-process trainer runs. Rank 0 saves the train state every
``--save-every`` steps under ``--state-dir`` (default: next to ``--out``); rerunning the same command after
a kill resumes from it. Rank 0 writes ``--out`` (HF safetensors + the base's tokenizer).

Under Dagster Pipes (``PipesSubprocessClient`` and friends set the environment) rank 0 sends its progress
lines to the Dagster event log and reports the final metrics as the asset's materialization metadata. The
``dagster_pipes`` package is the small, dependency-free protocol library, not the Dagster framework.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import nullcontext
from dataclasses import asdict, fields
from pathlib import Path

import torch
import torch.distributed as dist

from mergemix_dagster.core.data.corpora import load_documents, tokenize_documents
from mergemix_dagster.core.errors import ConfigError, MergeMixError
from mergemix_dagster.core.training.mixture_file import MixtureFile, read_mixture_file
from mergemix_dagster.core.training.model import load_checkpoint, save_checkpoint
from mergemix_dagster.core.training.loop import TrainProgress, TrainRecipe, train

#: command-line flag -> TrainRecipe field (flags the contract's placeholders use, then the rest)
FLAG_FIELDS = {
    "tokens": "tokens", "lr": "learning_rate", "schedule": "schedule", "seq_len": "seq_len",
    "batch_size": "batch_size", "grad_accum": "grad_accum_steps", "seed": "seed", "warmup_steps": "warmup_steps",
    "weight_decay": "weight_decay", "grad_clip": "grad_clip", "device": "device", "precision": "precision",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mergemix-train", description=__doc__.split("\n")[0])
    p.add_argument("--init", required=True, help="HF checkpoint directory to start from")
    p.add_argument("--mixture", required=True, help="mixture file (docs/cluster.md): weights, data paths, recipe")
    p.add_argument("--out", required=True, help="directory to write the trained HF checkpoint to")
    types = {f.name: f.type for f in fields(TrainRecipe)}
    for flag, name in FLAG_FIELDS.items():
        kind = {"int": int, "float": float}.get(str(types[name]), str)
        p.add_argument(f"--{flag.replace('_', '-')}", dest=flag, type=kind, default=None,
                       help=f"recipe {name} (default: the mixture file's recipe)")
    p.add_argument("--save-every", type=int, default=0, help="save the train state every N steps (0: at the end)")
    p.add_argument("--state-dir", default="", help="where the train state lives (default: <out>.state)")
    p.add_argument("--fsdp", action="store_true",
                   help="shard parameters, gradients and optimiser state over the ranks (FSDP2 fully_shard per "
                   "decoder layer) instead of replicating the model (DDP); no resumable train state")
    return p


def recipe_for(spec: MixtureFile, args: argparse.Namespace) -> TrainRecipe:
    """The mixture file's recipe, overridden by the flags given on the command line."""
    values = {k: v for k, v in spec.recipe.items() if k in {f.name for f in fields(TrainRecipe)}}
    values |= {name: getattr(args, flag) for flag, name in FLAG_FIELDS.items() if getattr(args, flag) is not None}
    return TrainRecipe(**values)


def token_streams(spec: MixtureFile, tokenizer) -> dict:
    """domain -> flat token stream of its documents (domains with weight only)."""
    return {
        d: tokenize_documents(load_documents(spec.paths[d], spec.text_field.get(d, "text")), tokenizer)
        for d, w in spec.weights.items()
        if w > 0
    }


def start_process_group() -> tuple[int, int, str]:
    """(rank, world size, device) from torchrun's environment; a process group only when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = "cpu"
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if world > 1:
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return rank, world, device


def shard_model(model: torch.nn.Module, device: str) -> torch.nn.Module:
    """FSDP2: ``fully_shard`` each decoder layer (HF's ``_no_split_modules`` classes), then the whole model
    (embeddings, final norm, head: tied weights stay in one group). Parameters become DTensor shards."""
    from torch.distributed.fsdp import fully_shard

    model.to(device)
    layer_classes = set(getattr(model, "_no_split_modules", None) or [])
    for module in model.modules():
        if type(module).__name__ in layer_classes:
            fully_shard(module)
    fully_shard(model)
    return model


def gathered_state(model: torch.nn.Module) -> dict:
    """The full (unsharded) weights on CPU; every rank must call it (rank 0 gets them, the others nothing)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _pipes(rank: int):
    """Dagster Pipes on rank 0 when launched by a Pipes client; otherwise nothing."""
    if rank != 0:
        return nullcontext(None)
    from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

    return open_dagster_pipes() if PipesEnvVarParamsLoader().is_dagster_pipes_process() else nullcontext(None)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rank, world, device = start_process_group()
    try:
        with _pipes(rank) as pipes:
            say = pipes.log.info if pipes is not None else (lambda m: print(m, flush=True) if rank == 0 else None)
            spec = read_mixture_file(Path(args.mixture))
            recipe = recipe_for(spec, args)
            if recipe.device == "auto":
                recipe = TrainRecipe(**(asdict(recipe) | {"device": device}))
            model, tokenizer = load_checkpoint(args.init)
            streams = token_streams(spec, tokenizer)
            out = Path(args.out)
            state_dir = Path(args.state_dir) if args.state_dir else out.parent / f".{out.name}.state"
            fsdp = args.fsdp and world > 1
            if fsdp:
                if args.save_every:
                    raise ConfigError("--fsdp saves no resumable train state: drop --save-every")
                model = shard_model(model, recipe.device)
            say(f"training {recipe.tokens:,} tokens on {spec.mixture.label()} with {world} rank(s)"
                f"{' (FSDP)' if fsdp else ''}, {recipe.steps} steps of {recipe.tokens_per_step:,} tokens")

            def log(p: TrainProgress) -> None:
                say(p.line())

            report = train(model, streams, spec.mixture, recipe, on_log=log, state_dir=None if fsdp else state_dir,
                           save_every=args.save_every)
            if fsdp:  # gather the shards; rank 0 saves them through a plain copy of the model
                full = gathered_state(model)
                model = load_checkpoint(args.init)[0] if rank == 0 else model
                if rank == 0:
                    model.load_state_dict(full)
            if report.resumed_from_step:
                say(f"resumed from step {report.resumed_from_step} saved in {state_dir}")
            metrics = {
                "tokens": report.tokens, "steps": report.steps, "final_loss": report.final_loss,
                "train_seconds": report.seconds, "tokens_per_second": report.tokens_per_second,
                "world_size": report.world_size, "resumed_from_step": report.resumed_from_step,
            }
            if rank == 0:
                save_checkpoint(model.to("cpu"), tokenizer, out)
                state_dir.mkdir(parents=True, exist_ok=True)
                (state_dir / "report.json").write_text(json.dumps(metrics | {"losses": report.losses}))
                say(f"wrote {out}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                  for k, v in metrics.items()))
                if pipes is not None:
                    pipes.report_asset_materialization(metadata=metrics)
    except MergeMixError as exc:
        print(f"mergemix-train: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
