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

from mergemix_dagster.core.merge.streaming.blocked import BLOCK_ELEMENTS
from mergemix_dagster.core.merge.streaming.checkpoints import merge_checkpoints
from mergemix_dagster.core.merge.streaming.fileio import WRITEBACK_BYTES
from mergemix_dagster.core.merge.streaming.reader import SAFETENSORS_INDEX, CheckpointReader
from mergemix_dagster.core.merge.streaming.writer import COPY_BYTES, parse_size

# Modules: ``checkpoints`` (merge_checkpoints: checks, shard plan, the loop over tensors), ``reader`` (lazy input
# tensors), ``writer`` (output shards), ``blocked`` (the blocked path), ``fileio`` (pread/pwrite, Linux hints).

_Checkpoint = CheckpointReader  # its name before the split, which tests patch (one class, two names)

__all__ = [
    "BLOCK_ELEMENTS",
    "COPY_BYTES",
    "SAFETENSORS_INDEX",
    "WRITEBACK_BYTES",
    "CheckpointReader",
    "merge_checkpoints",
    "parse_size",
]
