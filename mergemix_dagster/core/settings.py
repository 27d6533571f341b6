"""Pipeline settings: one YAML file says which domains, base model, recipes, benchmarks and search to use.

The file is chosen by ``$MERGEMIX_CONFIG`` (a path, or the name of a bundled config: ``default``,
``smoke``); results go under ``$MERGEMIX_HOME`` (default ``./.mergemix``). Settings are read when the
Dagster code location loads, because domains decide the partitions.
"""

from __future__ import annotations

import os
import re
from functools import cached_property
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from mergemix_dagster.core.errors import ConfigError, InvalidStageNameError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
DEFAULT_HOME = ".mergemix"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SubdomainSettings(_Strict):
    """One sub-domain of a domain (e.g. ``repos`` of ``code``); its flat mixture name is ``code/repos``."""

    name: str
    paths: list[str] = Field(default_factory=list, description="jsonl/parquet/txt files or dirs, local or s3://")
    max_chars: int | None = Field(None, gt=0, description="cap on this sub-domain's corpus; default: the domain's")
    weight: float | None = Field(
        None, gt=0, description="share of this sub-domain (by characters) when its domain is used whole, e.g. by "
        "the top-down domain expert; set on every sub-domain of the domain or none (default: natural proportions)",
    )

    @model_serializer(mode="wrap")
    def _dump_without_default_cap(self, handler):
        """Without its own cap or weight a sub-domain dumps as before they existed (settings hashes hold)."""
        data = handler(self)
        for name in ("max_chars", "weight"):
            if getattr(self, name) is None and isinstance(data, dict):
                data.pop(name, None)
        return data

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not value or not value.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"sub-domain name {value!r} must be alphanumeric (with - or _)")
        return value


class DomainSettings(_Strict):
    """One data domain. With no ``paths`` the embedded default builder of that name is used."""

    name: str
    paths: list[str] = Field(default_factory=list, description="jsonl/parquet/txt files or dirs, local or s3://")
    text_field: str = "text"
    capability: str | None = Field(None, description="the capability this domain should improve (for reports)")
    max_chars: int = Field(4_000_000, gt=0, description="cap on corpus size (characters) after loading")
    subdomains: list[SubdomainSettings] = Field(
        default_factory=list, description="optional split into sub-domains, each with its own paths"
    )

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not value or not value.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"domain name {value!r} must be alphanumeric (with - or _)")
        return value

    @model_validator(mode="after")
    def _valid_subdomains(self) -> "DomainSettings":
        names = [s.name for s in self.subdomains]
        if len(set(names)) != len(names):
            raise ValueError(f"domain {self.name!r}: duplicate sub-domain names {names}")
        if self.subdomains and self.paths:
            raise ValueError(
                f"domain {self.name!r} lists both paths and sub-domains; put every path under a sub-domain"
            )
        return self

    @model_serializer(mode="wrap")
    def _flat_dump_unchanged(self, handler):
        """A flat domain dumps as before sub-domains existed, so its settings hash (code version) is unchanged."""
        data = handler(self)
        if not self.subdomains and isinstance(data, dict):
            data.pop("subdomains", None)
        return data

    def leaves(self) -> dict[str, list[str]]:
        """Flat mixture names and their paths: ``{"code/repos": [...], ...}``, or ``{"math": [...]}`` unsplit."""
        if not self.subdomains:
            return {self.name: list(self.paths)}
        return {f"{self.name}/{s.name}": list(s.paths) for s in self.subdomains}


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
    general_paths: list[str] = Field(
        default_factory=list,
        description="the team's own general text (files, dirs, globs; jsonl/parquet/txt, field `text`); "
        "empty: the embedded general corpus",
    )
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

    @field_validator("learning_rate")
    @classmethod
    def _positive_rate(cls, value: float) -> float:
        if not value > 0 or value >= 1.0:  # a zero rate trains nothing; NaN fails `> 0`
            raise ValueError(f"learning_rate must be in (0, 1), got {value}: a zero rate trains nothing")
        return value


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


class ObjectiveSettings(_Strict):
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
        description="capabilities the seed design moves by less than this many standard errors of their "
        "benchmark (lm-eval's stderr on the base) are reported but not optimized; 0: optimize every one. "
        "2.77 = 1.96·√2: the best and worst mixture differ at 95 % confidence",
    )


class SearchSettings(_Strict):
    n_candidates: int = Field(40, ge=2, description="seed design size; must be >= number of domains + 1")
    n_samples: int = Field(100_000, ge=100, description="objective evaluations of the simplex search")
    seed: int = 0
    merge_method: str = "linear"
    capability_weights: dict[str, float] | None = Field(
        None, description="shorthand for objective.weights (kept for older configs)"
    )
    objective: ObjectiveSettings = ObjectiveSettings()
    choice: Literal["top_k_mean", "argmax", "lcb"] = Field(
        "top_k_mean", description="top_k_mean: mean of the k best points (robust); argmax; lcb: lower confidence bound"
    )
    top_k: int = Field(100, ge=1, description="points averaged by the top_k_mean choice")
    refine: bool = Field(True, description="local refinement of the best sampled points")
    ensemble: int = Field(8, ge=0, description="bootstrap surrogates per capability for intervals (0: none)")
    lcb_quantile: float = Field(0.1, gt=0.0, lt=0.5, description="interval quantiles (q, 1-q); lcb uses q")
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


ExportFormat = Literal["json", "yaml", "hf_yaml", "hf_python", "megatron", "olmo"]


class ExportSettings(_Strict):
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


