"""Run a whole stage through the jobs in dependency order, in this process, recorded in a Dagster instance.

This is what ``mergemix run`` (and so ``make run``) does; the Dagster UI shows the same runs afterwards.
Each job is one run per partition, because Dagster runs cannot mix partitions definitions. The native
alternative, one asset backfill per new stage, needs the daemon (``automation.py``); Dagster has no public
call that submits a backfill, and a backfill only progresses inside the daemon, so a command that must work
without one chains the jobs itself (docs/architecture.md, "what is native and what is not").

Before planning, a run (1) takes the home's file lock, so concurrent runs on one home serialize and the
second one reuses the first one's work; (2) marks runs left STARTED by a killed ``mergemix`` process as
failed, so sensors stop waiting for them; (3) re-reads every source whose files changed since it was last
read (corpora, the general corpus, an outside base), so a rewritten file reruns what depends on it even
without the sensor daemon. After the plan, evaluation rows scored under other task files are rescored.
"""

from __future__ import annotations

import logging
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import dagster as dg

from mergemix_dagster.core.errors import StoreError
from mergemix_dagster.assets.partitions import STAGE_PARTITIONS_NAME, expert_partition_key
from mergemix_dagster.core.settings import Settings
from mergemix_dagster.runner.staleness import next_runs, stage_status

STAGE_TAG = "mergemix/stage"
OWNER_TAG = "mergemix/owner"  # host:pid:start time of the mergemix process that executes the run in process
_LOCKS: dict[str, object] = {}


def dagster_instance(settings: Settings) -> dg.DagsterInstance:
    """The instance under ``$DAGSTER_HOME``, or ``<home>/dagster`` when it is unset."""
    home = os.environ.get("DAGSTER_HOME") or str(settings.home_path / "dagster")
    try:
        Path(home).mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise StoreError(f"cannot use {home} as the Dagster instance folder: {exc.strerror} ({exc.filename})") from exc
    config = Path(home) / "dagster.yaml"
    if not config.exists():  # nothing here may phone home
        config.write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = home
    from filelock import FileLock

    # two processes opening a fresh instance at once both create its SQLite tables ("alembic_version already
    # exists"): the first creates them under this lock, the second then finds them
    with FileLock(str(Path(home) / ".mergemix-instance.lock")):
        return dg.DagsterInstance.get()


def register_stage(instance: dg.DagsterInstance, stage: str) -> bool:
    """Add a stage partition; returns False when it was already there."""
    if instance.has_dynamic_partition(STAGE_PARTITIONS_NAME, stage):
        return False
    instance.add_dynamic_partitions(STAGE_PARTITIONS_NAME, [stage])
    return True


