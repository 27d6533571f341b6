"""Named errors: every bad input fails with one of these, saying what is wrong and where."""


class MergeMixError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(MergeMixError):
    """The configuration is invalid (unknown domain, missing field, bad value)."""


class CorpusError(MergeMixError):
    """A domain corpus cannot be used."""


class EmptyCorpusError(CorpusError):
    """A domain corpus has no usable documents."""


class MalformedCorpusError(CorpusError):
    """A corpus file cannot be parsed or lacks the text field."""


class CheckpointMismatchError(MergeMixError):
    """Base and expert checkpoints disagree (architecture, parameter names, shapes or dtypes)."""


class NonFiniteWeightsError(MergeMixError):
    """A checkpoint or merged tensor contains NaN or infinite values."""


class SimplexError(MergeMixError):
    """Mixture weights are not on the probability simplex (negative, NaN, or not summing to 1)."""


class TokenPlanError(MergeMixError):
    """A token plan cannot be made (no target tokens, unknown or missing available tokens)."""


class ExportError(MergeMixError):
    """A trainer export cannot be written (unknown format, missing or unusable data location)."""


class OverRepetitionWarning(UserWarning):
    """The chosen mixture would repeat a domain's available tokens more often than ``target.max_epochs``."""


class MissingTaskError(MergeMixError):
    """An evaluation task named in the configuration cannot be found."""


class MalformedTaskError(MissingTaskError):
    """A task YAML under ``tasks_dir`` does not parse (syntax error, a tag other than lm-eval's ``!function``)."""


class DatabaseLockedError(MergeMixError):
    """The DuckDB file is held by another process for longer than we are willing to wait."""


class StoreError(MergeMixError):
    """The checkpoint store cannot read or write an object (missing key, refused overwrite)."""


class InfeasibleConstraintsError(ConfigError):
    """The mixture constraints (bounds, pinned weights, token availability) admit no mixture."""


class UnresolvedProtectionError(InfeasibleConstraintsError):
    """Keeping the domains of unresolved capabilities at their natural shares conflicts with other lower bounds."""


class InfeasibleObjectiveError(MergeMixError):
    """No mixture satisfies the objective's floors under the surrogate predictions."""


class MissingTokenizerError(ConfigError):
    """A base model has no usable tokenizer (no tokenizer files, or one that encodes text to nothing)."""


class InvalidStageNameError(ConfigError):
    """A stage name cannot be a Dagster partition key or a folder name (empty, ``|``, ``/``, too long)."""


class UnknownStageError(ConfigError):
    """A valid stage name that no config entry, ``stage add``, ``midtrain`` or sensor registered (a typo)."""


class CheckpointChangedError(StoreError):
    """A stored checkpoint's files differ from the ones recorded when it was written (replaced or edited)."""


class TruncatedCheckpointError(StoreError):
    """A safetensors file is shorter than its own header says: an interrupted copy or a cut file."""


class CorruptDatabaseError(StoreError):
    """The DuckDB file exists but cannot be opened as a database."""


class DatabaseMissingError(StoreError):
    """The DuckDB file is gone while the store holds results, and there is no copy to rebuild it from."""


class TrainerOutputError(MergeMixError):
    """A training command's output is not a usable checkpoint (missing, not HF safetensors, other parameter
    names or shapes than the base, non-finite weights); it is rejected before anything downstream sees it."""


class TrainerCommandError(MergeMixError):
    """A training command failed (non-zero exit, or its launcher could not run it)."""


class PairedAnalysisError(MergeMixError):
    """Per-item scores cannot support a paired comparison: too few items or mixtures, or shapes that differ."""


class ProtocolError(ConfigError):
    """The validation protocol (``validation.protocol``) cannot be run as declared: fewer than 3 seeds, an
    unknown metric or arm, repeated seeds."""


class ProtocolChangedError(ProtocolError):
    """The validation protocol of a stage changed after its results were judged: a new yardstick on the same
    runs is a new, dated attempt (``validation.protocol.new_attempt``), never a silent re-judging."""


class TooFewRunsError(ConfigError):
    """``mergemix fit`` got fewer runs (with both a mixture and scores) than domains + 2: too few to fit a
    surrogate over the simplex and cross-validate it."""


class UnmatchedRunsError(ConfigError):
    """``mergemix fit --strict``: some run ids appear in only one of the mixtures and scores CSVs."""


class EvaluatorOutputError(MergeMixError):
    """An evaluation command's output cannot be used: no lm-eval results JSON under its output, a configured
    task or metric missing from it, or a non-finite value; no row of that candidate is written."""


class EvaluatorCommandError(MergeMixError):
    """An evaluation command failed (non-zero exit, or its launcher could not run it)."""
