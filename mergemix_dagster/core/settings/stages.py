"""The proxy-fidelity study, the mid-training stages, what a failed check does, and what a stage may be called."""

from __future__ import annotations

import re

from pydantic import Field

from mergemix_dagster.core.errors import InvalidStageNameError
from mergemix_dagster.core.settings.base import StrictModel
from mergemix_dagster.core.settings.evaluation import TaskSettings
from mergemix_dagster.core.settings.protocol import ValidationProtocol


class ValidationSettings(StrictModel):
    """The proxy-fidelity study (``mergemix validate``): reference models trained on real data mixtures.

    Reference runs use the expert recipe (same base, token budget, LR and schedule, same share of
    general data), so a merged proxy and its reference differ only in merge vs. joint training.
    """

    n_mixtures: int = Field(12, ge=3, description="mixtures for rank fidelity, incl. the chosen one and uniform")
    seed: int = Field(0, description="seed of the validation mixtures")
    dual_pair: list[str] | None = Field(
        None, min_length=2, max_length=2, description="two domains for the dual-capability curve; default: first two"
    )
    dual_alphas: list[float] = Field(default_factory=lambda: [round(0.1 * i, 1) for i in range(1, 10)])
    quality_seeds: int = Field(2, ge=1, description="training seeds per arm of the hierarchy study; the "
                               "mixture-quality comparison trains at validation.protocol.seeds")
    heldout_tasks: list[TaskSettings] = Field(
        default_factory=lambda: [TaskSettings(name="mm_arith_words", capability="math", metric="gold_prob"),
                                 TaskSettings(name="mm_prose", capability="language", metric="gold_prob"),
                                 TaskSettings(name="mm_code", capability="code", metric="gold_prob")],
        description="benchmarks scored in validation but never used by the search; unset: these, less any that "
        "evaluation.tasks scores",
    )
    protocol: ValidationProtocol = Field(
        default_factory=ValidationProtocol,
        description="the pre-registered mixture-quality comparison: metric, seeds, arms, confidence, RegMix swarm",
    )
    min_spearman: float = Field(0.9, description="asset check fails (ERROR) when overall rank fidelity ρ is lower")
    min_surrogate_cv_spearman: float = Field(
        0.5, description="asset check warns when a surrogate's out-of-fold Spearman ρ is lower"
    )


class StageSettings(StrictModel):
    """Mid-training checkpoints to re-optimize from. Each becomes a stage partition."""

    watch: str | None = Field(
        None, description="directory or s3:// prefix the sensor watches; each HF checkpoint subfolder is a stage"
    )
    checkpoints: dict[str, str] = Field(default_factory=dict, description="stage name -> checkpoint (dir, s3://, hub id)")
    schedule: str = Field("0 3 * * *", description="cron of the periodic re-optimization of the latest stage")


class CheckSettings(StrictModel):
    """What a failed quality check does: warn (the default) or stop the stage before the mixture is chosen."""

    block: bool = Field(
        False,
        description="failed checks (every expert beats the base on its capability, surrogate quality) are "
        "ERROR and block the assets downstream of them in the run; default: WARN and go on",
    )


#: A stage is a Dagster partition key and a folder name: no ``|`` (multi-partition separator), no ``/``.
STAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_stage_name(name: str) -> None:
    """``InvalidStageNameError`` unless ``name`` is a usable partition key and folder name."""
    if not isinstance(name, str) or not STAGE_NAME.match(name):
        shown = name if len(str(name)) <= 40 else f"{str(name)[:40]}... ({len(name)} characters)"
        raise InvalidStageNameError(
            f"stage name {shown!r} is not valid: use 1-64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit (no '|', '/', spaces)"
        )