TRAINER_PLACEHOLDERS = (
    "base", "mixture_json", "output", "tokens", "learning_rate", "schedule", "seq_len", "batch_size", "seed",
    "warmup_steps", "domain", "stage", "run_id",
)


class KubernetesTrainerSettings(_Strict):
    """The pod the ``kubernetes`` trainer runs the command in (dagster-k8s ``PipesK8sClient``)."""

    image: str | None = Field(None, description="the team's trainer image")
    namespace: str = "default"
    gpus: int = Field(1, ge=0, description="nvidia.com/gpu requested and limited")
    cpu: str | None = None
    memory: str | None = None
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict] = Field(default_factory=list)
    service_account: str | None = None


class EcsTrainerSettings(_Strict):
    """The task the ``ecs`` trainer runs the command in (dagster-aws ``PipesECSClient``)."""

    cluster: str | None = None
    task_definition: str | None = None
    container_name: str = "trainer"
    launch_type: Literal["EC2", "FARGATE"] = "EC2"
    subnets: list[str] = Field(default_factory=list)
    security_groups: list[str] = Field(default_factory=list)
    gpus: int = Field(1, ge=0)


class TrainerSettings(_Strict):
    """Who trains experts: the in-process loop (``embedded``) or the team's own command, run locally through
    Dagster Pipes (``command``) or on a cluster (``kubernetes``, ``ecs``). docs/cluster.md has the contract."""

    kind: Literal["embedded", "command", "kubernetes", "ecs"] = "embedded"
    command: str | None = Field(
        None, description="command template, e.g. 'torchrun --nproc_per_node 8 train.py --init {base} "
        "--mixture {mixture_json} --tokens {tokens} --lr {learning_rate} --schedule constant --out {output}'"
    )
    env: dict[str, str] = Field(default_factory=dict, description="extra environment of the command")
    kubernetes: KubernetesTrainerSettings = KubernetesTrainerSettings()
    ecs: EcsTrainerSettings = EcsTrainerSettings()
    pool: str = Field("mergemix_training", description="Dagster concurrency pool of the training assets "
                      "(experts, reference runs): cap concurrent GPU jobs with `dagster instance concurrency set`")

    @model_validator(mode="after")
    def _command_fits(self) -> "TrainerSettings":
        import string

        if self.kind == "embedded":
            return self
        if not self.command:
            raise ValueError(f"trainer kind {self.kind!r} needs trainer.command")
        used = {name for _, name, _, _ in string.Formatter().parse(self.command) if name is not None}
        unknown = sorted(used - set(TRAINER_PLACEHOLDERS))
        if unknown:
            raise ValueError(f"trainer.command uses unknown placeholders {unknown}; known: {list(TRAINER_PLACEHOLDERS)}")
        if not {"output", "base", "mixture_json"} <= used:
            raise ValueError("trainer.command must use {base}, {mixture_json} and {output}")
        if self.kind == "kubernetes" and not self.kubernetes.image:
            raise ValueError("trainer kind 'kubernetes' needs trainer.kubernetes.image")
        if self.kind == "ecs" and not (self.ecs.cluster and self.ecs.task_definition):
            raise ValueError("trainer kind 'ecs' needs trainer.ecs.cluster and trainer.ecs.task_definition")
        return self


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
    export: ExportSettings = ExportSettings()
    initial_stage: str = "s0"
    trainer: TrainerSettings = TrainerSettings()
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

    @model_validator(mode="after")
    def _search_names(self) -> "Settings":
        """Names in the search settings must exist, so a typo fails at load, not after every expert trained."""
        domains = set(self.domain_names)
        caps = set(self.capabilities)
        for name in ("min_weight", "max_weight", "pinned"):
            unknown = sorted(set(getattr(self.search, name)) - domains)
            if unknown:
                raise ValueError(f"search.{name} names unknown domains {unknown}; domains are {sorted(domains)}")
        o = self.search.objective
        for name, table in (("weights", self.search.objective_weights or {}), ("directions", o.directions),
                            ("floors", o.floors)):
            unknown = sorted(set(table) - caps)
            if unknown:
                raise ValueError(f"search.objective.{name} names unknown capabilities {unknown}; "
                                 f"capabilities are {sorted(caps)}")
        if isinstance(o.prior, dict) and set(o.prior) - domains:
            raise ValueError(f"search.objective.prior names unknown domains {sorted(set(o.prior) - domains)}")
        if self.search.n_candidates < len(domains) + 1:
            raise ValueError(f"search.n_candidates={self.search.n_candidates} is below the number of domains + 1 "
                             f"({len(domains) + 1}): the seed design needs every expert and one mixture")
        return self

    @model_validator(mode="after")
    def _hierarchy_needs_subdomains(self) -> "Settings":
        if self.search.hierarchy != "none" and not self.split_domains:
            raise ValueError(f"search.hierarchy={self.search.hierarchy!r} needs at least one domain with subdomains")
        for d in self.domains:
            if d.subdomains and len(d.subdomains) < 2:
                raise ValueError(f"domain {d.name!r} lists one sub-domain; split into two or more, or list paths")
            if len({sub.weight is None for sub in d.subdomains}) > 1:
                raise ValueError(f"domain {d.name!r}: set `weight` on every sub-domain or on none")
        return self

    @property
    def split_domains(self) -> tuple[str, ...]:
        """Domains that list sub-domains (the ones a hierarchical search optimizes inside)."""
        return tuple(d.name for d in self.domains if d.subdomains)

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

    @model_validator(mode="after")
    def _sane_search_and_stages(self) -> "Settings":
        for stage in [self.initial_stage, *self.stages.checkpoints]:
            check_stage_name(stage)
        return self


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
