"""lm-eval on a model already in memory, with the local task YAML + JSONL data shipped in ``tasks/``.

Design (measured, see docs/data.md):

- Tasks are resolved once per :class:`Evaluator`: each YAML is read with lm-eval's own loader, its
  relative ``dataset_kwargs.data_files`` are made absolute (relative to the YAML file), and one
  ``lm_eval.api.task.ConfigurableTask`` per task is built, which loads its data with
  ``datasets.load_dataset("json", ...)`` from local files. The Task objects (with their datasets) are
  reused by every :meth:`Evaluator.evaluate` call.
- Each call wraps the *current* model in a fresh ``HFLM`` and runs ``lm_eval.evaluator.evaluate``
  with request caching off, so no answer can come from a cache: ``build_all_requests`` rebuilds the
  requests (prompts only, no model outputs) and every log-likelihood is computed by a forward pass
  of the model as it is now. In-place weight changes are therefore always reflected. The only thing
  kept across calls besides the tasks is the prompts' *token ids*, keyed by a hash of the whole fast
  tokenizer (so a different tokenizer never reuses them); it saves ~0.5 s a call.
- Nothing reaches the network: the Hugging Face offline switches are set before ``datasets`` /
  ``lm_eval`` are imported and again on their config modules after import (in case something imported
  them earlier).
"""

from __future__ import annotations

import os

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_var] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import copy  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Sequence  # noqa: E402

from .errors import ConfigError, MissingTaskError  # noqa: E402


@dataclass(frozen=True)
class TaskSpec:
    name: str
    capability: str
    metric: str = "acc"


@dataclass(frozen=True)
class BenchmarkScore:
    task: str
    metric: str
    value: float
    capability: str
    stderr: float | None = None


DEFAULT_TASKS: tuple[TaskSpec, ...] = (
    TaskSpec("mm_math", "math"),
    TaskSpec("mm_code", "code"),
    TaskSpec("mm_prose", "language"),
    TaskSpec("mm_facts", "knowledge"),
)
HELDOUT_TASKS: tuple[TaskSpec, ...] = (TaskSpec("mm_arith_words", "heldout"),)


def default_tasks_dir() -> Path:
    """The bundled ``mergemix_dagster/tasks`` folder."""
    return Path(__file__).resolve().parent.parent / "tasks"


class _DropPretrainedWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return "model kwarg is not of type `str`" not in msg and "Passed an already-initialized model" not in msg


_LM_EVAL_READY = False


def _offline_lm_eval():
    """Import lm_eval / datasets offline and quiet; returns ``(evaluator_module, HFLM, ConfigurableTask)``."""
    global _LM_EVAL_READY
    import datasets
    import huggingface_hub.constants as hub_constants
    import lm_eval.evaluator as lm_evaluator
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.models.huggingface import HFLM

    if not _LM_EVAL_READY:
        hub_constants.HF_HUB_OFFLINE = True
        datasets.config.HF_HUB_OFFLINE = True
        if hasattr(datasets.config, "HF_DATASETS_OFFLINE"):
            datasets.config.HF_DATASETS_OFFLINE = True
        logging.getLogger("lm_eval").setLevel(logging.WARNING)
        logging.getLogger("lm_eval.models.huggingface").addFilter(_DropPretrainedWarning())
        datasets.disable_progress_bars()
        # build_all_requests draws a tqdm bar per task per call; lm-eval offers no switch for it.
        import functools

        import lm_eval.api.task as lm_task
        import tqdm

        lm_task.tqdm = functools.partial(tqdm.tqdm, disable=True)
        datasets.logging.set_verbosity_error()
        _LM_EVAL_READY = True
    return lm_evaluator, HFLM, ConfigurableTask


