"""Pipeline settings: one YAML file says which domains, base model, recipes, benchmarks and search to use.

The file is chosen by ``--config`` or ``$MERGEMIX_CONFIG`` (a path, or the name of a bundled config:
``default``, ``smoke``), else the one the home records (``<home>/project.json``, written by ``mergemix run``),
else the embedded default; results go under ``$MERGEMIX_HOME`` (default ``./.mergemix``). Settings are read when the
Dagster code location loads, because domains decide the partitions.

One module per concern; import from here (``from mergemix_dagster.core.settings import Settings``):

- ``base``: the strict, frozen section every other one derives from;
- ``data``: domains, sub-domains and the stage-0 model;
- ``recipes``: ``TrainRecipe`` (how to train) and the ``pretrain`` / ``experts`` sections built from it;
- ``trainer``: who trains (``trainer.kind``) and each kind's own section (why not a union: see there);
- ``evaluation``: benchmarks and where they run; ``evaluator``: who scores (``evaluator.kind``) and in how many steps;
- ``search``: objective, search, target run and exports;
- ``stages``: validation study, stages, checks, stage names; ``protocol``: the validation's pre-registered
  mixture-quality comparison;
- ``pipeline``: ``Settings``, the checks that span sections; ``loading``: finding and reading the file.

This package is core's bottom layer: it imports nothing else of the project but ``core.errors``.
``Settings.model_dump()`` feeds content-addressed cache keys and code versions, so a change that alters
the dump of an existing settings file makes every stored artifact stale: new keys dump only when set.
"""

from mergemix_dagster.core.settings.base import StrictModel
from mergemix_dagster.core.settings.data import DomainSettings, ModelSettings, SubdomainSettings
from mergemix_dagster.core.settings.evaluation import EvaluationSettings, TaskSettings
from mergemix_dagster.core.settings.evaluator import EVALUATOR_PLACEHOLDERS, EvaluatorKind, EvaluatorSettings
from mergemix_dagster.core.settings.loading import (
    CONFIG_DIR,
    PROJECT_FILE,
    check_project,
    config_name,
    load_settings,
    record_project,
    recorded_project,
    resolve_config_path,
)
from mergemix_dagster.core.settings.pipeline import DEFAULT_HOME, Settings
from mergemix_dagster.core.settings.protocol import ValidationProtocol
from mergemix_dagster.core.settings.recipes import ExpertSettings, RecipeSettings, TrainRecipe, recipe_from
from mergemix_dagster.core.settings.search import (
    ExportFormat,
    ExportSettings,
    ObjectiveSettings,
    SearchSettings,
    TargetSettings,
)
from mergemix_dagster.core.settings.stages import (
    STAGE_NAME,
    CheckSettings,
    StageSettings,
    ValidationSettings,
    check_stage_name,
)
from mergemix_dagster.core.settings.trainer import (
    TRAINER_PLACEHOLDERS,
    EcsTrainerSettings,
    KubernetesTrainerSettings,
    TrainerKind,
    TrainerKindSettings,
    TrainerSettings,
)

__all__ = [
    "CONFIG_DIR", "DEFAULT_HOME", "EVALUATOR_PLACEHOLDERS", "EvaluatorKind", "EvaluatorSettings", "PROJECT_FILE", "STAGE_NAME", "TRAINER_PLACEHOLDERS",
    "CheckSettings", "DomainSettings", "EcsTrainerSettings", "EvaluationSettings", "ExpertSettings", "ExportFormat",
    "ExportSettings", "KubernetesTrainerSettings", "ModelSettings", "ObjectiveSettings", "RecipeSettings",
    "SearchSettings", "Settings", "StageSettings", "StrictModel", "SubdomainSettings", "TargetSettings",
    "TaskSettings", "TrainRecipe", "TrainerKind", "TrainerKindSettings", "TrainerSettings", "ValidationProtocol",
    "ValidationSettings", "check_project", "check_stage_name", "config_name", "load_settings", "recipe_from",
    "record_project", "recorded_project", "resolve_config_path",
]
