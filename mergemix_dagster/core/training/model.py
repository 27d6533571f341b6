"""The model side: a tiny Llama, its BPE tokenizer, and Hugging Face checkpoints on disk.

Everything here works offline. ``load_checkpoint`` also accepts a hub id so a user can start
from a public base model, but nothing in the embedded default ever touches a model hub.

Checkpoints are ordinary Hugging Face directories (``config.json``, ``model.safetensors`` or
shards + ``model.safetensors.index.json``, tokenizer files), so any HF tool can read them.

Tied embeddings: with ``tie_word_embeddings=True`` (the tiny default) ``lm_head.weight`` *is*
``model.embed_tokens.weight``. ``save_pretrained`` writes it once (under the embedding name), so
``load_state_dict`` of a saved checkpoint has no ``lm_head.weight`` while ``model.state_dict()``
has both names pointing at one tensor. The merge code accepts both forms.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import torch

from mergemix_dagster.core.errors import ConfigError, StoreError

BOS, EOS, PAD, UNK = "<|bos|>", "<|eos|>", "<|pad|>", "<|unk|>"
SPECIAL_TOKENS = (BOS, EOS, PAD, UNK)
SAFETENSORS_INDEX = "model.safetensors.index.json"


class CheckpointExistsError(StoreError, FileExistsError):
    """``save_checkpoint`` refuses to overwrite an existing directory."""


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape of the embedded tiny Llama (about 0.6M non-embedding parameters by default)."""

    vocab_size: int = 2048
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 344
    max_position_embeddings: int = 256
    tie_word_embeddings: bool = True


# --------------------------------------------------------------------------------------------
# tokenizer
# --------------------------------------------------------------------------------------------


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it as a ``PreTrainedTokenizerFast``.

    Byte-level: every string is encodable (no unknown characters), decoding round-trips.
    Special tokens ``<|bos|> <|eos|> <|pad|> <|unk|>`` get ids 0..3 and are set as the
    tokenizer's bos/eos/pad/unk tokens. No BOS/EOS is added automatically when encoding:
    the corpus tokenizer appends EOS between documents itself.
    Deterministic: the same texts and vocab size give the same vocabulary and merges.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((t for t in texts if t), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
    )


# --------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------


def new_tiny_llama(spec: TinyModelSpec, tokenizer, seed: int = 0):
    """A freshly initialised ``LlamaForCausalLM`` of shape ``spec`` (no hub access).

    Special-token ids come from ``tokenizer``. Initialisation is seeded without disturbing the
    caller's global RNG state.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    if spec.hidden_size % spec.num_heads:
        raise ConfigError(f"hidden_size {spec.hidden_size} is not divisible by num_heads {spec.num_heads}")
    if len(tokenizer) > spec.vocab_size:
        raise ConfigError(f"tokenizer has {len(tokenizer)} tokens but the model vocab is {spec.vocab_size}")
    config = LlamaConfig(
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=spec.tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        use_cache=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"``: CUDA if available, else CPU; any other name is passed to ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------


def load_checkpoint(path_or_hub_id: str | Path, device: str = "cpu", dtype: torch.dtype | None = None):
    """Load ``(model, tokenizer)`` from a local HF directory or a hub id; model in eval mode on ``device``.

    ``dtype=None`` keeps the dtype stored in the checkpoint (``"auto"``). A tokenizer without a
    pad token gets its EOS token as pad token.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = str(path_or_hub_id)
    local = Path(source)
    if local.exists() and not (local / "config.json").exists():
        raise StoreError(f"{local} is not a Hugging Face checkpoint (no config.json)")
    import transformers

    # transformers 5 renamed ``torch_dtype`` to ``dtype``
    dtype_kw = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    model = AutoModelForCausalLM.from_pretrained(source, **{dtype_kw: dtype if dtype is not None else "auto"})
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token  # many hub tokenizers have no pad token; batching needs one
    model.to(resolve_device(device) if device == "auto" else torch.device(device))
    model.eval()
    return model, tokenizer


