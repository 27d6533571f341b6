"""What ``mergemix check`` reads in a tasks folder before lm-eval does: task YAML that does not parse (lm-eval
skips such a file, so its task would only be "not found") and task YAML that imports Python code (``!function``:
lm-eval imports the module, running its top-level code, whenever the task is loaded, ``check`` included)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

TASK_LINE = re.compile(r"^task:\s*['\"]?([^'\"\s#]+)", re.MULTILINE)
FUNCTION_TAG = re.compile(r"!function\s+([\w.]+)")


class _TaskLoader(yaml.SafeLoader):
    """Safe YAML with lm-eval's own ``!function`` tag read as text (not imported); any other tag is refused."""


_TaskLoader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))


@dataclass(frozen=True)
class TaskFile:
    path: Path
    tasks: tuple[str, ...]  # the `task:` names the file declares (read from the text, so also when it is malformed)
    problem: str | None  # why it does not parse, with its line and column; None when it parses
    functions: tuple[str, ...]  # the `!function` targets it names


def read_task_files(tasks_dir: str | Path | None) -> list[TaskFile]:
    """Every ``*.yaml``/``*.yml`` under ``tasks_dir`` (none when it is not a folder)."""
    root = Path(tasks_dir) if tasks_dir else None
    if root is None or not root.is_dir():
        return []
    out = []
    for path in sorted([*root.rglob("*.yaml"), *root.rglob("*.yml")]):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            out.append(TaskFile(path, (), f"cannot be read: {exc}", ()))
            continue
        problem = None
        try:
            yaml.load(text, Loader=_TaskLoader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
            problem = f"{where}{getattr(exc, 'problem', None) or exc}"
        out.append(TaskFile(path, tuple(TASK_LINE.findall(text)), problem, tuple(FUNCTION_TAG.findall(text))))
    return out
