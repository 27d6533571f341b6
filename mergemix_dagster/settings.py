"""Pipeline settings: one YAML file says which domains, base model, recipes, benchmarks and search to use.

The file is chosen by ``$MERGEMIX_CONFIG`` (a path, or the name of a bundled config: ``default``,
``smoke``); results go under ``$MERGEMIX_HOME`` (default ``./.mergemix``). Settings are read when the
Dagster code location loads, because domains decide the partitions.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .core.errors import ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"
DEFAULT_HOME = ".mergemix"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DomainSettings(_Strict):
    """One data domain. With no ``paths`` the embedded default builder of that name is used."""

    name: str
    paths: list[str] = Field(default_factory=list, description="jsonl/parquet/txt files or dirs, local or s3://")
    text_field: str = "text"
    capability: str | None = Field(None, description="the capability this domain should improve (for reports)")
    max_chars: int = Field(4_000_000, gt=0, description="cap on corpus size (characters) after loading")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not value or not value.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"domain name {value!r} must be alphanumeric (with - or _)")
        return value


class ModelSettings(_Strict):
    """The stage-0 base. ``base: embedded`` pre-trains a tiny Llama here; otherwise a local HF dir or hub id."""

    base: str = "embedded"
    vocab_size: int = 2048
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 344
    max_position_embeddings: int = 256
    general_max_chars: int = 2_000_000
    offline: bool = Field(
        True,
        description="no request reaches the Hugging Face hub (HF_HUB_OFFLINE and friends are set when the "
        "definitions load); set false to download a base given as a hub id",
    )


class RecipeSettings(_Strict):
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


class ExpertSettings(RecipeSettings):
    """Experts: constant LR, short horizon. ``general_fraction`` mixes in general data (DeMix uses 0.5)."""

    general_fraction: float = Field(0.0, ge=0.0, lt=1.0)


class TaskSettings(_Strict):
    name: str
    capability: str
    metric: str = "acc"


class EvaluationSettings(_Strict):
    tasks: list[TaskSettings] = Field(
        default_factory=lambda: [
            TaskSettings(name="mm_math", capability="math", metric="gold_prob"),
            TaskSettings(name="mm_code", capability="code", metric="gold_prob"),
            TaskSettings(name="mm_prose", capability="language", metric="gold_prob"),
            TaskSettings(name="mm_facts", capability="knowledge", metric="gold_prob"),
        ],
        description="bundled tasks report acc, acc_norm and gold_prob (softmax probability of the gold choice)",
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


class SearchSettings(_Strict):
    n_candidates: int = Field(40, ge=2)
    n_samples: int = Field(100_000, ge=100)
    seed: int = 0
    merge_method: str = "linear"
    capability_weights: dict[str, float] | None = Field(
        None, description="None: macro-average of normalized capability scores; else a weighted objective"
    )
    cv_folds: int = 5


class ValidationSettings(_Strict):
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
    quality_seeds: int = Field(2, ge=1, description="training seeds per arm (uniform, RegMix-style, chosen)")
    heldout_tasks: list[TaskSettings] = Field(
        default_factory=lambda: [TaskSettings(name="mm_arith_words", capability="math", metric="gold_prob")],
        description="benchmarks scored in validation but never used by the search",
    )
    min_spearman: float = Field(0.9, description="asset check fails (ERROR) when overall rank fidelity ρ is lower")
    min_surrogate_cv_spearman: float = Field(
        0.5, description="asset check warns when a surrogate's out-of-fold Spearman ρ is lower"
    )


class StageSettings(_Strict):
    """Mid-training checkpoints to re-optimize from. Each becomes a stage partition."""

    watch: str | None = Field(
        None, description="directory or s3:// prefix the sensor watches; each HF checkpoint subfolder is a stage"
    )
    checkpoints: dict[str, str] = Field(default_factory=dict, description="stage name -> checkpoint (dir, s3://, hub id)")
    schedule: str = Field("0 3 * * *", description="cron of the periodic re-optimization of the latest stage")


class TargetSettings(_Strict):
    """The real training run the chosen mixture is handed to: its token budget and the repetition cap.

    With ``tokens`` set, the search keeps every domain within ``α_d · tokens ≤ max_epochs · N_d`` (``N_d``: the
    domain's available tokens, counted from its corpus) and the exports carry a token plan.
    """

    tokens: int | None = Field(None, gt=0, description="tokens of the target run (e.g. 100000000000); None: no bound")
    max_epochs: float = Field(4.0, gt=0, description="at most this many passes over any domain's available tokens")


class CheckSettings(_Strict):
    """What a failed quality check does: warn (the default) or stop the stage before the mixture is chosen."""

    block: bool = Field(
        False,
        description="failed checks (every expert beats the base on its capability, surrogate quality) are "
        "ERROR and block the assets downstream of them in the run; default: WARN and go on",
    )


class Settings(_Strict):
    home: str = Field(default_factory=lambda: os.environ.get("MERGEMIX_HOME", DEFAULT_HOME))
    store_root: str | None = Field(None, description="checkpoint store root; default <home>/store; may be s3://")
    database: str | None = Field(None, description="DuckDB file; default <home>/mergemix.duckdb")
    domains: list[DomainSettings]
    model: ModelSettings = ModelSettings()
    pretrain: RecipeSettings = RecipeSettings(tokens=600_000, learning_rate=2e-3, schedule="cosine", warmup_steps=20)
    experts: ExpertSettings = ExpertSettings(tokens=250_000, learning_rate=1e-3)
    evaluation: EvaluationSettings = EvaluationSettings()
    search: SearchSettings = SearchSettings()
    validation: ValidationSettings = ValidationSettings()
    stages: StageSettings = StageSettings()
    target: TargetSettings = TargetSettings()
    initial_stage: str = "s0"
    checks: CheckSettings = CheckSettings()

    @model_validator(mode="after")
    def _unique_domains(self) -> "Settings":
        names = [d.name for d in self.domains]
        if len(names) < 2:
            raise ValueError("a mixture needs at least two domains")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate domain names: {names}")
        if "general" in names:
            raise ValueError("'general' is reserved for the general corpus; rename that domain")
        pair = self.validation.dual_pair
        if pair is not None and (len(set(pair)) != 2 or not set(pair) <= set(names)):
            raise ValueError(f"validation.dual_pair {pair} must name two different domains of {names}")
        return self

    @property
    def dual_pair(self) -> tuple[str, str]:
        pair = self.validation.dual_pair or list(self.domain_names[:2])
        return pair[0], pair[1]

    @property
    def domain_names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.domains)

    def domain(self, name: str) -> DomainSettings:
        for d in self.domains:
            if d.name == name:
                return d
        raise ConfigError(f"unknown domain {name!r}; configured domains: {list(self.domain_names)}")

    @cached_property
    def home_path(self) -> Path:
        return Path(self.home).expanduser().resolve()

    @property
    def store_uri(self) -> str:
        return self.store_root or str(self.home_path / "store")

    @property
    def database_path(self) -> str:
        return self.database or str(self.home_path / "mergemix.duckdb")

    @property
    def capabilities(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t.capability for t in self.evaluation.tasks))


def resolve_config_path(name_or_path: str | None = None) -> Path:
    """A path, or the name of a bundled config (``default``, ``smoke``)."""
    value = name_or_path or os.environ.get("MERGEMIX_CONFIG") or "default"
    path = Path(value).expanduser()
    if path.is_file():
        return path
    bundled = CONFIG_DIR / f"{value}.yaml"
    if bundled.is_file():
        return bundled
    known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    raise ConfigError(f"config {value!r} is neither a file nor a bundled config ({known})")


def load_settings(name_or_path: str | None = None) -> Settings:
    path = resolve_config_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return Settings(**raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid settings:\n{exc}") from exc
