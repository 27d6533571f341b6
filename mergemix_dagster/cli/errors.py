"""How a failed verb ends: one line on stderr naming the error, the full trace in a log file, an exit code.

Why: a Dagster step that fails deep inside a run surfaces as pages of wrapped traces; a user needs the
project's named error (``ConfigError``, ``StoreError``, ...) and where the trace went. Exit code 2 means a
named error (the user can fix the input), 1 an unexpected one (a bug to report with the trace): then the
line names the error the step itself raised (type and message), not only Dagster's wrapper around it.
"""

from __future__ import annotations

import errno
import sys

from mergemix_dagster.core.errors import MergeMixError


def report_failure(exc: Exception, home: str | None = None) -> int:
    """Print what went wrong in one line (plus the trace file's absolute path); the exit code.

    ``home``: the settings' home, where the trace goes (default ``$MERGEMIX_HOME``, else ``./.mergemix``).
    """
    named = named_error(exc)
    trace = write_trace(exc, home)
    if named is None:
        root = root_cause(exc)
        cause = f" (caused by {type(root).__name__}: {first_line(root)})" if root is not exc else ""
        print(f"mergemix: unexpected error: {type(exc).__name__}: {first_line(exc)}{cause}\n  trace: {trace or '(not written)'}",
              file=sys.stderr)
        return 1
    print(f"mergemix: error: {type(named).__name__}: {named}", file=sys.stderr)
    if trace:
        print(f"  trace: {trace}", file=sys.stderr)
    return 2


def chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception behind it (``__cause__``, then ``__context__``), each once.

    Remembering what was visited matters: Dagster's step errors chain in a circle
    (``Error -> DagsterExecutionStepExecutionError -> Error``), and a walk without it never ends.
    """
    seen: set[int] = set()
    order: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        order.append(current)
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]
    return order


def root_cause(exc: BaseException) -> BaseException:
    """The deepest exception behind ``exc`` that is not Dagster's wrapper: what the step itself raised."""
    own = [e for e in chain(exc) if not type(e).__module__.startswith("dagster")]
    return own[-1] if own else exc


def named_error(exc: BaseException) -> MergeMixError | None:
    """The project's named error behind ``exc``: itself, one in its cause chain, or a known outside
    failure mapped to one (S3 unreachable or no credentials, a corrupt or locked DuckDB file, a home
    that is a file)."""
    from mergemix_dagster.core.errors import CorruptDatabaseError, StoreError

    errors = chain(exc)
    for seen in errors:
        if isinstance(seen, MergeMixError):
            return seen
    for seen in errors:
        module = type(seen).__module__.lstrip("_")  # duckdb's classes live in `_duckdb`
        if module.startswith("botocore"):
            return StoreError(f"S3 is not reachable ({type(seen).__name__}: {first_line(seen)})")
        if module.startswith("duckdb"):
            return CorruptDatabaseError(f"the DuckDB file cannot be used ({type(seen).__name__}: {first_line(seen)})")
        if isinstance(seen, (NotADirectoryError, FileExistsError, PermissionError)) or (
            isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT)
        ):  # a home that is a file, a read-only or full store
            return StoreError(f"{seen.strerror}: {seen.filename}")
    return None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def write_trace(exc: BaseException, home: str | None = None) -> str:
    """The full traceback in ``<home>/logs/`` (or the temp dir when the home is unusable); its absolute path."""
    import os
    import tempfile
    import time
    import traceback
    from pathlib import Path

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    name = f"mergemix-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    home = home or os.environ.get("MERGEMIX_HOME", ".mergemix")
    for folder in (Path(home).expanduser().absolute() / "logs", Path(tempfile.gettempdir()) / "mergemix-logs"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
            return str(folder / name)
        except OSError:
            continue
    return ""
