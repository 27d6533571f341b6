"""Merge checkpoint directories tensor by tensor, without building a model.

``merge_checkpoints`` reads the base and every expert with ``safetensors.safe_open`` (sharded or
not), checks names/shapes/dtypes from the file headers and the architecture from ``config.json``
before reading any weight, then, for one parameter at a time, loads the K + 1 input tensors,
merges them with the same ``MergeMethod.merge_tensor`` as the in-memory paths and writes the
result straight into the output file. The safetensors header (names, dtypes, shapes, offsets) is
known up front from the base, so the output is written sequentially: peak memory is the inputs
of one parameter plus its merged tensor, whatever the model size.

Output: a Hugging Face checkpoint directory (``model.safetensors`` or
``model-0000i-of-0000N.safetensors`` shards + ``model.safetensors.index.json``) with every other
file of the base directory (``config.json``, generation config, tokenizer files) copied. It is
written to a temporary sibling and renamed into place, so an interrupted merge leaves nothing at
``output_dir``. Tied ``lm_head.weight`` is not in saved checkpoints and is not written either.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import CheckpointMismatchError, ConfigError
from ..mixture import Mixture
from ..model import CheckpointExistsError
from .base import canonical_domains, get_method
from .checks import TIED_KEYS, check_configs, check_finite_tensor, check_structure, tied_config

SAFETENSORS_INDEX = "model.safetensors.index.json"

_DTYPE_CODES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def parse_size(size: str | int) -> int:
    """``"2GB"`` → 2·10⁹ bytes; also KB/MB/GB/TB, KiB/MiB/GiB, or a plain int."""
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B)?\s*", str(size).upper())
    if not m:
        raise ConfigError(f"cannot parse size {size!r} (use e.g. '2GB', '500MB')")
    unit = m.group(2) or "B"
    power = "BKMGT".index(unit[0])
    base = 1024 if "I" in unit else 1000
    return int(float(m.group(1)) * base**power)


def _weight_files(directory: Path) -> list[Path]:
    index = directory / SAFETENSORS_INDEX
    if index.exists():
        return [directory / f for f in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise CheckpointMismatchError(f"no safetensors weights in {directory}")
    return files


class _Reader:
    """All tensors of one checkpoint directory, opened lazily with ``safe_open``."""

    def __init__(self, directory: Path, stack: ExitStack):
        from safetensors import safe_open

        self.directory = Path(directory)
        self.where: dict[str, Any] = {}
        self.desc: dict[str, tuple[tuple[int, ...], str]] = {}
        for path in _weight_files(self.directory):
            handle = stack.enter_context(safe_open(str(path), framework="pt", device="cpu"))
            for key in handle.keys():
                sl = handle.get_slice(key)
                self.where[key] = handle
                self.desc[key] = (tuple(sl.get_shape()), sl.get_dtype())

    def get(self, key: str) -> torch.Tensor:
        return self.where[key].get_tensor(key)

    def config(self) -> dict | None:
        path = self.directory / "config.json"
        return json.loads(path.read_text()) if path.exists() else None


def _write_safetensors(path: Path, keys: list[str], desc: Mapping, produce) -> None:
    """Write a safetensors file whose tensors come one at a time from ``produce(key)``."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for key in keys:
        shape, dtype = desc[key]
        nbytes = int(torch.Size(shape).numel()) * torch.empty((), dtype=dtype).element_size()
        header[key] = {"dtype": _DTYPE_CODES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(len(blob).to_bytes(8, "little"))
        f.write(blob)
        for key in keys:
            t = produce(key)
            shape, dtype = desc[key]
            if tuple(t.shape) != tuple(shape) or t.dtype != dtype:
                raise CheckpointMismatchError(f"merged {key!r} is {t.dtype}{tuple(t.shape)}, expected {dtype}{shape}")
            f.write(t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())


def merge_checkpoints(
    base_dir: str | Path,
    expert_dirs: Mapping[str, str | Path],
    mixture: Mixture,
    output_dir: str | Path,
    method: str = "linear",
    max_shard_size: str | int = "2GB",
    check_finite: bool = True,
    **options: Any,
) -> Path:
    """Write the merge of ``expert_dirs`` (domain → checkpoint dir) at ``mixture`` to ``output_dir``.

    Same checks and the same per-tensor arithmetic as ``merge_state_dicts``. Refuses to overwrite
    an existing ``output_dir`` (``CheckpointExistsError``: a ``StoreError`` and a
    ``FileExistsError``). Returns ``output_dir``.
    """
    base_dir, output_dir = Path(base_dir), Path(output_dir)
    domains = canonical_domains(mixture.domains, list(expert_dirs))
    merger = get_method(method, **options)
    weights = [mixture[d] for d in domains]
    if output_dir.exists():
        raise CheckpointExistsError(f"refusing to overwrite existing directory {output_dir}")

    with ExitStack() as stack:
        base = _Reader(base_dir, stack)
        experts = {d: _Reader(Path(expert_dirs[d]), stack) for d in domains}
        base_config = base.config()
        expert_configs = {d: r.config() for d, r in experts.items()}
        check_configs(base_config, expert_configs)
        optional = TIED_KEYS if tied_config(base_config, *expert_configs.values()) else frozenset()
        check_structure(base.desc, {d: r.desc for d, r in experts.items()}, optional)

        keys = [k for k in base.desc if all(k in r.desc for r in experts.values())]
        out_desc = {}
        for k in keys:
            shape, code = base.desc[k]
            dtype = next((t for t, c in _DTYPE_CODES.items() if c == code), None)
            if dtype is None:
                raise CheckpointMismatchError(f"base parameter {k!r} has unsupported dtype {code}")
            out_desc[k] = (shape, dtype)

        # plan shards greedily in key order
        limit = parse_size(max_shard_size)
        shards: list[list[str]] = [[]]
        size = 0
        for k in keys:
            shape, dtype = out_desc[k]
            nbytes = int(torch.Size(shape).numel()) * torch.empty((), dtype=dtype).element_size()
            if shards[-1] and size + nbytes > limit:
                shards.append([])
                size = 0
            shards[-1].append(k)
            size += nbytes

        def produce(key: str) -> torch.Tensor:
            b = base.get(key)
            ex = [experts[d].get(key) for d in domains]
            if check_finite:
                check_finite_tensor("base", key, b)
                for d, t in zip(domains, ex):
                    check_finite_tensor(f"expert {d!r}", key, t)
            if not b.is_floating_point():
                return b
            return merger.merge_tensor(key, b, ex, weights, keys=domains)

        output_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = output_dir.parent / f".{output_dir.name}.tmp-{uuid.uuid4().hex[:12]}"
        tmp.mkdir()
        try:
            n = len(shards)
            weight_map: dict[str, str] = {}
            total = 0
            for i, shard in enumerate(shards, start=1):
                fname = "model.safetensors" if n == 1 else f"model-{i:05d}-of-{n:05d}.safetensors"
                _write_safetensors(tmp / fname, shard, out_desc, produce)
                for k in shard:
                    weight_map[k] = fname
                    shape, dtype = out_desc[k]
                    total += int(torch.Size(shape).numel()) * torch.empty((), dtype=dtype).element_size()
            if n > 1:
                index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
                (tmp / SAFETENSORS_INDEX).write_text(json.dumps(index, indent=2))
            for item in sorted(base_dir.iterdir()):
                if item.is_file() and not item.name.endswith(".safetensors") and item.name != SAFETENSORS_INDEX:
                    shutil.copy2(item, tmp / item.name)
            if output_dir.exists():
                raise CheckpointExistsError(f"refusing to overwrite existing directory {output_dir}")
            os.rename(tmp, output_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return output_dir