@contextmanager
def atomic_directory(directory: Path) -> Iterator[Path]:
    """An empty temporary sibling of ``directory`` to write into; renamed into place when the block
    ends, removed if it raises. So an interrupted write never leaves a half checkpoint, and an existing
    ``directory`` is never overwritten (``CheckpointExistsError``, before and after the work)."""
    directory = Path(directory)
    if directory.exists():
        raise CheckpointExistsError(f"refusing to overwrite existing checkpoint directory {directory}")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".{directory.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        yield tmp
        if directory.exists():
            raise CheckpointExistsError(f"refusing to overwrite existing checkpoint directory {directory}")
        os.rename(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_checkpoint(model, tokenizer, directory: Path, max_shard_size: str = "2GB") -> Path:
    """Write ``model`` + ``tokenizer`` as a safetensors HF checkpoint at ``directory``.

    Written into a temporary sibling directory first and renamed into place at the end, so an
    interrupted save never leaves a half checkpoint at ``directory``. Refuses to overwrite:
    raises ``CheckpointExistsError`` (a ``StoreError`` and a ``FileExistsError``).
    """
    directory = Path(directory)
    with atomic_directory(directory) as tmp:
        model.save_pretrained(str(tmp), max_shard_size=max_shard_size)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
    return directory


def safetensors_files(directory: Path) -> list[Path]:
    """The safetensors weight files of a checkpoint, in a fixed (sorted) order."""
    directory = Path(directory)
    index = directory / SAFETENSORS_INDEX
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = [directory / f for f in sorted(set(weight_map.values()))]
    else:
        files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise StoreError(f"no safetensors weights in {directory}")
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise StoreError(f"checkpoint {directory} lacks weight files {missing}")
    return files


def checkpoint_fingerprint(directory: Path) -> str:
    """sha256 over ``config.json`` and the safetensors files (names + bytes, streamed, sorted order)."""
    directory = Path(directory)
    h = hashlib.sha256()
    for path in [directory / "config.json", *safetensors_files(directory)]:
        if not path.exists():
            raise StoreError(f"checkpoint {directory} has no {path.name}")
        h.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def load_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of a (sharded) safetensors checkpoint on CPU, without building a model.

    Tied ``lm_head.weight`` is absent when the checkpoint was saved with tied embeddings.
    """
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for path in safetensors_files(directory):
        state.update(load_file(str(path), device="cpu"))
    return state


def read_config(directory: Path) -> dict:
    """``config.json`` of a checkpoint as a dict."""
    path = Path(directory) / "config.json"
    if not path.exists():
        raise StoreError(f"checkpoint {directory} has no config.json")
    return json.loads(path.read_text())


# --------------------------------------------------------------------------------------------
# verifying what is read
# --------------------------------------------------------------------------------------------

#: bytes hashed at each end of a file for the cheap check (the safetensors header and the first and last tensors)
SAMPLE_BYTES = 1 << 20
TOKENIZER_FILE_NAMES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
    "tokenizer.model", "vocab.txt", "added_tokens.json",
)


def _ends_hash(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(SAMPLE_BYTES))
        if size > SAMPLE_BYTES:
            f.seek(max(SAMPLE_BYTES, size - SAMPLE_BYTES))
            h.update(f.read(SAMPLE_BYTES))
    return h.hexdigest()[:32]


def file_signature(path: Path) -> list:
    """``[size, hash of the first and last MiB]``: cheap, yet it tells a truncated, replaced or edited file
    (another expert's weights differ in their first and last tensors) from the one recorded."""
    size = Path(path).stat().st_size
    return [size, _ends_hash(Path(path), size)]


def file_manifest(directory: Path, files: Iterable[Path] | None = None) -> dict[str, list]:
    """``{relative path: file_signature}`` of ``files`` (default: every file under ``directory``)."""
    directory = Path(directory)
    chosen = sorted(p for p in directory.rglob("*") if p.is_file()) if files is None else list(files)
    return {p.relative_to(directory).as_posix(): file_signature(p) for p in chosen if p.is_file()}


def checkpoint_manifest(directory: Path) -> dict[str, list]:
    """The ``file_manifest`` of config.json and the weight files."""
    directory = Path(directory)
    return file_manifest(directory, [directory / "config.json", *safetensors_files(directory)])


def check_safetensors_complete(path: Path) -> None:
    """``TruncatedCheckpointError`` when a safetensors file is shorter than its header says (no manifest needed)."""
    from mergemix_dagster.core.errors import TruncatedCheckpointError

    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n < 0 or 8 + n > size:
            raise TruncatedCheckpointError(f"{path}: {size} bytes, too short for its safetensors header")
        try:
            header = json.loads(f.read(n))
        except ValueError as exc:
            raise TruncatedCheckpointError(f"{path}: unreadable safetensors header ({exc})") from exc
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise TruncatedCheckpointError(f"{path}: {size} bytes but its header describes {8 + n + end}: the file is cut")


def verify_checkpoint(directory: Path, what: str, manifest: dict | None = None, fingerprint: str | None = None) -> None:
    """Refuse a checkpoint that is not the one recorded: truncated weight files always; with ``manifest``
    a file whose size or sampled bytes differ; with ``fingerprint`` (the full hash, slow) any byte."""
    from mergemix_dagster.core.errors import CheckpointChangedError

    directory = Path(directory)
    for f in safetensors_files(directory):
        check_safetensors_complete(f)
    for name, recorded in (manifest or {}).items():
        path = directory / name
        if not path.is_file():
            raise CheckpointChangedError(f"{what}: {path} is gone since it was recorded")
        now = file_signature(path)
        if list(now) != list(recorded):
                how = f"size {now[0]} != recorded {recorded[0]}" if now[0] != recorded[0] else "its bytes differ"
                raise CheckpointChangedError(f"{what}: {path} changed since it was recorded ({how})")
    if fingerprint is not None and checkpoint_fingerprint(directory) != fingerprint:
        raise CheckpointChangedError(f"{what}: {directory} does not match its recorded fingerprint {fingerprint[:16]}")


def tokenizer_fingerprint(directory: Path) -> str | None:
    """sha256 over a checkpoint's tokenizer files, or None when it has none (then the tokenizer is no key)."""
    directory = Path(directory)
    files = [directory / n for n in TOKENIZER_FILE_NAMES if (directory / n).is_file()]
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def load_model_state(directory: Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """The checkpoint's tensors under the names the loaded model uses (what the merge writes into).

    On disk a GPT-NeoX head is ``embed_out.weight`` while some transformers versions load it under another
    name; loading through ``from_pretrained`` applies the library's own renaming, so base, experts and the
    in-memory model always agree. Tied weights appear under both names (one tensor).
    """
    import transformers
    from transformers import AutoModelForCausalLM

    dtype_kw = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    model = AutoModelForCausalLM.from_pretrained(str(directory), **{dtype_kw: "auto"}).to(torch.device(device))
    return {k: v.detach() for k, v in model.state_dict().items()}
