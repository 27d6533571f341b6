"""Check a whole configuration against the world before anything trains.

A bad path, an empty tokenizer or a task name typo must cost seconds, not the experts' training time. Each
check returns the named errors it finds (exceptions as values, one line of context each) instead of raising
the first, so ``mergemix check`` lists every problem at once; ``mergemix run`` raises the first.

What is checked: the home and the DuckDB file, every domain's corpus paths (files, dirs, globs resolve to
readable files of a supported format whose first document has the text field), the base (a causal LM config,
safetensors weights, a tokenizer that encodes text and has an EOS token), every evaluation task (exists in
``tasks_dir``, reports the metric, data files present), that every domain's capability is measured by a task,
the training budgets, stage names, and registered stage checkpoints (exist, same architecture as the base).
The held-out tasks of the validation study are checked apart (``check_validation_settings``): only
``mergemix validate`` needs them, so only it stops on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from mergemix_dagster.core.data.corpora import expand_paths, iter_file_documents
from mergemix_dagster.core.errors import (
    CheckpointMismatchError,
    ConfigError,
    CorpusError,
    CorruptDatabaseError,
    DatabaseMissingError,
    InvalidStageNameError,
    MalformedTaskError,
    MalformedCorpusError,
    MergeMixError,
    MissingTaskError,
    MissingTokenizerError,
    StoreError,
)
from mergemix_dagster.core.settings import check_stage_name

if TYPE_CHECKING:  # pragma: no cover
    from mergemix_dagster.core.settings import Settings

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "vocab.txt")
PROBE_TEXT = "The quick brown fox jumps over 13 lazy dogs."
# config.json fields compared when the base is the embedded tiny Llama (its vocabulary follows the tokenizer)
EMBEDDED_FIELDS = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


@dataclass
class CheckReport:
    """Named errors (each stops a run) and warnings (printed, not fatal)."""

    errors: list[MergeMixError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def lines(self) -> list[str]:
        return [f"{type(e).__name__}: {e}" for e in self.errors] + [f"warning: {w}" for w in self.warnings]

    def raise_first(self) -> None:
        """Raise the first error, saying how many more there are."""
        if self.errors:
            first = self.errors[0]
            more = f" (+{len(self.errors) - 1} more problems: `mergemix check` lists them)" if len(self.errors) > 1 else ""
            raise type(first)(f"{first}{more}") from first


def _is_remote(path: str) -> bool:
    return "://" in str(path) and not str(path).startswith("file://")


def check_corpus_paths(domain: str, paths: list[str], text_field: str = "text") -> list[MergeMixError]:
    """Every local path resolves to files whose first document is readable and has ``text_field``."""
    problems: list[MergeMixError] = []
    for raw in paths:
        if _is_remote(raw):
            continue  # fetched and validated when the corpus is materialized
        try:
            files = expand_paths([raw])
        except CorpusError as exc:
            problems.append(type(exc)(f"domain {domain!r}: {exc}"))
            continue
        for f in files:
            try:
                next(iter(iter_file_documents(f, text_field, txt_chars=1000)), None)
            except (CorpusError, MalformedCorpusError) as exc:
                problems.append(type(exc)(f"domain {domain!r}: {exc}"))
    return problems


def check_tokenizer(base: str) -> list[MergeMixError]:
    """The base's tokenizer loads, encodes text to known tokens and has an EOS token."""
    local = Path(base).expanduser()
    if local.is_dir() and not any((local / f).exists() for f in TOKENIZER_FILES):
        return [MissingTokenizerError(f"base {base} has no tokenizer files (none of {list(TOKENIZER_FILES)})")]
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(base))
    except Exception as exc:  # transformers raises many types for a broken tokenizer
        return [MissingTokenizerError(f"base {base}: the tokenizer cannot be loaded ({type(exc).__name__}: {exc})")]
    ids = tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"]
    unk = getattr(tokenizer, "unk_token_id", None)
    if len(tokenizer) < 2 or not ids or all(i == unk for i in ids):
        return [MissingTokenizerError(f"base {base}: the tokenizer ({len(tokenizer)} tokens) encodes text to nothing usable")]
    if tokenizer.eos_token_id is None:
        return [MissingTokenizerError(f"base {base}: the tokenizer has no EOS token (needed between documents)")]
    return []


