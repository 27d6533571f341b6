"""``Settings``: the whole settings file, and the checks that span its sections."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

from pydantic import Field, model_serializer, model_validator

from mergemix_dagster.core.errors import ConfigError, ProtocolError
from mergemix_dagster.core.settings.base import StrictModel
from mergemix_dagster.core.settings.data import DomainSettings, ModelSettings
from mergemix_dagster.core.settings.evaluation import EvaluationSettings
from mergemix_dagster.core.settings.evaluator import EvaluatorSettings
from mergemix_dagster.core.settings.recipes import ExpertSettings, RecipeSettings
from mergemix_dagster.core.settings.search import ExportSettings, SearchSettings, TargetSettings
from mergemix_dagster.core.settings.stages import CheckSettings, StageSettings, ValidationSettings, check_stage_name
from mergemix_dagster.core.settings.trainer import TrainerSettings

DEFAULT_HOME = ".mergemix"


class Settings(StrictModel):
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
    evaluator: EvaluatorSettings = Field(EvaluatorSettings(), description="who scores candidates (kind, command) "
                                         "and in how many Dagster steps (chunk_size); docs/cluster.md")

    @model_serializer(mode="wrap")
    def _evaluator_dumps_when_set(self, handler):
        """``evaluator`` came after settings files existed: it dumps only when set, so cache keys hold."""
        data = handler(self)
        if isinstance(data, dict) and self.evaluator == EvaluatorSettings():
            data.pop("evaluator", None)
        return data

    @model_validator(mode="before")
    @classmethod
    def _default_heldout_apart_from_search(cls, data):
        """The bundled held-out tasks, less any the search scores: a held-out benchmark is one the search never
        sees, and a project whose search uses ``mm_code`` (the ``code`` benchmark until docs/results.md attempt
        7) keeps validating as before. Only when ``validation.heldout_tasks`` is not set; a set list that shares
        a task with ``evaluation.tasks`` is refused below."""
        if not isinstance(data, dict):
            return data
        validation, evaluation = data.get("validation", {}), data.get("evaluation", {})
        if not isinstance(validation, dict) or not isinstance(evaluation, dict) or "heldout_tasks" in validation:
            return data  # set, or sections passed as models: taken as given (the check below still applies)
        try:
            search = {t.name for t in EvaluationSettings(**evaluation).tasks}
        except (ValueError, TypeError):
            return data  # the field's own validation names the problem, with its path
        bundled = ValidationSettings().heldout_tasks
        if not any(t.name in search for t in bundled):
            return data  # the usual case: the field stays unset
        kept = [t.model_dump() for t in bundled if t.name not in search]
        return {**data, "validation": {**validation, "heldout_tasks": kept}}

    @model_validator(mode="after")
    def _heldout_apart_from_search(self) -> "Settings":
        shared = sorted({t.name for t in self.validation.heldout_tasks} & {t.name for t in self.evaluation.tasks})
        if shared:
            raise ValueError(f"validation.heldout_tasks {shared} are also search tasks (evaluation.tasks): a held-out "
                             "benchmark must be one the search never sees; remove them from one of the two lists")
        return self

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
        metric = self.validation.protocol.capability
        if metric is not None and metric not in caps:
            raise ProtocolError(f"validation.protocol.metric names unknown capability {metric!r}; "
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
