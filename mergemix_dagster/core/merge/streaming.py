"""Merge checkpoint directories without building a model, at close to memory speed.

``merge_checkpoints`` parses the safetensors headers of the base and of every expert (sharded or
not), checks names/shapes/dtypes from those headers and the architecture from ``config.json``
before reading any weight, then writes the merged checkpoint shard by shard. The output
safetensors header (names, dtypes, shapes, offsets) is known up front from the base, so every
shard file is created at its final size (header first, space preallocated) and each merged piece
is written at its final offset.

Two ways through a tensor, both with the per-element arithmetic of the in-memory paths, so
streamed and in-memory merges are bit-identical:

- **blocked** (methods with ``elementwise = True``: ``linear``): the tensor is processed in
  blocks of ``block_elements`` elements (default 64 Ki). For each block, the K + 1 inputs are
  read with ``pread`` straight into small reused buffers (converted to float32 for fp16/bf16),
  merged by the method's ``combine_block`` into another reused buffer, and written at their
  offset with ``pwrite``. No tensor is ever materialised: the working set is (K + 4) blocks
  (about 2 MB for K = 4, fp32), whatever the model size, and stays in the CPU's L2 cache.
  Reading with ``pread`` (one page-cache copy) beats mapping the inputs with ``mmap`` (page
  faults on every 64 KiB); writing from a cache-resident buffer with ``pwrite`` beats writing
  through a shared ``mmap`` of the output (a zero-filled page fault per 4 KiB).
- **whole tensor** (``ties``: top-k trimming needs the whole tensor; ``dare``: its seeded mask
  is drawn over the whole tensor): the base tensor is read, then ``prepare`` reads the experts'
  tensors one at a time (each checked, used and dropped) into the method's (K, *shape) float32
  form, ``combine`` (which works in chunks) gives the merged tensor, which is written. Peak
  memory is about base + one expert + K float32 task vectors + the method's temporaries for one
  tensor (measured ~9-12 × the largest tensor for K = 4, fp32): bounded by the largest tensor,
  not by the model, but not "a few tensors".

Finite check (``check_finite``): in the blocked path, one sum over the K + 1 input blocks per
block (NaN/inf cannot cancel in a sum, so a finite sum proves every element finite); a non-finite
sum is resolved by the exact per-tensor check, which raises the same named
``NonFiniteWeightsError`` as the other paths (a finite input whose sum overflows passes).

Writeback: on Linux the kernel is asked (``sync_file_range(SYNC_FILE_RANGE_WRITE)``) to start
writing each 32 MB of output to disk as soon as it is written, so the disk works while the merge
computes, dirty pages do not pile up, and a later ``fsync`` finds little left to do. The call
only starts writeback; it does not wait, and ``merge_checkpoints`` itself does not ``fsync``.

Output: a Hugging Face checkpoint directory (``model.safetensors`` or
``model-0000i-of-0000N.safetensors`` shards + ``model.safetensors.index.json``) with every other
file of the base directory (``config.json``, generation config, tokenizer files) copied. It is
written to a temporary sibling and renamed into place, so an interrupted merge leaves nothing at
``output_dir``. Tied ``lm_head.weight`` is not in saved checkpoints and is not written either.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from collections import abc
from typing import Any, Callable, Mapping, Sequence

import torch

from mergemix_dagster.core.errors import CheckpointMismatchError, ConfigError
from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.training.model import CheckpointExistsError, atomic_directory
from mergemix_dagster.core.merge.registry import MergeMethod, canonical_domains, compute_dtype, get_method
from mergemix_dagster.core.merge.compatibility import TIED_KEYS, check_configs, check_finite_tensor, check_structure, tied_config

SAFETENSORS_INDEX = "model.safetensors.index.json"

#: elements per block in the blocked path: (K + 4) blocks of fp32 stay in a 1–2 MB L2 cache
BLOCK_ELEMENTS = 1 << 16
#: start writeback of the output every this many bytes (Linux ``sync_file_range``)
WRITEBACK_BYTES = 32 << 20
#: chunk for plain byte copies (non-floating tensors)
COPY_BYTES = 8 << 20

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
_CODE_DTYPES = {code: dtype for dtype, code in _DTYPE_CODES.items()}
_ITEMSIZE = {dtype: torch.empty((), dtype=dtype).element_size() for dtype in _DTYPE_CODES}


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


# ---- Linux helpers (optional: everything works without them) ---------------------------------

_SYNC_FILE_RANGE_WRITE = 2


def _libc_function(name: str, argtypes: list) -> Callable | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes = argtypes
    fn.restype = ctypes.c_int
    return fn


# int sync_file_range(int fd, off64_t offset, off64_t nbytes, unsigned int flags)
_sync_file_range = _libc_function("sync_file_range", [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint])
# int fallocate(int fd, int mode, off_t offset, off_t len): no slow emulation, unlike posix_fallocate
_fallocate = _libc_function("fallocate", [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64])


def _preallocate(fd: int, nbytes: int) -> None:
    """Reserve the file's blocks up front (faster page-cache writes on ext4/xfs); a hint only."""
    if _fallocate is not None and nbytes > 0:
        _fallocate(fd, 0, 0, nbytes)  # failure (e.g. unsupported filesystem) is harmless


