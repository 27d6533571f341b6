"""Test environment: offline, smoke-sized config, one temporary MERGEMIX_HOME and Dagster instance."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Set before anything imports the package: settings and partitions are read at definitions load.
_SESSION_HOME = tempfile.mkdtemp(prefix="mergemix-test-")
os.environ["MERGEMIX_HOME"] = os.path.join(_SESSION_HOME, "home")
os.environ["MERGEMIX_CONFIG"] = "smoke"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.pop("DAGSTER_HOME", None)
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two pytest-xdist workers on 2 cores: one torch thread each, since two 2-thread
    # processes on 2 cores make OpenMP wait on descheduled threads (docs/results.md measured 3.5x slower).
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import dagster as dg  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402


@pytest.fixture(scope="session")
def session_dir() -> str:
    return _SESSION_HOME


@pytest.fixture(scope="session")
def pipeline_config(session_dir) -> Path:
    """The smoke config, with the `sft` domain read from a user's jsonl file instead of the builder.

    This exercises the real loading path and lets tests edit one domain's corpus.
    """
    from mergemix_dagster.core.data.corpora import write_corpus
    from mergemix_dagster.core.data.defaults import build_domain_documents
    from mergemix_dagster.core.settings import resolve_config_path

    raw = yaml.safe_load(resolve_config_path("smoke").read_text())
    data_dir = Path(session_dir) / "user-data"
    data_dir.mkdir()
    corpus = data_dir / "sft.jsonl.gz"
    write_corpus(build_domain_documents("sft", max_chars=200_000, seed=0), corpus)
    for d in raw["domains"]:
        if d["name"] == "sft":
            d["paths"] = [str(corpus)]
    raw["home"] = str(Path(session_dir) / "pipeline-home")
    raw["stages"] = {"watch": str(Path(session_dir) / "checkpoints")}
    path = Path(session_dir) / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="session")
def smoke_run(session_dir, pipeline_config):
    """Stage s0 of the whole graph, materialized once for the session on a real Dagster instance."""
    from mergemix_dagster.definitions import build_definitions
    from mergemix_dagster.runner.stage import run_stage
    from mergemix_dagster.core.settings import load_settings

    settings = load_settings(str(pipeline_config))
    defs = build_definitions(settings, config=str(pipeline_config))
    os.makedirs(f"{session_dir}/dagster", exist_ok=True)
    with dg.instance_for_test(temp_dir=f"{session_dir}/dagster") as instance:
        timings = run_stage(defs, settings, instance, "s0")
        yield settings, defs, instance, timings


@pytest.fixture(scope="module")
def moto_endpoint():
    """A local S3-compatible server (moto) on 127.0.0.1 and a free port: S3 tests never reach the internet."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


# ---- how `make test` spreads the files over its pytest-xdist workers ---------------------------------------

SHARED_STAGE_FIXTURE = "smoke_run"


def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile`` as ``make test`` runs it: a test file whole on one worker (its module fixtures build
    once), and every file that uses the session's smoke stage (``smoke_run``) on the same worker, so the stage,
    and the validation study two of those files run on it, are built once instead of once per worker (each is
    about a minute on 2 cores). Other ``--dist`` modes are xdist's own.

    The group is decided here, from each file's text, because ``--dist loadgroup`` cannot carry it: with
    pytest 9.2 its ``xdist_group`` mark no longer reaches the scheduler (pytest-dev/pytest-xdist#1386: the
    node id it rewrites is no longer the one pytest reports), and tests are spread one by one, silently."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    shares_stage: dict[str, bool] = {}

    class FileOrSharedStageScheduling(LoadFileScheduling):
        # _split_scope is the override point of xdist's own schedulers (LoadFileScheduling overrides it too)
        def _split_scope(self, nodeid: str) -> str:
            file = nodeid.split("::", 1)[0]
            if file not in shares_stage:
                path = config.rootpath / file
                shares_stage[file] = path.is_file() and SHARED_STAGE_FIXTURE in path.read_text()
            return SHARED_STAGE_FIXTURE if shares_stage[file] else file

    return FileOrSharedStageScheduling(config, log)
