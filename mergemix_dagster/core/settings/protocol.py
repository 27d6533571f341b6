"""The pre-registered protocol of ``mergemix validate``'s mixture-quality comparison (docs/validation.md).

Everything that decides whether the chosen mixture "wins" is fixed here, in the settings, before any run
trains: the metric it is judged on, the seeds (fresh ones, never used while developing), the arms, the
confidence of the paired intervals and the size of the independent RegMix swarm. Its hash goes into the
report header and into ``quality.json`` with every run; changing it after the results were judged is refused
unless it is declared as a new attempt (``new_attempt``), which is recorded with its date and reason.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from mergemix_dagster.core.errors import ProtocolError
from mergemix_dagster.core.settings.base import StrictModel

Arm = Literal["uniform", "natural", "regmix", "best_single_domain", "chosen"]
ARMS: tuple[str, ...] = ("uniform", "natural", "regmix", "best_single_domain", "chosen")
#: fewest seeds a paired t-interval is computed from (2 degrees of freedom)
MIN_SEEDS = 3
#: the judging metrics besides ``capability:<name>``
METRICS = ("macro_average", "objective")


class ValidationProtocol(StrictModel):
    """What the trained comparison of arms is judged on, declared before it runs."""

    metric: str = Field(
        "macro_average",
        description="macro_average: equal-weight mean of every capability score (a capability the objective "
        "minimizes enters with its sign flipped, so higher is better); objective: the search objective; "
        "capability:<name>: that capability alone",
    )
    seeds: list[int] = Field(
        default_factory=lambda: [7001, 7002, 7003],
        description="training seeds of every arm (at least 3, distinct); the defaults were never used while "
        "developing the method",
    )
    arms: list[Arm] = Field(default_factory=lambda: list(ARMS), description="arms trained at every seed; "
                            "chosen and at least one other")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="two-sided confidence of the paired t-intervals")
    regmix_runs: int = Field(8, ge=2, description="trained runs of RegMix's own swarm (independent of the "
                             "validation design, never containing the chosen mixture)")
    regmix_concentration: float = Field(4.0, gt=0.0, description="total Dirichlet concentration of the swarm "
                                        "around the natural token prior (Dirichlet(c · prior))")
    regmix_seed: int = Field(0, description="seed of the swarm's Dirichlet draws")
    new_attempt: str | None = Field(
        None, description="the reason for a new attempt: required to judge with another protocol once one was "
        "judged on this stage; recorded with its date beside the earlier attempts",
    )

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value in METRICS or (value.startswith("capability:") and value.split(":", 1)[1]):
            return value
        raise ProtocolError(f"validation.protocol.metric {value!r} is not one of {list(METRICS)} or "
                            "'capability:<name>'")

    @field_validator("seeds")
    @classmethod
    def _enough_seeds(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ProtocolError(f"validation.protocol.seeds {value} repeats a seed: a repeated seed is the same "
                                "run twice, not another draw of the noise")
        if len(value) < MIN_SEEDS:
            raise ProtocolError(f"validation.protocol.seeds {value}: at least {MIN_SEEDS} seeds are needed for a "
                                "paired interval with any power (2 seeds leave one degree of freedom)")
        return value

    @field_validator("arms")
    @classmethod
    def _arms(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ProtocolError(f"validation.protocol.arms {value} repeats an arm")
        if "chosen" not in value or len(value) < 2:
            raise ProtocolError(f"validation.protocol.arms {value} must hold 'chosen' and at least one other arm")
        return value

    @field_validator("new_attempt")
    @classmethod
    def _reason(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ProtocolError("validation.protocol.new_attempt must give the reason for the new attempt")
        return value

    @property
    def capability(self) -> str | None:
        """The capability of a ``capability:<name>`` metric, else None."""
        return self.metric.split(":", 1)[1] if self.metric.startswith("capability:") else None

    def judging(self) -> dict:
        """What the protocol hash covers: everything but the attempt's reason (a label, not a yardstick)."""
        return self.model_dump(exclude={"new_attempt"})
