"""The input checkpoints, read lazily: safetensors headers are parsed by hand, tensor bytes are read with
``pread`` only when the merge asks for them, so no input is ever loaded whole."""

from __future__ import annotations

import json
import math
import os
from collections import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch

from mergemix_dagster.core.errors import CheckpointMismatchError
from mergemix_dagster.core.merge.compatibility import check_finite_tensor
from mergemix_dagster.core.merge.streaming.fileio import ITEMSIZE, CODE_DTYPES, byte_view, pread_into

SAFETENSORS_INDEX = "model.safetensors.index.json"


def weight_files(directory: Path) -> list[Path]:
    index = directory / SAFETENSORS_INDEX
    if index.exists():
        return [directory / f for f in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise CheckpointMismatchError(f"no safetensors weights in {directory}")
    return files


@dataclass(frozen=True)
class TensorEntry:
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


class CheckpointReader:
    """The tensors of one checkpoint directory, located from the safetensors headers.

    Headers are parsed directly (8-byte little-endian length + JSON); tensor bytes are read with
    ``pread`` on demand. Keys are ordered by file, then by position in the file, so reading in
    key order is sequential.
    """

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.fds: list[int] = []
        self.entries: dict[str, TensorEntry] = {}
        try:
            for path in weight_files(self.directory):
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
        pread_into(fd, memoryview(head), 0, str(path))
        n = int.from_bytes(head, "little")
        if n <= 0 or 8 + n > size:
            raise CheckpointMismatchError(f"{path} is not a safetensors file (header length {n}, file size {size})")
        raw = bytearray(n)
        pread_into(fd, memoryview(raw), 8, str(path))
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
            dtype = CODE_DTYPES.get(code)
            if dtype is not None and b - a != math.prod(shape) * ITEMSIZE[dtype]:
                raise CheckpointMismatchError(
                    f"{path}: {key!r} has {b - a} bytes, expected {math.prod(shape) * ITEMSIZE[dtype]} for {code}{shape}"
                )
            if not 0 <= a <= b or start + b > size:
                raise CheckpointMismatchError(f"{path}: {key!r} lies outside the file (truncated checkpoint?)")
            found.append((a, key, TensorEntry(path, fd, start + a, b - a, shape, code, dtype)))
        for _, key, entry in sorted(found, key=lambda x: (x[0], x[1])):
            self.entries[key] = entry

    def tensor(self, key: str) -> torch.Tensor:
        """The whole tensor ``key``, read into fresh memory."""
        e = self.entries[key]
        if e.dtype is None:
            raise CheckpointMismatchError(f"{e.path}: parameter {key!r} has unsupported dtype {e.code}")
        t = torch.empty(e.shape, dtype=e.dtype)
        if e.nbytes:
            pread_into(e.fd, byte_view(t), e.offset, f"{e.path}: {key!r}")
        return t

    def config(self) -> dict | None:
        path = self.directory / "config.json"
        return json.loads(path.read_text()) if path.exists() else None

    def close(self) -> None:
        while self.fds:
            os.close(self.fds.pop())



class LazyExperts(abc.Sequence):
    """The experts' tensors ``key``, each read from disk (and finite-checked) when accessed, not kept."""

    def __init__(self, experts: Mapping[str, CheckpointReader], domains: Sequence[str], key: str, check_finite: bool):
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
