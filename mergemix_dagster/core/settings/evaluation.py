"""Which benchmarks score a candidate, and where and how the scoring runs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from mergemix_dagster.core.settings.base import StrictModel


class TaskSettings(StrictModel):
    name: str
    capability: str
    metric: str = "acc"


class EvaluationSettings(StrictModel):
    tasks: list[TaskSettings] = Field(
        default_factory=lambda: [
            TaskSettings(name="mm_math", capability="math", metric="gold_prob"),
            TaskSettings(name="mm_code_bpb", capability="code", metric="byte_prob"),
            TaskSettings(name="mm_prose_bpb", capability="language", metric="byte_prob"),
            TaskSettings(name="mm_facts", capability="knowledge", metric="gold_prob"),
        ],
        description="bundled multiple-choice tasks report acc, acc_norm and gold_prob (softmax probability of the "
        "gold choice); the bits-per-byte tasks mm_code_bpb (code) and mm_prose_bpb (language) report byte_prob "
        "(2^-bits per byte of each held-out block or paragraph, higher is better) and bits_per_byte",
    )
    tasks_dir: str | None = Field(None, description="folder of lm-eval task YAML; default: the bundled tasks")
    batch_size: int = 64
    limit: int | None = Field(None, description="evaluate only the first N items of each task (smoke runs)")

    @field_validator("tasks")
    @classmethod
    def _nonempty(cls, value: list[TaskSettings]) -> list[TaskSettings]:
        if not value:
            raise ValueError("at least one evaluation task is needed")
        return value

    # where and how many: nothing here changes a score (not in cache keys beyond the settings hash)
    workers: int = Field(1, ge=1, description="worker processes on this machine that score candidates; each "
                         "loads the base and the task vectors once (W × (K + 2) models in memory)")
    device: str | None = Field(None, description="cpu, cuda, cuda:N or auto (with auto and several GPUs, worker "
                               "w takes GPU w mod n); default: experts.device")
    threads: int | None = Field(None, ge=1, description="torch threads per worker; default: 1 when workers > 1 "
                                "(2 threads per process under contention measured 3.5x slower), torch's own else")
    task_vectors: Literal["device", "cpu"] = Field(
        "device", description="where the base and the experts' tensors are kept for merging: on the model's "
        "device ((K + 2) × the model there), or in (pinned) CPU memory, applied tensor by tensor")
    pool: str = Field("mergemix_evaluation", description="Dagster concurrency pool of the evaluation assets")