def _load_yaml(path: Path, resolve_func: bool) -> dict[str, Any]:
    try:
        from lm_eval.tasks._yaml_loader import load_yaml  # lm-eval's loader: `include:` and `!function`
    except ImportError:  # pragma: no cover - older/newer lm-eval layouts
        import yaml

        return yaml.safe_load(path.read_text(encoding="utf-8"))
    return load_yaml(path, resolve_func=resolve_func)


def _absolute_data_files(cfg: dict[str, Any], base: Path) -> dict[str, Any]:
    """Rewrite relative ``dataset_kwargs.data_files`` to absolute paths next to the YAML file."""
    kwargs = dict(cfg.get("dataset_kwargs") or {})
    files = kwargs.get("data_files")
    if files is None:
        return cfg

    def fix(p: str) -> str:
        path = Path(p).expanduser()
        if path.is_absolute() or "://" in p:
            return p
        return str((base / path).resolve())

    if isinstance(files, str):
        kwargs["data_files"] = fix(files)
    elif isinstance(files, list):
        kwargs["data_files"] = [fix(f) for f in files]
    elif isinstance(files, dict):
        kwargs["data_files"] = {k: (fix(v) if isinstance(v, str) else [fix(x) for x in v]) for k, v in files.items()}
    cfg = dict(cfg)
    cfg["dataset_kwargs"] = kwargs
    return cfg


def _index_tasks(tasks_dir: Path) -> dict[str, Path]:
    """``{task name: yaml path}`` of every task YAML under ``tasks_dir`` (first one wins, sorted order)."""
    index: dict[str, Path] = {}
    if not tasks_dir.is_dir():
        return index
    for path in sorted(tasks_dir.rglob("*.yaml")) + sorted(tasks_dir.rglob("*.yml")):
        try:
            cfg = _load_yaml(path, resolve_func=False)
        except Exception:
            continue
        name = cfg.get("task") if isinstance(cfg, dict) else None
        if isinstance(name, str) and name not in index:
            index[name] = path
    return index