def _start_writeback(fd: int, offset: int, nbytes: int) -> None:
    if _sync_file_range is not None and nbytes > 0:
        _sync_file_range(fd, offset, nbytes, _SYNC_FILE_RANGE_WRITE)


def _pread_into(fd: int, view: memoryview, offset: int, what: str) -> None:
    """Fill ``view`` (bytes) from ``fd`` at ``offset``; ``CheckpointMismatchError`` on a short file."""
    done, n = 0, len(view)
    while done < n:
        got = os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            raise CheckpointMismatchError(f"{what}: file ends {n - done} bytes early (truncated checkpoint?)")
        done += got


def _pwrite_all(fd: int, view: memoryview | bytes, offset: int) -> None:
    view = memoryview(view)
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)


def _byte_view(t: torch.Tensor) -> memoryview:
    """A writable byte memoryview of contiguous CPU tensor ``t`` (any dtype, bf16 included)."""
    return memoryview(t.reshape(-1).view(torch.uint8).numpy()).cast("B")


# ---- input checkpoints ------------------------------------------------------------------------


def _weight_files(directory: Path) -> list[Path]:
    index = directory / SAFETENSORS_INDEX
    if index.exists():
        return [directory / f for f in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise CheckpointMismatchError(f"no safetensors weights in {directory}")
    return files


@dataclass(frozen=True)
class _Entry:
    """Where one tensor's bytes are: file descriptor, absolute offset, size."""

    path: Path
    fd: int
    offset: int
    nbytes: int
    shape: tuple[int, ...]
    code: str
    dtype: torch.dtype | None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


class _Checkpoint:
    """The tensors of one checkpoint directory, located from the safetensors headers.

    Headers are parsed directly (8-byte little-endian length + JSON); tensor bytes are read with
    ``pread`` on demand. Keys are ordered by file, then by position in the file, so reading in
    key order is sequential.
    """

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.fds: list[int] = []
        self.entries: dict[str, _Entry] = {}
        try:
            for path in _weight_files(self.directory):
                self._open(path)
        except BaseException:
            self.close()
            raise
        self.desc = {k: (e.shape, e.code) for k, e in self.entries.items()}

    def _open(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self.fds.append(fd)
        if hasattr(os, "posix_fadvise"):
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            except OSError:
                pass
        size = os.fstat(fd).st_size
        head = bytearray(8)
        _pread_into(fd, memoryview(head), 0, str(path))
        n = int.from_bytes(head, "little")
        if n <= 0 or 8 + n > size:
            raise CheckpointMismatchError(f"{path} is not a safetensors file (header length {n}, file size {size})")
        raw = bytearray(n)
        _pread_into(fd, memoryview(raw), 8, str(path))
        try:
            header = json.loads(raw)
        except ValueError as e:
            raise CheckpointMismatchError(f"{path}: unreadable safetensors header ({e})") from e
        start = 8 + n
        found = []
        for key, info in header.items():
            if key == "__metadata__":
                continue
            try:
                code, shape, (a, b) = info["dtype"], tuple(int(x) for x in info["shape"]), info["data_offsets"]
            except (KeyError, TypeError, ValueError) as e:
                raise CheckpointMismatchError(f"{path}: bad header entry for {key!r}") from e
            if key in self.entries:
                raise CheckpointMismatchError(f"{self.directory}: parameter {key!r} is in two weight files")
            dtype = _CODE_DTYPES.get(code)
            if dtype is not None and b - a != math.prod(shape) * _ITEMSIZE[dtype]:
                raise CheckpointMismatchError(
                    f"{path}: {key!r} has {b - a} bytes, expected {math.prod(shape) * _ITEMSIZE[dtype]} for {code}{shape}"
                )
            if not 0 <= a <= b or start + b > size:
                raise CheckpointMismatchError(f"{path}: {key!r} lies outside the file (truncated checkpoint?)")
            found.append((a, key, _Entry(path, fd, start + a, b - a, shape, code, dtype)))
        for _, key, entry in sorted(found, key=lambda x: (x[0], x[1])):
            self.entries[key] = entry

    def tensor(self, key: str) -> torch.Tensor:
        """The whole tensor ``key``, read into fresh memory."""
        e = self.entries[key]
        if e.dtype is None:
            raise CheckpointMismatchError(f"{e.path}: parameter {key!r} has unsupported dtype {e.code}")
        t = torch.empty(e.shape, dtype=e.dtype)
        if e.nbytes:
            _pread_into(e.fd, _byte_view(t), e.offset, f"{e.path}: {key!r}")
        return t

    def config(self) -> dict | None:
        path = self.directory / "config.json"
        return json.loads(path.read_text()) if path.exists() else None

    def close(self) -> None:
        while self.fds:
            os.close(self.fds.pop())


# ---- output shards ----------------------------------------------------------------------------


class _ShardWriter:
    """One output safetensors file, created at its final size; tensors written at their offsets."""

    def __init__(self, path: Path, keys: Sequence[str], desc: Mapping[str, tuple[tuple[int, ...], torch.dtype]]):
        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        offset = 0
        spans = {}
        for key in keys:
            shape, dtype = desc[key]
            nbytes = math.prod(shape) * _ITEMSIZE[dtype]
            header[key] = {"dtype": _DTYPE_CODES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            spans[key] = offset
            offset += nbytes
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)
        start = 8 + len(blob)
        self.path = path
        self.size = start + offset
        self.offsets = {k: start + o for k, o in spans.items()}
        self._flushed = 0
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
        _preallocate(self.fd, self.size)
        _pwrite_all(self.fd, len(blob).to_bytes(8, "little") + blob, 0)

    def write(self, offset: int, data: memoryview) -> None:
        step = WRITEBACK_BYTES // 4  # whole tensors go in pieces, so writeback starts between them
        for start in range(0, len(data), step):
            piece = data[start : start + step]
            _pwrite_all(self.fd, piece, offset + start)
            end = offset + start + len(piece)
            if end - self._flushed >= WRITEBACK_BYTES:
                _start_writeback(self.fd, self._flushed, end - self._flushed)
                self._flushed = end

    def close(self) -> None:
        if self.fd < 0:
            return
        try:
            if os.fstat(self.fd).st_size != self.size:  # only if a tensor was never written
                os.ftruncate(self.fd, self.size)
            _start_writeback(self.fd, self._flushed, self.size - self._flushed)
        finally:
            os.close(self.fd)
            self.fd = -1


# ---- the two ways through a tensor ------------------------------------------------------------


class _Blocks:
    """Reused block buffers for K + 1 inputs of one storage dtype, computed in ``compute_dtype``."""

    def __init__(self, n_inputs: int, block: int, storage: torch.dtype):
        self.block = block
        self.storage = storage
        self.compute = compute_dtype(torch.empty((), dtype=storage))
        self.itemsize = _ITEMSIZE[storage]
        self.stage = torch.empty((n_inputs, block), dtype=storage)  # what pread fills
        self.convert = self.compute != storage
        self.inputs = torch.empty((n_inputs, block), dtype=self.compute) if self.convert else self.stage
        self.out = torch.empty(block, dtype=self.compute)
        self.out_store = torch.empty(block, dtype=storage) if self.convert else self.out
        self.stage_bytes = [_byte_view(row) for row in self.stage]
        self.out_bytes = _byte_view(self.out_store)
        self.full = self.views(block)

    def views(self, m: int):
        """(all inputs (K+1, m), base (m,), experts (K, m), staged inputs, out, out in storage dtype)."""
        inputs = self.inputs[:, :m] if m < self.block else self.inputs
        return inputs, inputs[0], inputs[1:], self.stage[:, :m], self.out[:m], self.out_store[:m]


def _merge_blocked(
    key: str,
    method: MergeMethod,
    weights: Sequence[float],
    entries: Sequence[_Entry],
    blocks: _Blocks,
    writer: _ShardWriter,
    check_finite: bool,
    exact_check: Callable[[str], None],
) -> None:
    """Merge tensor ``key`` block by block: pread K + 1 blocks → ``combine_block`` → pwrite."""
    n, size, bsz = entries[0].numel, blocks.itemsize, blocks.block
    dest = writer.offsets[key]
    n_blocks = -(-n // bsz)
    sums = torch.empty(n_blocks, dtype=blocks.compute) if check_finite else None
    check_output = check_finite and method.nonfinite_propagates(weights)
    reads = [(e.fd, e.offset, row, e) for e, row in zip(entries, blocks.stage_bytes)]
    preadv = os.preadv
    for j in range(n_blocks):
        start = j * bsz
        m = min(bsz, n - start)
        nbytes = m * size
        pos = start * size
        for fd, offset, row, e in reads:
            view = row[:nbytes]
            if preadv(fd, [view], offset + pos) != nbytes:  # a short read: finish it, or name the file
                _pread_into(fd, view, offset + pos, f"{e.path}: {key!r}")
        inputs, base, experts, stage, out, out_store = blocks.full if m == bsz else blocks.views(m)
        if blocks.convert:
            inputs.copy_(stage)
        if sums is not None and not check_output:
            torch.sum(inputs, (0, 1), out=sums[j])  # before combine_block, which may overwrite experts
        method.combine_block(base, experts, weights, out)
        if check_output:
            torch.sum(out, 0, out=sums[j])
        if blocks.convert:
            out_store.copy_(out)
        writer.write(dest + pos, blocks.out_bytes[:nbytes])
    if sums is not None and not bool(torch.isfinite(sums).all()):
        exact_check(key)  # raises NonFiniteWeightsError by name; passes if a finite sum overflowed


class _LazyExperts(abc.Sequence):
    """The experts' tensors ``key``, each read from disk (and finite-checked) when accessed, not kept."""

    def __init__(self, experts: Mapping[str, _Checkpoint], domains: Sequence[str], key: str, check_finite: bool):
        self.experts, self.domains, self.key, self.check_finite = experts, list(domains), key, check_finite

    def __len__(self) -> int:
        return len(self.domains)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        d = self.domains[i]
        t = self.experts[d].tensor(self.key)
        if self.check_finite:
            check_finite_tensor(f"expert {d!r}", self.key, t)
        return t


def _copy_bytes(entry: _Entry, writer: _ShardWriter, key: str) -> None:
    buf = bytearray(min(COPY_BYTES, entry.nbytes))
    view = memoryview(buf)
    dest = writer.offsets[key]
    for start in range(0, entry.nbytes, COPY_BYTES):
        n = min(COPY_BYTES, entry.nbytes - start)
        _pread_into(entry.fd, view[:n], entry.offset + start, f"{entry.path}: {key!r}")
        writer.write(dest + start, view[:n])


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

    opened: list[_Checkpoint] = []
    try:
        base = _Checkpoint(base_dir)
        opened.append(base)
        experts = {}
        for d in domains:
            experts[d] = _Checkpoint(Path(expert_dirs[d]))
            opened.append(experts[d])
        return _merge(base, experts, domains, merger, weights, output_dir, base_dir, max_shard_size,
                      check_finite, int(block_elements))
    finally:
        for c in opened:
            c.close()


def _merge(
    base: _Checkpoint,
    experts: Mapping[str, _Checkpoint],
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
    buffers: dict[torch.dtype, _Blocks] = {}

    def write_tensor(key: str, writer: _ShardWriter) -> None:
        entries = [base.entries[key], *(experts[d].entries[key] for d in domains)]
        dtype = entries[0].dtype
        if entries[0].nbytes == 0:
            return
        if not dtype.is_floating_point:
            _copy_bytes(entries[0], writer, key)
            return
        if blocked:
            if dtype not in buffers:
                buffers[dtype] = _Blocks(len(entries), block_elements, dtype)
            _merge_blocked(key, merger, weights, entries, buffers[dtype], writer, check_finite, exact_check)
            return
        b = base.tensor(key)
        if check_finite:
            check_finite_tensor("base", key, b)
        # the experts are read (and checked) one at a time as ``prepare`` walks them, and dropped
        # after: only the base and the method's prepared form stay for ``combine``
        prepared = merger.prepare(key, b, _LazyExperts(experts, domains, key, check_finite), keys=domains)
        t = merger.combine(key, b, prepared, weights)
        del b, prepared
        if tuple(t.shape) != tuple(out_desc[key][0]) or t.dtype != dtype:
            raise CheckpointMismatchError(f"merged {key!r} is {t.dtype}{tuple(t.shape)}, expected {dtype}{out_desc[key][0]}")
        writer.write(writer.offsets[key], _byte_view(t.detach().to("cpu").contiguous()))

    with atomic_directory(output_dir) as tmp:
        n = len(shards)
        weight_map: dict[str, str] = {}
        total = 0
        for i, shard in enumerate(shards, start=1):
            fname = "model.safetensors" if n == 1 else f"model-{i:05d}-of-{n:05d}.safetensors"
            writer = _ShardWriter(tmp / fname, shard, out_desc)
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