def check_base(base: str, seq_lens: Mapping[str, int]) -> tuple[dict | None, list[MergeMixError]]:
    """(the base's config.json, problems): a causal LM with safetensors weights and a usable tokenizer."""
    from mergemix_dagster.core.training.model import read_config, safetensors_files

    local = Path(base).expanduser()
    if _is_remote(base):
        return None, []  # fetched by the store when the stage base is materialized
    if not local.exists():
        if base.startswith(("/", "./", "../", "~")):
            return None, [StoreError(f"base model {base} does not exist")]
    elif not local.is_dir() or not (local / "config.json").is_file():
        return None, [StoreError(f"base model {base} is not a Hugging Face checkpoint directory (no config.json)")]
    else:
        try:
            safetensors_files(local)
        except StoreError as exc:
            return None, [exc]
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(str(base))
    except Exception as exc:
        return None, [ConfigError(f"base {base}: cannot load its config ({type(exc).__name__}: {exc})")]
    problems: list[MergeMixError] = []
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        problems.append(ConfigError(f"base {base}: model type {config.model_type!r} is not a causal LM"))
    positions = getattr(config, "max_position_embeddings", None)
    for what, seq_len in seq_lens.items():
        if positions and seq_len > positions:
            problems.append(ConfigError(f"{what}.seq_len {seq_len} exceeds the base's {positions} positions"))
    problems += check_tokenizer(base)
    return (read_config(local) if local.is_dir() else config.to_dict()), problems


def check_tasks(tasks, tasks_dir: str | None, limit: int | None, what: str) -> list[MergeMixError]:
    """Each task exists under ``tasks_dir``, reports its metric and has its data files (lm-eval loads it); a
    task whose YAML does not parse is named malformed, with the line, not "not found"."""
    from mergemix_dagster.core.evaluation.harness import Evaluator, TaskSpec
    from mergemix_dagster.core.evaluation.task_files import read_task_files

    broken = [f for f in read_task_files(tasks_dir) if f.problem]
    problems: list[MergeMixError] = []
    for t in tasks:
        mine = [f for f in broken if t.name in f.tasks]
        if mine:
            problems.append(MalformedTaskError(f"{what}: task {t.name!r}: {mine[0].path} is malformed: {mine[0].problem}"))
            continue
        try:
            Evaluator([TaskSpec(t.name, t.capability, t.metric)], tasks_dir=Path(tasks_dir) if tasks_dir else None, limit=limit)
        except (MissingTaskError, ConfigError) as exc:
            unread = f"; malformed YAML there: {', '.join(f'{f.path} ({f.problem})' for f in broken)}" if broken else ""
            problems.append(type(exc)(f"{what}: {exc}{unread}"))
    return problems


def check_validation_settings(s: "Settings") -> list[MergeMixError]:
    """The settings only ``mergemix validate`` uses: its held-out tasks exist under ``evaluation.tasks_dir``.

    Not part of ``check_settings``: a project with its own ``tasks_dir`` and no ``validation:`` section must
    run as written, and the default held-out benchmarks are bundled ones. Each problem names the setting and
    the fix.
    """
    from mergemix_dagster.core.settings.stages import ValidationSettings

    tasks = s.validation.heldout_tasks
    problems = check_tasks(tasks, s.evaluation.tasks_dir, s.evaluation.limit, "validation.heldout_tasks")
    if not problems:
        return []
    defaulted = "heldout_tasks" not in s.validation.model_fields_set
    where = s.evaluation.tasks_dir or "the bundled tasks"
    if defaulted and s.evaluation.tasks_dir:
        bundled = [t.name for t in ValidationSettings().heldout_tasks]
        fix = (f"validation.heldout_tasks is not set, so it defaults to the bundled held-out tasks {bundled}, which "
               f"are not under your evaluation.tasks_dir {where}: set validation.heldout_tasks to tasks of yours "
               "there that the search never sees, or to [] to validate on the search tasks only")
    else:
        fix = f"fix the names in validation.heldout_tasks (tasks under {where}), or set it to []"
    return [type(p)(f"{p}. Fix: {fix}") for p in problems]


