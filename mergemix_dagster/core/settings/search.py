"""What "best mixture" means, how it is searched for, the target run it is for and the files it is handed over in."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_serializer, model_validator

from mergemix_dagster.core.settings.base import StrictModel


class ObjectiveSettings(StrictModel):
    """What "best mixture" means (see docs/search.md). Targets are capabilities.

    The default — maximin over capabilities with a light pull toward the corpora's natural token mixture —
    is the one a mid-training team can defend: a plain mean of near-linear capability scores is linear in α,
    so its optimum is a one-domain mixture; maximin asks for the mixture whose *weakest* capability gains the
    most, and the KL pull keeps weights near the natural data unless the evidence says otherwise.
    """

    aggregate: Literal["mean", "min"] = Field("min", description="mean: weighted average; min: maximin")
    weights: dict[str, float] | None = Field(None, description="per-capability weights; None: equal")
    directions: dict[str, Literal["maximize", "minimize"]] = Field(
        default_factory=dict, description="per capability; default maximize (use minimize for loss/BPB)"
    )
    floors: dict[str, float] = Field(
        default_factory=dict, description="hard minimum (maximize) / maximum (minimize) per capability, raw units"
    )
    no_capability_below_base: bool = Field(
        False, description="floor every capability at the base model's score"
    )
    kl_weight: float = Field(0.05, ge=0.0, description="weight of the KL(α ‖ prior) penalty; 0 turns it off")
    prior: Literal["tokens", "uniform"] | dict[str, float] = Field(
        "tokens", description="tokens: the corpora's natural token shares; uniform; or {domain: weight}"
    )
    min_spread_in_noise: float = Field(
        2.77, ge=0.0,
        description="FALLBACK ONLY, for a capability without per-item scores (a non-mean metric such as "
        "perplexity, or an evaluator that keeps no items): it is resolved when the seed design moves it by at "
        "least this many standard errors of its benchmark (lm-eval's stderr on the base); 0: every such "
        "capability is resolved. 2.77 = 1.96·√2. Capabilities with items use max_resolution_p",
    )
    max_resolution_p: float = Field(
        0.01, gt=0.0, le=1.0,
        description="a capability is resolved (optimized) when the within-item permutation test of 'the "
        "mixture moves it at all' over the seed design and the base gives p below this. Fixed before any run: "
        "0.01 per capability keeps the chance of resolving a pure-noise capability among four at about 4 %",
    )
    protect_unresolved: bool = Field(
        True,
        description="an unresolved capability is not optimized but protected: its predicted score may not fall "
        "below the base's minus 2 paired standard errors, and every domain whose capability it is keeps at "
        "least its prior (natural token) share; false: unresolved capabilities and their domains are unguarded",
    )

class SearchSettings(StrictModel):
    n_candidates: int = Field(40, ge=2, description="seed design size; must be >= number of domains + 1")
    n_samples: int = Field(100_000, ge=100, description="objective evaluations of the simplex search")
    seed: int = 0
    merge_method: str = "linear"
    capability_weights: dict[str, float] | None = Field(
        None, description="shorthand for objective.weights (kept for older configs)"
    )
    objective: ObjectiveSettings = ObjectiveSettings()
    choice: Literal["top_k_mean", "argmax", "lcb"] = Field(
        "lcb", description="lcb (default): the point whose lower confidence bound over the bootstrap ensemble is "
        "highest (needs ensemble >= 2; chosen on public swarms, benchmarks/README.md); top_k_mean: mean of the k "
        "best points; argmax"
    )
    top_k: int = Field(100, ge=1, description="points averaged by the top_k_mean choice")
    refine: bool = Field(True, description="local refinement of the best sampled points")
    ensemble: int = Field(8, ge=0, description="bootstrap surrogates per capability for intervals (0: none)")
    lcb_quantile: float = Field(0.1, gt=0.0, lt=0.5, description="interval quantiles (q, 1-q); lcb uses q")
    measured_margin_quantile: float = Field(
        0.025, gt=0.0, lt=0.5,
        description="a measured mixture replaces the verified search choice only if this lower quantile of the "
        "paired bootstrap difference of their objectives (same items) is > 0; 0.025: one-sided 97.5 %",
    )
    min_weight: dict[str, float] = Field(default_factory=dict, description="per-domain lower bound on the weight")
    max_weight: dict[str, float] = Field(default_factory=dict, description="per-domain upper bound on the weight")
    pinned: dict[str, float] = Field(default_factory=dict, description="domains whose weight is fixed")
    rounds: list[int] | None = Field(
        None, description="DeMix rounds after the seed design: candidates per round; None: [N/2, N/4]; []: none"
    )
    cv_folds: int = 5
    hierarchy: Literal["none", "top_down", "bottom_up"] = Field(
        "none", description="sub-domain search (docs/hierarchy.md): none; top_down: coarse mixture over domain "
        "experts trained on their natural sub-domain mix, then weights inside each domain; bottom_up: weights "
        "inside each domain, consolidate each domain by merging, then the coarse mixture",
    )

    @model_serializer(mode="wrap")
    def _flat_dump_unchanged(self, handler):
        """Without a hierarchy the search dumps as before it existed, so code versions (cache keys) hold."""
        data = handler(self)
        if self.hierarchy == "none" and isinstance(data, dict):
            data.pop("hierarchy", None)
        return data

    @model_validator(mode="after")
    def _weights_alias(self) -> "SearchSettings":
        if self.capability_weights is not None and self.objective.weights is not None:
            raise ValueError("set search.objective.weights or search.capability_weights, not both")
        for name in ("min_weight", "max_weight", "pinned"):
            for d, v in getattr(self, name).items():
                if not 0.0 <= v <= 1.0:
                    raise ValueError(f"search.{name}[{d!r}] = {v} must lie in [0, 1]")
        if self.choice == "lcb" and self.ensemble < 2:
            raise ValueError(f"search.choice 'lcb' (the default) needs search.ensemble >= 2, got {self.ensemble}; "
                             "set search.choice to top_k_mean or argmax to run without an ensemble")
        if self.rounds is not None and any(r < 1 for r in self.rounds):
            raise ValueError(f"search.rounds must be positive candidate counts, got {self.rounds}")
        return self

    @property
    def round_sizes(self) -> list[int]:
        if self.rounds is not None:
            return list(self.rounds)
        return [r for r in (self.n_candidates // 2, self.n_candidates // 4) if r >= 1]

    @property
    def objective_weights(self) -> dict[str, float] | None:
        return self.objective.weights if self.objective.weights is not None else self.capability_weights


class TargetSettings(StrictModel):
    """The real training run the chosen mixture is handed to: its token budget and the repetition cap.

    With ``tokens`` set, the search keeps every domain within ``α_d · tokens ≤ max_epochs · N_d`` (``N_d``: the
    domain's available tokens, counted from its corpus) and the exports carry a token plan.
    """

    tokens: int | None = Field(None, gt=0, description="tokens of the target run (e.g. 100000000000); None: no bound")
    max_epochs: float = Field(4.0, gt=0, description="at most this many passes over any domain's available tokens")


ExportFormat = Literal["json", "yaml", "hf_yaml", "hf_python", "megatron", "olmo"]


class ExportSettings(StrictModel):
    """Files for trainers written next to ``mixture.json`` (docs/exports.md describes each format).

    Names are flat mixture names: a domain (``math``) or a sub-domain (``code/repos``).
    """

    formats: list[ExportFormat] = Field(
        default_factory=lambda: ["json", "yaml", "hf_yaml", "hf_python", "megatron", "olmo"],
        description="formats written by default",
    )
    megatron_prefixes: dict[str, list[str] | dict[str, int]] = Field(
        default_factory=dict,
        description="name -> Megatron dataset prefixes (a list: the name's weight is split evenly; "
        "a {prefix: tokens} map: split by token counts)",
    )
    olmo_paths: dict[str, list[str]] = Field(
        default_factory=dict, description="name -> tokenized (.npy) paths for OLMo; default: the domain's paths"
    )
    missing_location: str = Field(
        "UNSET/{name}", description="written where a name has no prefix/path, so a trainer fails loudly on it"
    )
    strict: bool = Field(False, description="raise ExportError instead of writing a missing_location placeholder")
    decimals: int = Field(8, ge=2, le=15, description="decimals of weights in trainer files (they sum to 1 exactly)")
