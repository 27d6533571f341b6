"""``merge_checkpoints``: check the inputs from their headers, plan the shards, and send every tensor down the
blocked path, the whole-tensor path, or a plain byte copy; the output directory appears only when complete."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from mergemix_dagster.core.errors import CheckpointMismatchError, ConfigError
from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.training.model import CheckpointExistsError, atomic_directory
from mergemix_dagster.core.merge.registry import MergeMethod, canonical_domains, get_method
from mergemix_dagster.core.merge.compatibility import TIED_KEYS, check_configs, check_finite_tensor, check_structure, tied_config
from mergemix_dagster.core.merge.streaming.blocked import BLOCK_ELEMENTS, BlockBuffers, merge_blocked
from mergemix_dagster.core.merge.streaming.fileio import byte_view
from mergemix_dagster.core.merge.streaming.reader import SAFETENSORS_INDEX, CheckpointReader, LazyExperts
from mergemix_dagster.core.merge.streaming.writer import ShardWriter, copy_bytes, parse_size


def merge_checkpoints(
    base_dir: str | Path,
    expert_dirs: Mapping[str, str | Path],
    mixture: Mixture,
    output_dir: str | Path,
    method: str = "linear",
    max_shard_size: str | int = "2GB",
    check_finite: bool = True,
    block_elements: int = BLOCK_ELEMENTS,
    **options: Any,
) -> Path:
    """Write the merge of ``expert_dirs`` (domain → checkpoint dir) at ``mixture`` to ``output_dir``.

    Same checks and the same per-element arithmetic as ``merge_state_dicts`` (bit-identical
    results). Elementwise methods (``linear``) are merged in blocks of ``block_elements``
    elements; the others tensor by tensor. Refuses to overwrite an existing ``output_dir``
    (``CheckpointExistsError``: a ``StoreError`` and a ``FileExistsError``). Returns ``output_dir``.
    """
    base_dir, output_dir = Path(base_dir), Path(output_dir)
    domains = canonical_domains(mixture.domains, list(expert_dirs))
    merger = get_method(method, **options)
    weights = [mixture[d] for d in domains]
    if int(block_elements) < 1:
        raise ConfigError(f"block_elements must be a positive integer, got {block_elements}")
    if sys.byteorder != "little":  # tensor bytes are copied as stored: safetensors is little-endian
        raise ConfigError("merge_checkpoints needs a little-endian host (safetensors stores little-endian bytes)")
    if output_dir.exists():
        raise CheckpointExistsError(f"refusing to overwrite existing directory {output_dir}")

    opened: list[CheckpointReader] = []
    try:
        base = CheckpointReader(base_dir)
        opened.append(base)
        experts = {}
        for d in domains:
            experts[d] = CheckpointReader(Path(expert_dirs[d]))
            opened.append(experts[d])
        return _merge(base, experts, domains, merger, weights, output_dir, base_dir, max_shard_size,
                      check_finite, int(block_elements))
    finally:
        for c in opened:
            c.close()


def _merge(
    base: CheckpointReader,
    experts: Mapping[str, CheckpointReader],
    domains: Sequence[str],
    merger: MergeMethod,
    weights: Sequence[float],
    output_dir: Path,
    base_dir: Path,
    max_shard_size: str | int,
    check_finite: bool,
    block_elements: int,
) -> Path:
    base_config = base.config()
    expert_configs = {d: r.config() for d, r in experts.items()}
    check_configs(base_config, expert_configs)
    optional = TIED_KEYS if tied_config(base_config, *expert_configs.values()) else frozenset()
    check_structure(base.desc, {d: r.desc for d, r in experts.items()}, optional)

    keys = [k for k in base.entries if all(k in r.entries for r in experts.values())]
    out_desc = {}
    for k in keys:
        e = base.entries[k]
        if e.dtype is None:
            raise CheckpointMismatchError(f"base parameter {k!r} has unsupported dtype {e.code}")
        out_desc[k] = (e.shape, e.dtype)

    # plan shards greedily in key order
    limit = parse_size(max_shard_size)
    shards: list[list[str]] = [[]]
    size = 0
    for k in keys:
        nbytes = base.entries[k].nbytes
        if shards[-1] and size + nbytes > limit:
            shards.append([])
            size = 0
        shards[-1].append(k)
        size += nbytes

    def exact_check(key: str) -> None:
        """The per-tensor finite check of the other paths (named error: base first, then experts)."""
        check_finite_tensor("base", key, base.tensor(key))
        for d in domains:
            check_finite_tensor(f"expert {d!r}", key, experts[d].tensor(key))

    blocked = bool(getattr(merger, "elementwise", False))
    buffers: dict[torch.dtype, BlockBuffers] = {}

    def write_tensor(key: str, writer: ShardWriter) -> None:
        entries = [base.entries[key], *(experts[d].entries[key] for d in domains)]
        dtype = entries[0].dtype
        if entries[0].nbytes == 0:
            return
        if not dtype.is_floating_point:
            copy_bytes(entries[0], writer, key)
            return
        if blocked:
            if dtype not in buffers:
                buffers[dtype] = BlockBuffers(len(entries), block_elements, dtype)
            merge_blocked(key, merger, weights, entries, buffers[dtype], writer, check_finite, exact_check)
            return
        b = base.tensor(key)
        if check_finite:
            check_finite_tensor("base", key, b)
        # the experts are read (and checked) one at a time as ``prepare`` walks them, and dropped
        # after: only the base and the method's prepared form stay for ``combine``
        prepared = merger.prepare(key, b, LazyExperts(experts, domains, key, check_finite), keys=domains)
        t = merger.combine(key, b, prepared, weights)
        del b, prepared
        if tuple(t.shape) != tuple(out_desc[key][0]) or t.dtype != dtype:
            raise CheckpointMismatchError(f"merged {key!r} is {t.dtype}{tuple(t.shape)}, expected {dtype}{out_desc[key][0]}")
        writer.write(writer.offsets[key], byte_view(t.detach().to("cpu").contiguous()))

    with atomic_directory(output_dir) as tmp:
        n = len(shards)
        weight_map: dict[str, str] = {}
        total = 0
        for i, shard in enumerate(shards, start=1):
            fname = "model.safetensors" if n == 1 else f"model-{i:05d}-of-{n:05d}.safetensors"
            writer = ShardWriter(tmp / fname, shard, out_desc)
            try:
                for k in shard:
                    write_tensor(k, writer)
                    weight_map[k] = fname
                    total += base.entries[k].nbytes
            finally:
                writer.close()
        if n > 1:
            index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
            (tmp / SAFETENSORS_INDEX).write_text(json.dumps(index, indent=2))
        for item in sorted(base_dir.iterdir()):
            if item.is_file() and not item.name.endswith(".safetensors") and item.name != SAFETENSORS_INDEX:
                shutil.copy2(item, tmp / item.name)
    return output_dir
