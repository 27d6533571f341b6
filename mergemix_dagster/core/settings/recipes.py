"""How to train, defined once: ``TrainRecipe``, and the settings sections ``pretrain`` and ``experts`` built from it.

The loop, the torchrun entry point and the command trainers take a ``TrainRecipe`` (a frozen dataclass:
``asdict`` of it is the recipe of a mixture file). The settings sections are pydantic models whose fields
are *generated* from ``TrainRecipe``'s, so a field added to the recipe is a setting at once and the two
cannot drift apart; ``recipe_from`` turns a section back into a recipe.

A recipe field added after the settings existed (``grad_accum_steps``) is left out of the section's dump
while it has its default: the dump is part of cache keys, and an unchanged file must keep its keys.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, fields
from typing import Any, Literal, get_type_hints

from pydantic import Field, create_model, field_validator, model_serializer

from mergemix_dagster.core.settings.base import StrictModel


@dataclass(frozen=True)
class TrainRecipe:
    """How to train: token budget, batch geometry, optimiser and schedule."""

    tokens: int
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
    grad_accum_steps: int = 1  # micro-batches per optimiser step (per rank); the global batch is unchanged

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def steps(self) -> int:
        """Optimiser steps: ``ceil(tokens / (batch_size * seq_len))``, at least 1."""
        return max(1, math.ceil(self.tokens / self.tokens_per_step))


#: recipe fields that dump only when set (they came after settings files whose cache keys must hold)
DUMPED_WHEN_SET = {"grad_accum_steps": 1}


class RecipeSection(StrictModel):
    """What a recipe section adds to ``TrainRecipe``'s fields: load-time checks and the dump rule above."""

    @field_validator("learning_rate", check_fields=False)
    @classmethod
    def _positive_rate(cls, value: float) -> float:
        if not value > 0 or value >= 1.0:  # a zero rate trains nothing; NaN fails `> 0`
            raise ValueError(f"learning_rate must be in (0, 1), got {value}: a zero rate trains nothing")
        return value

    @model_serializer(mode="wrap")
    def _dump_as_before(self, handler):
        data = handler(self)
        for name, default in DUMPED_WHEN_SET.items():
            if isinstance(data, dict) and getattr(self, name) == default:
                data.pop(name, None)
        return data


def _recipe_fields(**constrained: Any) -> dict[str, Any]:
    """``TrainRecipe``'s fields as pydantic field definitions, in order; ``constrained`` replaces some."""
    hints = get_type_hints(TrainRecipe)
    return {
        f.name: constrained.get(f.name, (hints[f.name], ... if f.default is MISSING else f.default))
        for f in fields(TrainRecipe)
    }


RecipeSettings = create_model(
    "RecipeSettings",
    __base__=RecipeSection,
    __module__=__name__,
    __doc__="A training recipe in the settings file: the fields of ``TrainRecipe``, checked at load.",
    **_recipe_fields(tokens=(int, Field(gt=0)), grad_accum_steps=(int, Field(1, ge=1))),
)


class ExpertSettings(RecipeSettings):
    """Experts: constant LR, short horizon. ``general_fraction`` mixes in general data (DeMix uses 0.5)."""

    general_fraction: float = Field(0.0, ge=0.0, lt=1.0)


def recipe_from(section: RecipeSection) -> TrainRecipe:
    """The ``TrainRecipe`` of a settings section (``pretrain``, ``experts``): its recipe fields, nothing more."""
    return TrainRecipe(**{f.name: getattr(section, f.name) for f in fields(TrainRecipe)})
