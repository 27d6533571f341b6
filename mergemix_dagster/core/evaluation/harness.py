"""lm-eval on a model already in memory, with the local task YAML + JSONL data shipped in ``tasks/``.

Design (measured, see docs/data.md):

- Tasks are found the way lm-eval users find theirs: ``TaskManager(include_path=tasks_dir)`` indexes the
  YAML folder. Each task's YAML is read with lm-eval's loader, its relative ``dataset_kwargs.data_files``
  are made absolute (relative to the YAML file, so any working directory works), and the task is built by
  ``TaskManager.load``, which loads its data with ``datasets.load_dataset("json", ...)`` from local files.
  The Task objects (with their datasets) are reused by every :meth:`Evaluator.evaluate` call.
- Each call wraps the *current* model in a fresh ``HFLM`` and runs ``lm_eval.evaluator.evaluate`` (the
  public entry point ``simple_evaluate`` also uses) with request caching off, so every log-likelihood is
  computed by a forward pass of the model as it is now: in-place weight changes are always reflected.
  The only thing kept across calls besides the tasks is the prompts' *token ids*, keyed by a hash of the
  whole fast tokenizer (so a different tokenizer never reuses them); it saves ~0.5 s a call.
  ``simple_evaluate`` itself is not called per candidate: it reseeds the global RNGs and collects
  environment info (subprocesses, a hub request) on every call.
- Each score carries its per-item values (``BenchmarkScore.items``, from lm-eval's logged samples), so two
  mixtures can be compared item by item (``core.evaluation.paired``); the samples are not written to the JSON.
- With ``results_path`` a call writes lm-eval's results JSON (``results``, ``configs``, ``versions``,
  ``n-shot``, ``n-samples``, plus a ``config`` block), so a candidate can be compared with a user's own
  ``lm_eval`` run of the same tasks.
- Offline mode is the caller's choice (``model.offline`` in the settings, ``core.training.hub.set_offline``);
  ``Evaluator(offline=True)`` applies it before ``datasets`` / ``lm_eval`` are imported.
- lm-eval warnings that repeat for every request (e.g. "Truncating N tokens from the left" when prompts are
  longer than the model's context) are printed once per kind and counted: :meth:`Evaluator.warning_summary`.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import copy  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Sequence  # noqa: E402

from mergemix_dagster.core.errors import ConfigError, MissingTaskError  # noqa: E402
from mergemix_dagster.core.evaluation.samples import task_item_values  # noqa: E402
from mergemix_dagster.core.training.hub import set_offline  # noqa: E402
from mergemix_dagster.core.progress import Progress  # noqa: E402


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
    #: Each item's metric value in ``doc_id`` order (their mean is ``value``); None for non-mean metrics.
    items: tuple[float, ...] | None = None


#: The four multiple-choice tasks, one per capability (metric ``acc``): used by tests and ``benchmarks/``. The
#: pipeline's defaults are ``EvaluationSettings.tasks`` (gold_prob; ``code`` and ``language`` are the byte_prob of
#: ``mm_code_bpb`` and ``mm_prose_bpb``).
DEFAULT_TASKS: tuple[TaskSpec, ...] = (
    TaskSpec("mm_math", "math"),
    TaskSpec("mm_code", "code"),
    TaskSpec("mm_prose", "language"),
    TaskSpec("mm_facts", "knowledge"),
)
HELDOUT_TASKS: tuple[TaskSpec, ...] = (TaskSpec("mm_arith_words", "heldout"),)


def default_tasks_dir() -> Path:
    """The bundled ``mergemix_dagster/tasks`` folder."""
    return Path(__file__).resolve().parents[2] / "tasks"


_IGNORED_WARNINGS = ("model kwarg is not of type `str`", "Passed an already-initialized model")


def warning_kind(message: str) -> str:
    """The message with its numbers blanked: every "Truncating 12 tokens" is one kind."""
    return re.sub(r"\d+", "#", message)


#: Warning kinds already printed by this process: a run opens several evaluators (seed design, each round,
#: the verification), and each printing its own first line was the flood in miniature.
PRINTED_WARNING_KINDS: set[str] = set()


class _RepeatedWarnings(logging.Filter):
    """Lets the first lm-eval warning of each kind (per process) through, counts every one per evaluator."""

    def __init__(self, counts: Counter) -> None:
        super().__init__()
        self.counts = counts

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(text in message for text in _IGNORED_WARNINGS):
            return False
        if record.levelno < logging.WARNING:
            return True
        kind = warning_kind(message)
        self.counts[kind] += 1
        if kind in PRINTED_WARNING_KINDS:
            return False
        PRINTED_WARNING_KINDS.add(kind)
        record.msg, record.args = f"{message} [repeats of this lm-eval warning are counted, not printed]", None
        return True


_LM_EVAL_READY = False


def _lm_eval():
    """Import lm_eval quietly (no per-task tqdm bars); returns ``(evaluator_module, HFLM, TaskManager)``."""
    global _LM_EVAL_READY
    import datasets
    import lm_eval.evaluator as lm_evaluator
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    if not _LM_EVAL_READY:
        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
        # build_all_requests draws a tqdm bar per task per call; lm-eval offers no switch for it.
        import functools

        import lm_eval.api.task as lm_task
        import tqdm

        lm_task.tqdm = functools.partial(tqdm.tqdm, disable=True)
        _LM_EVAL_READY = True
    return lm_evaluator, HFLM, TaskManager


def _lm_eval_loggers() -> list[logging.Logger]:
    names = [n for n in logging.Logger.manager.loggerDict if n == "lm_eval" or n.startswith("lm_eval.")]
    return [logging.getLogger(n) for n in names]


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


def _index_tasks(task_manager, tasks_dir: Path) -> dict[str, Path]:
    """``{task name: yaml path}`` of the tasks lm-eval's ``TaskManager`` found under ``tasks_dir``."""
    index: dict[str, Path] = {}
    for name, entry in task_manager.task_index.items():
        path = getattr(entry, "yaml_path", None)
        if path is not None and Path(path).resolve().is_relative_to(tasks_dir.resolve()):
            index[name] = Path(path)
    return index


