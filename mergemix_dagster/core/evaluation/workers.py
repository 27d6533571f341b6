"""Score merged proxies in W worker processes on this machine, each holding one loaded model and its deltas.

Why processes: lm-eval scoring of a small model is bound by Python and small matmuls, so one process uses
one core well and two torch threads in one process do not (on 2 shared cores, 2 threads per process were
3.5× slower than 1). W processes each load the base and the experts **once**, then merge every candidate
they are handed in place (``InMemoryMerger`` / ``OffloadedMerger``) and score it.

The pool is the standard library's ``ProcessPoolExecutor`` with the ``spawn`` start method (safe with torch
and CUDA); each candidate is one task, so a free worker takes the next one. Results come back to the calling
process as each candidate finishes and go to ``on_scored`` there: the caller writes that candidate's rows
at once, so a kill loses only the candidates in flight. With ``workers == 1`` everything runs in the calling
process (no spawn cost), through the same ``open_scorer`` / ``LoadedScorer.score``.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterator, Sequence

from mergemix_dagster.core.errors import ConfigError
from mergemix_dagster.core.evaluation.harness import BenchmarkScore, Evaluator, TaskSpec
from mergemix_dagster.core.mixture import Mixture

TASK_VECTOR_PLACES = ("device", "cpu")


@dataclass(frozen=True)
class ScorerSpec:
    """Everything a process needs to open a scorer: local checkpoint folders, the tasks, where to compute."""

    base_dir: str
    expert_dirs: dict[str, str]  # domain -> local checkpoint folder (already verified by the caller)
    tasks: tuple[TaskSpec, ...]
    tasks_dir: str | None = None
    batch_size: int = 64
    limit: int | None = None
    method: str = "linear"
    device: str = "auto"  # cpu, cuda, cuda:N, auto
    task_vectors: str = "device"  # or "cpu": base and deltas in (pinned) CPU memory
    threads: int | None = None  # torch threads of each scoring process; None: leave torch's default

    def __post_init__(self) -> None:
        if self.task_vectors not in TASK_VECTOR_PLACES:
            raise ConfigError(f"task_vectors must be one of {TASK_VECTOR_PLACES}, got {self.task_vectors!r}")


@dataclass(frozen=True)
class ProxyJob:
    """One model to score: the merge at ``alpha`` (over the spec's experts), or the base when ``alpha`` is None."""

    candidate_id: str
    alpha: dict[str, float] | None
    results_path: str | None = None  # where lm-eval's results JSON of this candidate is written


@dataclass
class LoadedScorer:
    """One loaded model, its merger and an evaluator: merge in place, score, repeat."""

    model: object
    tokenizer: object
    merger: object
    evaluator: Evaluator
    domains: tuple[str, ...] = field(default=())  # the order of the α labels

    def score(self, job: ProxyJob) -> list[BenchmarkScore]:
        path = Path(job.results_path) if job.results_path else None
        if job.alpha is None:
            self.merger.restore_base()
            return self.evaluator.evaluate(self.model, self.tokenizer, results_path=path, model_name="base")
        mixture = Mixture.from_dict(job.alpha, self.domains)
        self.merger.apply(mixture)
        return self.evaluator.evaluate(self.model, self.tokenizer, results_path=path,
                                       model_name=f"merged proxy {mixture.label()}")


def worker_devices(device: str, workers: int) -> list[str]:
    """The device of each worker: ``auto`` spreads workers over the visible GPUs (worker w on GPU w mod n)
    and is CPU without one; any other name (``cpu``, ``cuda``, ``cuda:1``) is every worker's device."""
    import torch

    if device != "auto":
        torch.device(device)  # a bad name fails here, in the caller, not in a worker
        return [device] * workers
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [f"cuda:{w % n}" for w in range(workers)] if n else ["cpu"] * workers


def open_scorer(spec: ScorerSpec, device: str | None = None) -> LoadedScorer:
    """Load the base on ``device`` (default: the spec's, ``auto`` resolved) and the experts for merging."""
    from mergemix_dagster.core.merge import InMemoryMerger
    from mergemix_dagster.core.merge.offloaded import OffloadedMerger
    from mergemix_dagster.core.training.model import load_checkpoint, load_model_state

    device = device or worker_devices(spec.device, 1)[0]
    model, tokenizer = load_checkpoint(spec.base_dir, device=device)
    model.eval()
    base_state = load_model_state(spec.base_dir)
    experts = {d: load_model_state(path) for d, path in spec.expert_dirs.items()}
    merger_class = OffloadedMerger if spec.task_vectors == "cpu" else InMemoryMerger
    merger = merger_class(model, base_state, experts, method=spec.method)
    evaluator = Evaluator(spec.tasks, tasks_dir=Path(spec.tasks_dir) if spec.tasks_dir else None,
                          batch_size=spec.batch_size, limit=spec.limit)
    return LoadedScorer(model, tokenizer, merger, evaluator, tuple(spec.expert_dirs))  # the settings' order


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """``torch.set_num_threads(n)`` for the block (nothing when ``n`` is None), restored after."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---- the worker process side ---------------------------------------------------------------------------

_SCORER: LoadedScorer | None = None
_START_ERROR: BaseException | None = None


def _exit_with_parent() -> None:
    """End this worker when the calling process dies (a kill -9 of the step), instead of idling forever."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _transformers_progress_bars() -> bool:
    """Whether this process shows transformers' progress bars ("Loading weights" per checkpoint)."""
    from transformers.utils import logging as hf_logging

    return hf_logging.is_progress_bar_enabled()


def _start_worker(spec: ScorerSpec, devices, progress_bars: bool = True) -> None:
    """Pool initializer: take a device, set the thread count, load the model and the deltas once.

    A spawned worker starts with transformers' defaults, so it takes the caller's progress-bar choice (the
    CLI turns them off: one "Loading weights" bar per checkpoint per worker was the terminal's noise).
    A failure is kept and raised by the first job, so the caller sees the named error (a failing
    initializer would only break the pool)."""
    import torch

    global _SCORER, _START_ERROR
    _exit_with_parent()
    if not progress_bars:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    try:
        if spec.threads:
            torch.set_num_threads(spec.threads)
        _SCORER = open_scorer(spec, devices.get())
    except Exception as exc:  # noqa: BLE001 - re-raised in the caller by _score_in_worker
        _START_ERROR = exc


def _score_in_worker(job: ProxyJob) -> tuple[list[BenchmarkScore], float]:
    if _START_ERROR is not None:
        raise _START_ERROR
    start = time.perf_counter()
    scores = _SCORER.score(job)
    return scores, time.perf_counter() - start


# ---- the calling process side --------------------------------------------------------------------------

OnScored = Callable[[ProxyJob, list[BenchmarkScore], float], None]


def score_proxies(spec: ScorerSpec, jobs: Sequence[ProxyJob], on_scored: OnScored, workers: int = 1) -> None:
    """Score every job; ``on_scored(job, scores, seconds)`` runs in this process as each one finishes.

    Completion order is not job order when ``workers > 1``. A failure in a worker (or in ``on_scored``)
    cancels the jobs not started yet and is raised here; what ``on_scored`` already wrote stays written.
    """
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    if not jobs:
        return
    workers = min(workers, len(jobs))
    if workers == 1:
        with torch_threads(spec.threads):
            scorer = open_scorer(spec)
            for job in jobs:
                start = time.perf_counter()
                scores = scorer.score(job)
                on_scored(job, scores, time.perf_counter() - start)
        return
    context = get_context("spawn")
    devices = context.SimpleQueue()
    for device in worker_devices(spec.device, workers):
        devices.put(device)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_start_worker,
                               initargs=(spec, devices, _transformers_progress_bars()))
    try:
        futures = {pool.submit(_score_in_worker, job): job for job in jobs}
        for future in as_completed(futures):
            scores, seconds = future.result()
            on_scored(futures[future], scores, seconds)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