def run_stage(
    defs: dg.Definitions,
    settings: Settings,
    instance: dg.DagsterInstance,
    stage: str,
    on_step: Callable[[str, object, float], None] | None = None,
    max_layers: int = 12,
    log_level: str = "INFO",
    on_check_failed: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """Materialize whatever ``stage`` is missing or stale, layer by layer; returns seconds per job.

    ``on_check_failed`` receives one line per failed asset check (e.g. a surrogate that cannot rank
    held-out candidates), so a run that exits 0 still says what its result should not be trusted for.

    Fresh partitions are skipped, so a rerun after an interruption picks up where it stopped and a
    second stage reuses the corpora and tokenizer of the first. Raises on the first failed run.
    """
    import time

    timings: dict[str, float] = {}

    def execute(job_name: str, partition) -> None:
        start = time.perf_counter()
        result = defs.resolve_job_def(job_name).execute_in_process(
            instance=instance,
            partition_key=partition,
            raise_on_error=True,
            tags={STAGE_TAG: stage, OWNER_TAG: owner_tag()},
            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        )
        for check in result.get_asset_check_evaluations():
            if not check.passed and on_check_failed:
                on_check_failed(
                    f"check {check.check_name} of {check.asset_key.to_user_string()}[{partition}] failed: "
                    f"{getattr(check, 'description', None) or 'see the Dagster UI'}"
                )
        elapsed = time.perf_counter() - start
        timings[job_name] = timings.get(job_name, 0.0) + elapsed
        if on_step:
            on_step(job_name, partition, elapsed)

    with home_lock(settings):
        fail_abandoned_runs(instance)
        register_stage(instance, stage)
        for job_name, partition in changed_sources(instance, settings, stage):
            execute(job_name, partition)
        rescored = False
        for _ in range(max_layers):
            plan = next_runs(stage_status(instance, defs, settings.domain_names, stage))
            if not plan and not rescored and stale_evaluation_rows(settings, stage):
                plan, rescored = [("optimize_job", stage)], True
            if not plan:
                return timings
            for job_name, partition in plan:
                execute(job_name, partition)
    raise RuntimeError(f"stage {stage!r} still not fresh after {max_layers} layers: {stage_status(instance, defs, settings.domain_names, stage).not_fresh()}")


@contextmanager
def home_lock(settings: Settings, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold ``<home>/mergemix.lock`` (re-entrant in one process); a second process waits for the first."""
    from filelock import FileLock, Timeout

    path = settings.home_path / "mergemix.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise StoreError(f"MERGEMIX_HOME {settings.home_path} is not a directory: {exc.strerror} ({exc.filename})") from exc
    lock = _LOCKS.setdefault(str(path), FileLock(str(path)))
    try:
        lock.acquire(timeout=1)
    except Timeout:
        (on_wait or print)(f"mergemix: waiting for another run on {settings.home_path} (lock {path})")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def owner_tag(pid: int | None = None) -> str:
    """``host:pid:start time`` of a process: what tells a live owner from a killed one (pids are reused)."""
    import psutil

    proc = psutil.Process(pid or os.getpid())
    return f"{socket.gethostname()}:{proc.pid}:{int(proc.create_time())}"


def _owner_alive(tag: str) -> bool:
    import psutil

    host, _, rest = tag.partition(":")
    pid, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another machine's process: not ours to judge
    try:
        return owner_tag(int(pid)) == tag
    except psutil.Error:
        return False


def fail_abandoned_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed the runs still STARTED/STARTING whose in-process owner (a ``mergemix`` process) is gone,
    e.g. after ``kill -9``; returns their run ids. Runs launched by the daemon carry no owner tag and are
    left to Dagster's own run monitoring."""
    records = instance.get_run_records(
        dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.NOT_STARTED])
    )
    failed = []
    for record in records:
        tag = record.dagster_run.tags.get(OWNER_TAG)
        if tag and not _owner_alive(tag):
            instance.report_run_failed(
                record.dagster_run, message=f"the mergemix process {tag} that ran it is gone (killed or crashed)"
            )
            failed.append(record.dagster_run.run_id)
    return failed


def _latest_metadata(instance: dg.DagsterInstance, asset: str, partition: str | None) -> dict | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None),
        limit=1,
    ).records
    return dict(records[0].asset_materialization.metadata) if records else None


def _changed(metadata: dict | None, current: str) -> bool:
    if metadata is None:
        return False  # never built: the stage plan materializes it
    recorded = metadata.get("source_fingerprint")
    return recorded is None or recorded.value != current or current.endswith("+remote")


def corpus_changes(instance: dg.DagsterInstance, settings: Settings) -> list[str]:
    """Domains whose source files changed (names, sizes, mtimes) since their corpus was last read, and
    domains read from a remote source (re-read every time: only their content tells)."""
    from mergemix_dagster.assets.corpora import source_fingerprint

    return [
        d.name for d in settings.domains
        if _changed(_latest_metadata(instance, "domain_corpus", d.name), source_fingerprint(d))
    ]


