"""Training recipes of the settings file: ``pretrain`` (the stage-0 base) and ``experts``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from mergemix_dagster.core.settings.base import StrictModel


class RecipeSettings(StrictModel):
    """A training recipe (see ``core.train.TrainRecipe``)."""

    tokens: int = Field(gt=0)
    seq_len: int = 256
    batch_size: int = 16
    learning_rate: float = 1e-3
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"

    @field_validator("learning_rate")
    @classmethod
    def _positive_rate(cls, value: float) -> float:
        if not value > 0 or value >= 1.0:  # a zero rate trains nothing; NaN fails `> 0`
            raise ValueError(f"learning_rate must be in (0, 1), got {value}: a zero rate trains nothing")
        return value


class ExpertSettings(RecipeSettings):
    """Experts: constant LR, short horizon. ``general_fraction`` mixes in general data (DeMix uses 0.5)."""

    general_fraction: float = Field(0.0, ge=0.0, lt=1.0)
