"""Accept a checkpoint written by someone else's trainer only if it can stand in for an expert of the base.

A team's command writes ``{output}``; before it becomes an expert it must load as a Hugging Face safetensors
checkpoint with the base's architecture, the same parameter names and shapes, and finite weights. A
checkpoint without tokenizer files gets the base's (the command need not copy them).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from mergemix_dagster.core.errors import CheckpointMismatchError, NonFiniteWeightsError, StoreError, TrainerOutputError
from mergemix_dagster.core.merge.compatibility import check_compatible
from mergemix_dagster.core.training.model import load_state_dict, read_config

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt")


def validate_trained_checkpoint(output: Path, base: Path) -> None:
    """Raise ``TrainerOutputError`` (naming the cause) unless ``output`` could be merged with ``base``."""
    output = Path(output)
    if not output.is_dir():
        raise TrainerOutputError(f"the training command wrote no checkpoint directory at {output}")
    try:
        check_compatible(
            load_state_dict(base),
            {"trained": load_state_dict(output)},
            base_config=read_config(base),
            expert_configs={"trained": read_config(output)},
        )
    except (StoreError, CheckpointMismatchError, NonFiniteWeightsError) as exc:
        raise TrainerOutputError(f"rejected the checkpoint at {output}: {type(exc).__name__}: {exc}") from exc


def add_base_tokenizer(output: Path, base: Path) -> list[str]:
    """Copy the base's tokenizer files into ``output`` when it has none; returns the names copied."""
    output, base = Path(output), Path(base)
    if any((output / name).exists() for name in TOKENIZER_FILES):
        return []
    copied = [name for name in TOKENIZER_FILES if (base / name).exists()]
    for name in copied:
        shutil.copy2(base / name, output / name)
    return copied
