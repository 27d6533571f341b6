"""The blocked path for elementwise methods: K + 1 input blocks are read into reused buffers, merged and written
at their offset, so the working set is a few cache-resident blocks whatever the model size."""

from __future__ import annotations

import os
from typing import Callable, Sequence

import torch

from mergemix_dagster.core.merge.registry import MergeMethod, compute_dtype
from mergemix_dagster.core.merge.streaming.fileio import ITEMSIZE, byte_view, pread_into
from mergemix_dagster.core.merge.streaming.reader import TensorEntry
from mergemix_dagster.core.merge.streaming.writer import ShardWriter

#: elements per block in the blocked path: (K + 4) blocks of fp32 stay in a 1–2 MB L2 cache
BLOCK_ELEMENTS = 1 << 16


class BlockBuffers:
    """Reused block buffers for K + 1 inputs of one storage dtype, computed in ``compute_dtype``."""

    def __init__(self, n_inputs: int, block: int, storage: torch.dtype):
        self.block = block
        self.storage = storage
        self.compute = compute_dtype(torch.empty((), dtype=storage))
        self.itemsize = ITEMSIZE[storage]
        self.stage = torch.empty((n_inputs, block), dtype=storage)  # what pread fills
        self.convert = self.compute != storage
        self.inputs = torch.empty((n_inputs, block), dtype=self.compute) if self.convert else self.stage
        self.out = torch.empty(block, dtype=self.compute)
        self.out_store = torch.empty(block, dtype=storage) if self.convert else self.out
        self.stage_bytes = [byte_view(row) for row in self.stage]
        self.out_bytes = byte_view(self.out_store)
        self.full = self.views(block)

    def views(self, m: int):
        """(all inputs (K+1, m), base (m,), experts (K, m), staged inputs, out, out in storage dtype)."""
        inputs = self.inputs[:, :m] if m < self.block else self.inputs
        return inputs, inputs[0], inputs[1:], self.stage[:, :m], self.out[:m], self.out_store[:m]


def merge_blocked(
    key: str,
    method: MergeMethod,
    weights: Sequence[float],
    entries: Sequence[TensorEntry],
    blocks: BlockBuffers,
    writer: ShardWriter,
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
                pread_into(fd, view, offset + pos, f"{e.path}: {key!r}")
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