def changed_sources(instance: dg.DagsterInstance, settings: Settings, stage: str) -> list[tuple[str, object]]:
    """(job, partition) runs that re-read a source whose files changed: the general corpus, domain corpora,
    an outside stage base. Re-reading is content-addressed: unchanged content leaves everything fresh."""
    from mergemix_dagster.assets.base import checkpoint_source_fingerprint
    from mergemix_dagster.assets.corpora import general_source_fingerprint
    from mergemix_dagster.resources.layout import stage_registration
    from mergemix_dagster.resources import CheckpointStore

    runs: list[tuple[str, object]] = []
    if _changed(_latest_metadata(instance, "general_corpus", None), general_source_fingerprint(settings)):
        runs.append(("foundation_job", None))
    runs += [("corpora_job", d) for d in corpus_changes(instance, settings)]
    runs += [("experts_job", expert_partition_key(d, stage)) for d in damaged_experts(settings, stage)]
    if stage == settings.initial_stage and settings.model.base == "embedded":
        return runs
    source = settings.model.base if stage == settings.initial_stage else None
    if source is None:
        store = CheckpointStore(root=settings.store_uri)
        key = stage_registration(stage)
        source = store.get_json(key)["checkpoint"] if store.exists(key) else None
    metadata = _latest_metadata(instance, "stage_base", stage)
    if source is not None and metadata is not None:
        recorded = metadata.get("source_fingerprint")
        if recorded is None or recorded.value != checkpoint_source_fingerprint(source):
            runs.append(("stage_base_job", stage))
    return runs


def damaged_experts(settings: Settings, stage: str) -> list[str]:
    """Domains whose current expert checkpoint fails its cheap check (a truncated, replaced or edited file).

    The damaged copy is quarantined (kept aside, not deleted) so its expert is trained again; a retrained
    expert with the same content leaves everything downstream fresh.
    """
    from mergemix_dagster.resources.layout import expert_pointer
    from mergemix_dagster.core.errors import CheckpointChangedError, TruncatedCheckpointError
    from mergemix_dagster.resources import CheckpointStore

    store = CheckpointStore(root=settings.store_uri)
    damaged = []
    for d in settings.domain_names:
        pointer_key = expert_pointer(stage, d)
        if not store.exists(pointer_key):
            continue
        key = store.get_json(pointer_key)["key"]
        if not store.exists(key):
            continue
        try:
            store.verify_dir(key, f"expert {d!r} of stage {stage!r}")
        except (CheckpointChangedError, TruncatedCheckpointError) as exc:
            logging.getLogger(__name__).warning(
                f"{type(exc).__name__}: {exc}; kept aside at {store.quarantine(key)}, retraining"
            )
            damaged.append(d)
    return damaged


def stale_evaluation_rows(settings: Settings, stage: str) -> int:
    """How many evaluation rows of the stage's current candidates were scored under other evaluation
    settings (task files, metric, limit) than the current ones; they must be rescored, not reused."""
    from mergemix_dagster.resources.layout import candidates_key
    from mergemix_dagster.core.evaluation.fingerprints import evaluation_fingerprints
    from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase

    store = CheckpointStore(root=settings.store_uri)
    if not store.exists(candidates_key(stage)):
        return 0
    ids = {c["candidate_id"] for c in store.get_json(candidates_key(stage))["candidates"]} | {"base"}
    rows = EvaluationDatabase(path=settings.database_path).evaluations(stage)
    pairs = {(t.name, t.metric) for t in settings.evaluation.tasks}
    current = evaluation_fingerprints(settings)
    return sum(
        1
        for cid, task, metric, fp in zip(rows["candidate_id"], rows["task"], rows["metric"], rows["evaluation_fingerprint"])
        if cid in ids and (task, metric) in pairs and current.get(task) != fp
    )


def run_validation(
    defs: dg.Definitions,
    settings: Settings,
    instance: dg.DagsterInstance,
    stage: str,
    log_level: str = "WARNING",
) -> float:
    """Bring ``stage`` up to date (``run_stage``), then run its validation study; returns seconds.

    Finished reference runs and scored proxies are kept in the store and DuckDB, so a rerun after an
    interruption trains only what is missing and a finished study costs a few seconds.
    """
    import time

    with home_lock(settings):
        run_stage(defs, settings, instance, stage, log_level=log_level)
        start = time.perf_counter()
        defs.resolve_job_def("validate_job").execute_in_process(
            instance=instance,
            partition_key=stage,
            raise_on_error=True,
            tags={STAGE_TAG: stage, OWNER_TAG: owner_tag()},
            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        )
        return time.perf_counter() - start


def run_report(defs: dg.Definitions, instance: dg.DagsterInstance, log_level: str = "WARNING") -> None:
    defs.resolve_job_def("report_job").execute_in_process(
        instance=instance,
        raise_on_error=True,
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
    )
