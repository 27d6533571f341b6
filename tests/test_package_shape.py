"""The shape of the package that issue 17 set, kept true by a test rather than by hope: the root holds only the
entry points, modules stay short enough to read in one sitting, and no module reaches into another's
``_private`` names (the layer order itself is `lint-imports`' job, run by `make test`)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mergemix_dagster"
MAX_LINES = 450
ROOT_FILES = {"__init__.py", "__main__.py", "definitions.py"}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_package_root_holds_only_the_entry_points():
    loose = {p.name for p in PACKAGE.glob("*.py")} - ROOT_FILES
    assert not loose, f"modules loose at the package root: {sorted(loose)}; put them in a layer's subpackage"


def test_no_module_is_longer_than_450_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these by concern: {long}"


def test_no_module_imports_another_modules_private_names():
    offenders = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mergemix_dagster"):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if private:
                    offenders.append(f"{path.relative_to(PACKAGE)}: from {node.module} import {', '.join(private)}")
    assert not offenders, "\n".join(offenders)
