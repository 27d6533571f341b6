"""The Dagster instance of a home, the home's lock, and who owns a run: what every runner command opens first.

``mergemix`` runs jobs in its own process (no daemon), so it tags each run with its owner (``host:pid:start
time``); a run left STARTED by a killed owner is marked failed, else sensors would wait for it forever.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import dagster as dg

from mergemix_dagster.assets.partitions import STAGE_PARTITIONS_NAME
from mergemix_dagster.core.errors import StoreError
from mergemix_dagster.core.settings import Settings

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


def known_stages(settings: Settings) -> list[str]:
    """The stages a run may name: the initial stage, the config's ``stages.checkpoints``, and every stage
    registered in the store (``stage add``, ``midtrain``, the checkpoint sensor) and not removed since."""
    from mergemix_dagster.resources import CheckpointStore, layout

    store = CheckpointStore(root=settings.store_uri)
    registered = []
    if store.is_s3 or Path(settings.store_uri).is_dir():
        for key in store.list_keys(layout.STAGES_PREFIX):
            if key.endswith("/registration.json") and not store.get_json(key).get("removed_at"):
                registered.append(key.split("/")[1])
    return list(dict.fromkeys([settings.initial_stage, *settings.stages.checkpoints, *registered]))


def check_known_stage(settings: Settings, stage: str) -> None:
    """``InvalidStageNameError`` for a name that cannot be a stage, ``UnknownStageError`` (listing the known
    stages) for a valid name nothing registered: a typo must not become a Dagster partition."""
    from mergemix_dagster.core.errors import UnknownStageError
    from mergemix_dagster.core.settings import check_stage_name

    check_stage_name(stage)
    known = known_stages(settings)
    if stage not in known:
        raise UnknownStageError(
            f"stage {stage!r} is not a known stage (known: {', '.join(known)}); new stages come from "
            "`mergemix stage add NAME --checkpoint DIR` or `mergemix midtrain --name NAME`"
        )


def register_stage(instance: dg.DagsterInstance, stage: str) -> bool:
    """Add a stage partition (a valid stage name only); returns False when it was already there."""
    from mergemix_dagster.core.settings import check_stage_name

    check_stage_name(stage)
    if instance.has_dynamic_partition(STAGE_PARTITIONS_NAME, stage):
        return False
    instance.add_dynamic_partitions(STAGE_PARTITIONS_NAME, [stage])
    return True


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