def task_code_warnings(tasks, tasks_dir: str | None) -> list[str]:
    """One line per configured task whose YAML imports Python code (``!function``)."""
    from mergemix_dagster.core.evaluation.task_files import read_task_files

    names = {t.name for t in tasks}
    return [
        f"task {name!r} ({f.path}) imports Python code ({', '.join(f.functions)}): lm-eval runs that module's "
        "top-level code whenever the task loads, `mergemix check` included"
        for f in read_task_files(tasks_dir) if f.functions and not f.problem for name in f.tasks if name in names
    ]


def check_bounds(s: "Settings") -> list[MergeMixError]:
    """The min/max/pinned weights admit a mixture, and ``target.tokens`` can be met by the corpora at their
    largest (``max_chars`` each, at most 5 tokens per character: UTF-8 bytes and an EOS per document) within ``target.max_epochs``."""
    from mergemix_dagster.core.errors import InfeasibleConstraintsError
    from mergemix_dagster.core.search.constraints import build_constraints

    search = s.search
    try:
        build_constraints(s.domain_names, search.min_weight, search.max_weight, search.pinned)
    except (InfeasibleConstraintsError, ConfigError) as exc:
        return [type(exc)(f"search bounds: {exc}")]
    if s.target.tokens:
        most = {d.name: 5 * (sum(sub.max_chars or d.max_chars for sub in d.subdomains) if d.subdomains else d.max_chars)
                for d in s.domains}
        try:
            build_constraints(s.domain_names, search.min_weight, search.max_weight, search.pinned,
                              available_tokens=most, target_tokens=s.target.tokens, max_epochs=s.target.max_epochs)
        except InfeasibleConstraintsError as exc:
            return [InfeasibleConstraintsError(
                f"target.tokens {s.target.tokens:.4g} cannot be met: even at max_chars per domain and 5 tokens "
                f"per character, {exc}"
            )]
    return []


def check_checkpoint(stage: str, checkpoint: str, base_config: dict | None, embedded: dict | None) -> list[MergeMixError]:
    """A registered stage checkpoint exists and has the base's architecture."""
    from mergemix_dagster.core.merge.compatibility import ARCHITECTURE_FIELDS

    if _is_remote(checkpoint):
        return []
    local = Path(checkpoint).expanduser()
    if not local.exists():
        if "/" in checkpoint and not checkpoint.startswith(("/", "./", "../", "~")) and checkpoint.count("/") == 1:
            return []  # a hub id: resolved when the stage base is materialized
        return [StoreError(f"stage {stage!r}: checkpoint {checkpoint} does not exist")]
    if not (local / "config.json").is_file():
        return [StoreError(f"stage {stage!r}: {checkpoint} is not a Hugging Face checkpoint (no config.json)")]
    from mergemix_dagster.core.training.model import read_config, safetensors_files

    try:
        safetensors_files(local)
    except StoreError as exc:  # a pickle .bin checkpoint is never unpickled: `run` would refuse it later
        return [StoreError(f"stage {stage!r}: {exc} (save it with save_pretrained(..., safe_serialization=True))")]

    config = read_config(local)
    reference, fields = (base_config, ARCHITECTURE_FIELDS) if base_config is not None else (embedded, EMBEDDED_FIELDS)
    for key in fields if reference else ():
        if (key in reference or key in config) and reference.get(key) != config.get(key):
            return [CheckpointMismatchError(
                f"stage {stage!r}: checkpoint {checkpoint} has {key}={config.get(key)!r}, the base has {reference.get(key)!r}"
            )]
    return []


DATABASE_TABLES = ("evaluations", "chosen_mixture", "training_runs")


def database_state(path: str | Path) -> str:
    """``missing``, ``corrupt`` (cannot be opened, or a table cannot be read: a cut file opens, then fails
    when a read reaches the missing bytes) or ``ok`` (also when another process holds the write lock)."""
    import duckdb

    path = Path(path).expanduser()
    if not path.exists():
        return "missing"
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        return "ok" if "lock" in str(exc).lower() else "corrupt"
    try:
        names = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        for table in DATABASE_TABLES:
            if table in names:
                con.execute(f"SELECT * FROM {table}").fetchall()
    except duckdb.Error:
        return "corrupt"
    finally:
        con.close()
    return "ok"


