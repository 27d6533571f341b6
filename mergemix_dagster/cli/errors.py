"""How a failed verb ends: one line on stderr naming the error, the full trace in a log file, an exit code.

Why: a Dagster step that fails deep inside a run surfaces as pages of wrapped traces; a user needs the
project's named error (``ConfigError``, ``StoreError``, ...) and where the trace went. Exit code 2 means a
named error (the user can fix the input), 1 an unexpected one (a bug to report with the trace).
"""

from __future__ import annotations

import sys

from mergemix_dagster.core.errors import MergeMixError


def report_failure(exc: Exception) -> int:
    """Print what went wrong in one line (plus the trace file's path); the exit code."""
    named = named_error(exc)
    trace = write_trace(exc)
    if named is None:
        print(f"mergemix: unexpected error: {type(exc).__name__}: {first_line(exc)}\n  trace: {trace}", file=sys.stderr)
        return 1
    print(f"mergemix: error: {type(named).__name__}: {named}", file=sys.stderr)
    if trace:
        print(f"  trace: {trace}", file=sys.stderr)
    return 2


def named_error(exc: BaseException) -> MergeMixError | None:
    """The project's named error behind ``exc``: itself, one in its cause chain, or a known outside
    failure mapped to one (S3 unreachable or no credentials, a corrupt or locked DuckDB file, a home
    that is a file)."""
    from mergemix_dagster.core.errors import CorruptDatabaseError, StoreError

    seen = exc
    while seen is not None:
        if isinstance(seen, MergeMixError):
            return seen
        seen = seen.__cause__ or seen.__context__
    module = type(exc).__module__
    if module.startswith("botocore"):
        return StoreError(f"S3 is not reachable ({type(exc).__name__}: {first_line(exc)})")
    if module.startswith("duckdb"):
        return CorruptDatabaseError(f"the DuckDB file cannot be used ({type(exc).__name__}: {first_line(exc)})")
    if isinstance(exc, (NotADirectoryError, FileExistsError, PermissionError)):
        return StoreError(f"{exc.strerror}: {exc.filename}")
    return None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def write_trace(exc: BaseException) -> str:
    """The full traceback in ``<home>/logs/`` (or the temp dir when the home is unusable); its path."""
    import os
    import tempfile
    import time
    import traceback
    from pathlib import Path

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    name = f"mergemix-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    for folder in (Path(os.environ.get("MERGEMIX_HOME", ".mergemix")) / "logs", Path(tempfile.gettempdir()) / "mergemix-logs"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
            return str(folder / name)
        except OSError:
            continue
    return ""
