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


class MissingTaskError(MergeMixError):
    """An evaluation task named in the configuration cannot be found."""


class DatabaseLockedError(MergeMixError):
    """The DuckDB file is held by another process for longer than we are willing to wait."""


class StoreError(MergeMixError):
    """The checkpoint store cannot read or write an object (missing key, refused overwrite)."""


class TrainerOutputError(MergeMixError):
    """A training command's output is not a usable checkpoint (missing, not HF safetensors, other parameter
    names or shapes than the base, non-finite weights); it is rejected before anything downstream sees it."""


class TrainerCommandError(MergeMixError):
    """A training command failed (non-zero exit, or its launcher could not run it)."""
