"""The output shards: each safetensors file is created at its final size with its header written first, so a
merged piece can be written at its final offset as soon as it is computed."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from mergemix_dagster.core.errors import ConfigError
from mergemix_dagster.core.merge.streaming.fileio import (
    DTYPE_CODES,
    ITEMSIZE,
    WRITEBACK_BYTES,
    preallocate,
    pread_into,
    pwrite_all,
    start_writeback,
)
from mergemix_dagster.core.merge.streaming.reader import TensorEntry

#: chunk for plain byte copies (non-floating tensors)
COPY_BYTES = 8 << 20


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



class ShardWriter:
    """One output safetensors file, created at its final size; tensors written at their offsets."""

    def __init__(self, path: Path, keys: Sequence[str], desc: Mapping[str, tuple[tuple[int, ...], torch.dtype]]):
        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        offset = 0
        spans = {}
        for key in keys:
            shape, dtype = desc[key]
            nbytes = math.prod(shape) * ITEMSIZE[dtype]
            header[key] = {"dtype": DTYPE_CODES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
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
        preallocate(self.fd, self.size)
        pwrite_all(self.fd, len(blob).to_bytes(8, "little") + blob, 0)

    def write(self, offset: int, data: memoryview) -> None:
        step = WRITEBACK_BYTES // 4  # whole tensors go in pieces, so writeback starts between them
        for start in range(0, len(data), step):
            piece = data[start : start + step]
            pwrite_all(self.fd, piece, offset + start)
            end = offset + start + len(piece)
            if end - self._flushed >= WRITEBACK_BYTES:
                start_writeback(self.fd, self._flushed, end - self._flushed)
                self._flushed = end

    def close(self) -> None:
        if self.fd < 0:
            return
        try:
            if os.fstat(self.fd).st_size != self.size:  # only if a tensor was never written
                os.ftruncate(self.fd, self.size)
            start_writeback(self.fd, self._flushed, self.size - self._flushed)
        finally:
            os.close(self.fd)
            self.fd = -1



def copy_bytes(entry: TensorEntry, writer: ShardWriter, key: str) -> None:
    buf = bytearray(min(COPY_BYTES, entry.nbytes))
    view = memoryview(buf)
    dest = writer.offsets[key]
    for start in range(0, entry.nbytes, COPY_BYTES):
        n = min(COPY_BYTES, entry.nbytes - start)
        pread_into(entry.fd, view[:n], entry.offset + start, f"{entry.path}: {key!r}")
        writer.write(dest + start, view[:n])
