"""Byte-level I/O for the streaming merge: the safetensors dtype codes, ``pread``/``pwrite`` loops that finish
short reads and writes, and Linux hints (``fallocate``, ``sync_file_range``) that are optional: without them
everything works, only slower."""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Callable

import torch

from mergemix_dagster.core.errors import CheckpointMismatchError

#: start writeback of the output every this many bytes (Linux ``sync_file_range``)
WRITEBACK_BYTES = 32 << 20

DTYPE_CODES = {
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
CODE_DTYPES = {code: dtype for dtype, code in DTYPE_CODES.items()}
ITEMSIZE = {dtype: torch.empty((), dtype=dtype).element_size() for dtype in DTYPE_CODES}


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


def preallocate(fd: int, nbytes: int) -> None:
    """Reserve the file's blocks up front (faster page-cache writes on ext4/xfs); a hint only."""
    if _fallocate is not None and nbytes > 0:
        _fallocate(fd, 0, 0, nbytes)  # failure (e.g. unsupported filesystem) is harmless


def start_writeback(fd: int, offset: int, nbytes: int) -> None:
    if _sync_file_range is not None and nbytes > 0:
        _sync_file_range(fd, offset, nbytes, _SYNC_FILE_RANGE_WRITE)


def pread_into(fd: int, view: memoryview, offset: int, what: str) -> None:
    """Fill ``view`` (bytes) from ``fd`` at ``offset``; ``CheckpointMismatchError`` on a short file."""
    done, n = 0, len(view)
    while done < n:
        got = os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            raise CheckpointMismatchError(f"{what}: file ends {n - done} bytes early (truncated checkpoint?)")
        done += got


def pwrite_all(fd: int, view: memoryview | bytes, offset: int) -> None:
    view = memoryview(view)
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)


def byte_view(t: torch.Tensor) -> memoryview:
    """A writable byte memoryview of contiguous CPU tensor ``t`` (any dtype, bf16 included)."""
    return memoryview(t.reshape(-1).view(torch.uint8).numpy()).cast("B")
