"""A team's own project (issue 19): its config runs as written, later commands use the project the run used,
and a failure inside a step ends the command instead of hanging it."""

from __future__ import annotations

import errno
import signal
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from tests.test_faults import make_task


def own_tasks_config(root: Path, **extra) -> Path:
    """The embedded base and corpora, but the team's own lm-eval task folder and no `validation:` section."""
    raw = {
        "home": str(root / "home"),
        "domains": [{"name": "math", "capability": "math"}, {"name": "code", "capability": "math"}],
        "evaluation": {"tasks_dir": str(make_task(root / "tasks")),
                       "tasks": [{"name": "my_sums", "capability": "math", "metric": "acc"}]},
        **extra,
    }
    path = root / "own.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_an_own_tasks_config_passes_check_without_validation_settings(tmp_path, capsys):
    from mergemix_dagster.cli import main

    config = own_tasks_config(tmp_path)
    assert main(["check", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "mergemix check: OK" in out
    # said, not hidden: the validation study would need held-out tasks of the team's own
    assert "validation.heldout_tasks" in out and "only `mergemix validate` needs it" in out


def test_validate_stops_before_anything_runs_naming_the_heldout_setting_and_the_fix(tmp_path, capsys):
    from mergemix_dagster.cli import main

    config = own_tasks_config(tmp_path)
    assert main(["validate", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "MissingTaskError: validation.heldout_tasks" in err
    assert "set validation.heldout_tasks to tasks of yours" in err and "or to []" in err
    assert not (tmp_path / "home" / "dagster").exists()  # refused before any run


def test_own_heldout_tasks_or_none_pass_validate_preflight(tmp_path):
    from mergemix_dagster.core.preflight import check_validation_settings
    from mergemix_dagster.core.settings import load_settings

    for heldout in ([], [{"name": "my_sums", "capability": "math", "metric": "acc"}]):
        config = own_tasks_config(tmp_path, validation={"heldout_tasks": heldout})
        assert check_validation_settings(load_settings(str(config))) == []


# ------------------------------------------------------------------ no hang: a failed step ends the command


@contextmanager
def deadline(seconds: int):
    """Fail (instead of hanging the suite) when the block takes longer than ``seconds``."""
    def expired(*_):
        raise TimeoutError(f"still running after {seconds} s: the command hangs")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_a_circular_exception_chain_is_reported_not_looped_over(tmp_path, monkeypatch, capsys):
    from mergemix_dagster.cli.errors import named_error, report_failure

    monkeypatch.setenv("MERGEMIX_HOME", str(tmp_path / "home"))
    inner, outer = RuntimeError("CUDA out of memory"), ValueError("step failed")
    inner.__cause__, outer.__context__ = outer, inner  # Error -> wrapper -> Error ... as Dagster chains them
    with deadline(10):
        assert named_error(outer) is None
        assert report_failure(outer) == 1
    err = capsys.readouterr().err
    assert "unexpected error: ValueError: step failed" in err
    trace = Path(err.split("trace: ")[1].split()[0])
    assert trace.is_absolute() and trace.is_file() and "CUDA out of memory" in trace.read_text()


@pytest.mark.parametrize("error, code, shown", [
    (RuntimeError("CUDA out of memory"), 1, "unexpected error: RuntimeError: CUDA out of memory"),
    (OSError(errno.ENOSPC, "No space left on device", "/store/x"), 2, "StoreError: No space left on device: /store/x"),
    (OSError(errno.EROFS, "Read-only file system", "/store/x"), 2, "StoreError: Read-only file system: /store/x"),
    (PermissionError(errno.EACCES, "Permission denied", "/store/x"), 2, "StoreError: Permission denied: /store/x"),
], ids=["runtime", "enospc", "erofs", "eacces"])
def test_an_error_inside_a_step_ends_run_promptly_with_its_message(error, code, shown, tmp_path, monkeypatch, capsys):
    """Inside a real Dagster step (the general corpus of the smoke config): the run ends, says what the step
    raised and where the trace is, with exit 1 (unexpected) or 2 (a named error the user can fix)."""
    from mergemix_dagster.cli import main

    def fail(*_a, **_k):
        raise error

    monkeypatch.setattr("mergemix_dagster.assets.corpora.build_general_documents", fail)
    monkeypatch.setenv("MERGEMIX_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    with deadline(240):
        assert main(["run", "--config", "smoke"]) == code
    err = capsys.readouterr().err
    assert shown in err, err
    trace = Path(err.split("trace: ")[1].split()[0])
    assert trace.is_absolute() and trace.parent == tmp_path / "home" / "logs" and str(error) in trace.read_text()