def task_yaml_paths(tasks_dir: Path) -> dict[str, Path]:
    """``{task name: yaml path}`` of the lm-eval tasks under ``tasks_dir`` (empty when it is not a folder)."""
    tasks_dir = Path(tasks_dir)
    if not tasks_dir.is_dir():
        return {}
    _, _, TaskManager = _lm_eval()
    return _index_tasks(TaskManager(include_path=str(tasks_dir), include_defaults=False), tasks_dir)


def task_file_contents(path: Path) -> list[bytes]:
    """The bytes that decide a task's results: its YAML, the ``!function`` modules beside it, its data files."""
    path = Path(path)
    parts = [path.read_bytes()]
    parts += [sibling.read_bytes() for sibling in sorted(path.parent.glob("*.py"))]
    cfg = _absolute_data_files(_load_yaml(path, resolve_func=False), path.parent)
    parts += [Path(f).read_bytes() for f in _data_file_paths(cfg) if Path(f).is_file()]
    return parts


class Evaluator:
    """Scores an in-memory causal LM on a fixed list of lm-eval tasks; build once, call many times."""

    def __init__(
        self,
        tasks: Sequence[TaskSpec],
        tasks_dir: Path | None = None,
        batch_size: int = 64,
        limit: int | None = None,
        offline: bool | None = None,
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
        if offline is not None:
            set_offline(offline)
        self.tasks = tuple(tasks)
        self.tasks_dir = Path(tasks_dir) if tasks_dir is not None else default_tasks_dir()
        self.batch_size = int(batch_size)
        self.limit = limit
        self.warning_counts: Counter = Counter()
        self._encodings: dict[str, dict] = {}

        _, _, TaskManager = _lm_eval()
        if self.tasks_dir.is_dir():
            self.task_manager = TaskManager(include_path=str(self.tasks_dir), include_defaults=False)
            index = _index_tasks(self.task_manager, self.tasks_dir)
        else:
            self.task_manager, index = None, {}
        for spec in self.tasks:
            if spec.name not in index:
                raise MissingTaskError(
                    f"evaluation task {spec.name!r} not found: no YAML with `task: {spec.name}` under "
                    f"{self.tasks_dir} (found: {sorted(index) or 'none'})"
                )
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
                self._task_objects[spec.name] = self.task_manager.load([copy.deepcopy(cfg)])["tasks"][spec.name]
            except Exception as exc:
                raise MissingTaskError(f"task {spec.name!r} from {path} cannot be loaded: {exc}") from exc

    def items(self, name: str) -> int:
        """How many items of task ``name`` a call scores (``limit`` applied)."""
        n = len(self._task_objects[name].eval_docs)
        return min(n, self.limit) if self.limit else n

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

    def evaluate(
        self,
        model,
        tokenizer,
        results_path: Path | None = None,
        model_name: str = "",
        progress_log: Callable[[str], None] | None = None,
    ) -> list[BenchmarkScore]:
        """One score per task (its metric), computed by lm-eval from fresh forward passes of ``model``.

        ``results_path``: write lm-eval's results JSON there (named ``model_name`` in its ``config``).
        ``progress_log``: evaluate task by task and report "tasks i/N, rate, ETA" lines to it (worth it when
        one evaluation takes minutes; otherwise all tasks go to lm-eval in one call, batched together).
        """
        lm_evaluator, HFLM, _ = _lm_eval()

        encodings = self._encoding_cache(tokenizer)

        class _QuietHFLM(HFLM):
            def loglikelihood(self, requests, disable_tqdm: bool = True):
                return super().loglikelihood(requests, disable_tqdm=True)

            def loglikelihood_rolling(self, requests, disable_tqdm: bool = True):
                return super().loglikelihood_rolling(requests, disable_tqdm=True)

            def _loglikelihood_tokens(self, requests, disable_tqdm: bool = True, override_bs=None):
                # loglikelihood_rolling asks for a bar per batch of windows (disable_tqdm=False in lm-eval).
                return super()._loglikelihood_tokens(requests, disable_tqdm=True, override_bs=override_bs)

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
        repeated = _RepeatedWarnings(self.warning_counts)
        loggers = _lm_eval_loggers()
        for logger in loggers:
            logger.addFilter(repeated)
        started = time.time()
        lm = _QuietHFLM(pretrained=model, tokenizer=tokenizer, batch_size=self.batch_size)

        def run(names: list[str]) -> dict:
            return lm_evaluator.evaluate(
                lm=lm,
                task_dict={"tasks": {n: self._task_objects[n] for n in names}, "groups": {}, "group_map": {}},
                limit=self.limit,
                cache_requests=False,
                bootstrap_iters=100,  # only used for non-mean metrics; acc/acc_norm stderr is analytic
                log_samples=True,  # per-item values for paired comparisons (core.evaluation.samples)
            ) or {}

        try:
            if progress_log is None:
                out = run(list(self._task_objects))
            else:
                out = {}
                with Progress(len(self.tasks), "tasks", log=progress_log, unit="task", terminal=False) as progress:
                    for spec in self.tasks:
                        for section, value in run([spec.name]).items():
                            out[section] = {**out[section], **value} if isinstance(value, dict) and section in out else value
                        progress.advance(task=spec.name)
        finally:
            for logger in loggers:
                logger.removeFilter(repeated)
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
            value = float(row[key])
            items = task_item_values(self._task_objects[spec.name], out.get("samples"), spec.name, spec.metric, value)
            scores.append(BenchmarkScore(spec.name, spec.metric, value, spec.capability, stderr, items))
        if results_path is not None:
            self.write_results(out, Path(results_path), model_name or type(model).__name__, started)
        return scores

    def write_results(self, out: dict, path: Path, model_name: str, started: float) -> Path:
        """lm-eval's results JSON, serialized as lm-eval's own tracker does, with a ``config`` block."""
        from importlib.metadata import version

        from lm_eval.utils import handle_non_serializable

        payload = {k: v for k, v in out.items() if k != "samples"}  # lm-eval's tracker writes samples apart
        payload["config"] = {
            "model": model_name,
            "model_args": "in-memory HFLM (mergemix)",
            "batch_size": self.batch_size,
            "limit": self.limit,
            "bootstrap_iters": 100,
            "tasks_dir": str(self.tasks_dir),
            "lm_eval_version": version("lm_eval"),
        }
        payload["date"] = started
        payload["total_evaluation_time_seconds"] = str(time.time() - started)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(payload, indent=2, default=handle_non_serializable, ensure_ascii=False))
        tmp.replace(path)
        return path

    def warning_summary(self) -> list[str]:
        """One line per kind of lm-eval warning seen so far by this evaluator, with its count."""
        return [f"lm-eval warned {n}x: {kind}" for kind, n in self.warning_counts.most_common()]


def _data_file_paths(cfg: dict[str, Any]) -> list[str]:
    files = (cfg.get("dataset_kwargs") or {}).get("data_files")
    if files is None:
        return []
    if isinstance(files, str):
        files = [files]
    if isinstance(files, dict):
        files = [x for v in files.values() for x in ([v] if isinstance(v, str) else v)]
    return [f for f in files if "://" not in f]


__all__ = ["TaskSpec", "BenchmarkScore", "DEFAULT_TASKS", "HELDOUT_TASKS", "default_tasks_dir", "Evaluator", "warning_kind"]