class Evaluator:
    """Scores an in-memory causal LM on a fixed list of lm-eval tasks; build once, call many times."""

    def __init__(
        self,
        tasks: Sequence[TaskSpec],
        tasks_dir: Path | None = None,
        batch_size: int = 64,
        limit: int | None = None,
    ) -> None:
        if not tasks:
            raise ConfigError("at least one evaluation task is needed")
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ConfigError(f"duplicate task names: {names}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if limit is not None and limit < 1:
            raise ConfigError(f"limit must be >= 1 or None, got {limit}")
        self.tasks = tuple(tasks)
        self.tasks_dir = Path(tasks_dir) if tasks_dir is not None else default_tasks_dir()
        self.batch_size = int(batch_size)
        self.limit = limit
        self._encodings: dict[str, dict] = {}

        index = _index_tasks(self.tasks_dir)
        for spec in self.tasks:
            if spec.name not in index:
                raise MissingTaskError(
                    f"evaluation task {spec.name!r} not found: no YAML with `task: {spec.name}` under "
                    f"{self.tasks_dir} (found: {sorted(index) or 'none'})"
                )
        _, _, ConfigurableTask = _offline_lm_eval()
        self._task_objects: dict[str, Any] = {}
        self.configs: dict[str, dict[str, Any]] = {}
        for spec in self.tasks:
            path = index[spec.name]
            try:
                cfg = _absolute_data_files(_load_yaml(path, resolve_func=True), path.parent)
            except ImportError as exc:  # a `!function` whose Python file is not next to the YAML
                raise MissingTaskError(f"task {spec.name!r} ({path}) names a function that cannot be imported: {exc}") from exc
            metrics = [m.get("metric") for m in cfg.get("metric_list") or [] if isinstance(m, dict)]
            if metrics and spec.metric not in metrics:
                raise ConfigError(f"task {spec.name!r} ({path}) has no metric {spec.metric!r}; it reports {metrics}")
            for f in _data_file_paths(cfg):
                if not Path(f).exists():
                    raise MissingTaskError(f"data file of task {spec.name!r} not found: {f} (from {path})")
            self.configs[spec.name] = cfg
            try:
                self._task_objects[spec.name] = ConfigurableTask(config=copy.deepcopy(cfg))
            except Exception as exc:
                raise MissingTaskError(f"task {spec.name!r} from {path} cannot be loaded: {exc}") from exc

    def _encoding_cache(self, tokenizer) -> dict:
        """Token ids of the prompts, reused across calls while the tokenizer is the same.

        Keyed by a hash of the fast tokenizer's full serialisation (vocabulary, merges, normaliser, special
        tokens), so a different or modified tokenizer never gets another one's ids. A tokenizer without a
        Rust backend gets a fresh cache per call. At most 4 tokenizers are remembered.
        """
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            return {}
        import hashlib

        key = hashlib.sha256(
            (backend.to_str() + repr(sorted(tokenizer.special_tokens_map.items()))).encode("utf-8")
        ).hexdigest()
        cache = self._encodings.pop(key, None)
        if cache is None:
            cache = {}
            while len(self._encodings) >= 4:
                self._encodings.pop(next(iter(self._encodings)))
        self._encodings[key] = cache  # most recently used last
        return cache

    def evaluate(self, model, tokenizer) -> list[BenchmarkScore]:
        """One score per task (its metric), computed by lm-eval from fresh forward passes of ``model``."""
        lm_evaluator, HFLM, _ = _offline_lm_eval()

        encodings = self._encoding_cache(tokenizer)

        class _QuietHFLM(HFLM):
            def loglikelihood(self, requests, disable_tqdm: bool = True):
                return super().loglikelihood(requests, disable_tqdm=True)

            def tok_encode(self, string, add_special_tokens=None, left_truncate_len=None, **kwargs):
                # Token ids only (a pure function of the tokenizer), never model outputs.
                if left_truncate_len or kwargs:
                    return super().tok_encode(string, add_special_tokens, left_truncate_len, **kwargs)
                key = (string, add_special_tokens, bool(getattr(self, "add_bos_token", False)))
                ids = encodings.get(key)
                if ids is None:
                    ids = encodings[key] = tuple(super().tok_encode(string, add_special_tokens))
                return list(ids)

        was_training = getattr(model, "training", False)
        lm = _QuietHFLM(pretrained=model, tokenizer=tokenizer, batch_size=self.batch_size)
        try:
            out = lm_evaluator.evaluate(
                lm=lm,
                task_dict=dict(self._task_objects),
                limit=self.limit,
                cache_requests=False,
                bootstrap_iters=100,  # only used for non-mean metrics; acc/acc_norm stderr is analytic
                log_samples=False,
                verbosity="ERROR",
            )
        finally:
            if was_training:
                model.train()
        results = (out or {}).get("results", {})
        scores: list[BenchmarkScore] = []
        for spec in self.tasks:
            row = results.get(spec.name)
            key = f"{spec.metric},none"
            if row is None or key not in row:
                raise MissingTaskError(f"lm-eval returned no {spec.metric!r} for task {spec.name!r} (got {sorted(row or {})})")
            stderr = row.get(f"{spec.metric}_stderr,none")
            stderr = float(stderr) if isinstance(stderr, (int, float)) and math.isfinite(stderr) else None
            scores.append(BenchmarkScore(spec.name, spec.metric, float(row[key]), spec.capability, stderr))
        return scores


def _data_file_paths(cfg: dict[str, Any]) -> list[str]:
    files = (cfg.get("dataset_kwargs") or {}).get("data_files")
    if files is None:
        return []
    if isinstance(files, str):
        files = [files]
    if isinstance(files, dict):
        files = [x for v in files.values() for x in ([v] if isinstance(v, str) else v)]
    return [f for f in files if "://" not in f]


__all__ = ["TaskSpec", "BenchmarkScore", "DEFAULT_TASKS", "HELDOUT_TASKS", "default_tasks_dir", "Evaluator"]