def check_home(home: Path, database: str, copy: Mapping | None = None) -> tuple[list[MergeMixError], list[str]]:
    """(errors, warnings): the home is a directory (or can be made); the DuckDB file opens and reads, or the
    store holds the copy it is rebuilt from. ``copy``: ``records`` (how many the store holds) and ``results``
    (stages with a chosen mixture in the store), as ``mergemix check`` reads them from the store."""
    home = Path(home)
    for p in [home, *home.parents]:
        if p.exists():
            if not p.is_dir():
                return [StoreError(f"MERGEMIX_HOME {home} cannot be a directory: {p} is a file")], []
            break
    state = database_state(database)
    records, results = (copy or {}).get("records", 0), list((copy or {}).get("results", []))
    if state == "ok":
        return [], []
    if records:
        what = "is missing" if state == "missing" else "cannot be read"
        return [], [f"DuckDB file {database} {what}; `mergemix run` rebuilds it from the {records} records in the store"]
    if state == "corrupt":
        return [CorruptDatabaseError(f"DuckDB file {database} cannot be read, and the store holds no copy of it")], []
    if results:
        return [DatabaseMissingError(
            f"DuckDB file {database} is missing and the store holds no copy of it (a home made before the copy "
            f"existed), yet stages {results} have results: restore the file, or delete {home / 'dagster'} so "
            "`mergemix run` scores again (stored checkpoints are reused)"
        )], []
    return [], []


def check_settings(s: "Settings", registered: Mapping[str, str] | None = None,
                   database_copy: Mapping | None = None) -> CheckReport:
    """Every check above on ``s``; ``registered``: stage -> checkpoint of stages registered in the store;
    ``database_copy``: what the store holds of the database (``check_home``)."""
    report = CheckReport()
    errors, warnings = check_home(s.home_path, s.database_path, database_copy)
    report.errors += errors
    report.warnings += warnings
    for d in s.domains:
        if d.paths:
            report.errors += check_corpus_paths(d.name, list(d.paths), d.text_field)
    if s.model.general_paths:
        report.errors += check_corpus_paths("general", list(s.model.general_paths))
    seq_lens = {"experts": s.experts.seq_len}
    base_config = None
    if s.model.base == "embedded":
        for what, recipe in (("pretrain", s.pretrain), ("experts", s.experts)):
            if recipe.seq_len > s.model.max_position_embeddings:
                report.errors.append(ConfigError(
                    f"{what}.seq_len {recipe.seq_len} exceeds model.max_position_embeddings {s.model.max_position_embeddings}"
                ))
    else:
        base_config, problems = check_base(s.model.base, seq_lens)
        report.errors += problems
        if s.experts.general_fraction > 0 and not s.model.general_paths:
            report.warnings.append(
                f"experts mix {s.experts.general_fraction:.0%} of the embedded general corpus into your base's training; "
                "set model.general_paths to your own general data"
            )
    capabilities = {t.capability for t in s.evaluation.tasks}
    for d in s.domains:
        if d.capability and d.capability not in capabilities:
            report.errors.append(ConfigError(
                f"domain {d.name!r} targets capability {d.capability!r} but no evaluation task measures it "
                f"(task capabilities: {sorted(capabilities)})"
            ))
    for cap in (s.search.capability_weights or {}):
        if cap not in capabilities:
            report.errors.append(ConfigError(f"search.capability_weights names {cap!r}, not a task capability {sorted(capabilities)}"))
    from mergemix_dagster.core.merge import known_methods

    if s.search.merge_method not in known_methods():  # else it fails in optimize_job, after the experts trained
        report.errors.append(ConfigError(
            f"search.merge_method {s.search.merge_method!r} is not a merge method; known: {', '.join(known_methods())}"
        ))
    report.errors += check_bounds(s)
    report.errors += check_tasks(s.evaluation.tasks, s.evaluation.tasks_dir, s.evaluation.limit, "evaluation.tasks")
    report.warnings += task_code_warnings(s.evaluation.tasks, s.evaluation.tasks_dir)
    stages = dict(s.stages.checkpoints) | dict(registered or {})
    embedded = None
    if s.model.base == "embedded":
        m = s.model
        embedded = {"model_type": "llama", "hidden_size": m.hidden_size, "intermediate_size": m.intermediate_size,
                    "num_hidden_layers": m.num_layers, "num_attention_heads": m.num_heads}
    for stage in [s.initial_stage, *stages]:
        try:
            check_stage_name(stage)
        except InvalidStageNameError as exc:
            report.errors.append(exc)
    for stage, checkpoint in stages.items():
        report.errors += check_checkpoint(stage, checkpoint, base_config, embedded)
    return report
