"""docs/own-project.md, run as a new user runs it (issue 19, "what it must show").

The page's `make_example.py` writes a tiny random base (save_pretrained), three corpora (a .jsonl.gz file, a
.parquet file, a folder of .txt) and three lm-eval tasks; its `own.yaml` (no `validation:` section) is the
project. From a folder outside the checkout, with MERGEMIX_*/DAGSTER_HOME unset: the page's commands
(`check`, `run`), then the commands `run` prints (report, show, export) exactly as printed, each as a
subprocess; every export is loaded by its consumer. Llama goes the whole path; Qwen2, GPT-NeoX and GPT-2 run
the same project in process with its smallest settings (two of the domains, three seed points, no DeMix round,
512 expert tokens, two items per task), to keep the module cheap.
"""

from __future__ import annotations

import json
import os
import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

DOC = Path(__file__).resolve().parents[1] / "docs" / "own-project.md"
PLACEHOLDER = "/home/me/own"
BIN = Path(sys.executable).parent
HINTS = ("Report:", "Export:")  # the hints the page runs; `Mixtures:` (show) and the UI are only shown


def doc_blocks() -> tuple[dict[str, str], list[str]]:
    """The page's code blocks named by their first line (``# own.yaml``), and its bash command lines."""
    named, commands = {}, []
    for lang, body in re.findall(r"```(\w*)\n(.*?)```", DOC.read_text(), flags=re.DOTALL):
        first = body.splitlines()[0]
        if lang == "bash":
            commands += [line.split("  #")[0].strip() for line in body.splitlines() if line.strip()]
        elif first.startswith("# "):
            named[first[2:].split(":")[0].strip()] = body
    return named, commands


def user_env() -> dict[str, str]:
    """A new user's shell: no project settings in the environment (the checkout's PYTHONPATH kept, if any)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MERGEMIX_", "DAGSTER_"))}
    return env | {"PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}


def sh(command: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """``command`` as a shell runs it in ``cwd``; ``mergemix``/``python`` are this environment's."""
    done = subprocess.run(command, shell=True, cwd=cwd, env=user_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def as_documented(command: str, root: Path) -> str:
    """A printed command as the page writes it: the project folder as /home/me/own, executables by name."""
    for exe in {BIN / "mergemix", (BIN / "mergemix").resolve()}:  # a venv reached through a symlink prints either
        command = command.replace(f"{shlex.quote(str(exe))} ", "mergemix ")
    return command.replace(str(root), PLACEHOLDER)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The page's project, checked and run through the CLI from a folder outside the checkout."""
    named, commands = doc_blocks()
    root = tmp_path_factory.mktemp("own").resolve()
    assert not root.is_relative_to(DOC.parents[1])
    (root / "make_example.py").write_text(named["make_example.py"])
    (root / "own.yaml").write_text(named["own.yaml"].replace(PLACEHOLDER, str(root)))
    first = [c for c in commands if not c.startswith("MERGEMIX_HOME=")]
    assert first == ["python make_example.py", "mergemix check --config own.yaml", "mergemix run --config own.yaml"]
    # python make_example.py: in this interpreter (importing torch again in a child would cost seconds)
    old, argv = os.getcwd(), sys.argv
    os.chdir(root)
    sys.argv = ["make_example.py"]
    try:
        runpy.run_path(str(root / "make_example.py"), run_name="__main__")
    finally:
        os.chdir(old)
        sys.argv = argv
    out = {c.split()[1]: sh(c, root) for c in first[1:]}
    printed = {line.split(":", 1)[0] + ":": line.split(":", 1)[1].strip()
               for line in out["run"].stdout.splitlines() if line.startswith(HINTS)}
    hints = {name: sh(printed[name], root) for name in HINTS}
    return root, commands, out, printed, hints


def test_the_page_runs_as_written_and_its_hints_are_the_printed_ones(project):
    root, commands, out, printed, _ = project
    assert "mergemix check: OK" in out["check"].stdout
    assert "LlamaForCausalLM" in out["check"].stdout and ".parquet" in out["check"].stdout
    assert all(f"my_{t} (4)" in out["check"].stdout for t in ("sums", "words", "notes"))
    assert "validation.heldout_tasks" in out["check"].stdout + out["check"].stderr  # a warning, not an error
    assert "Chosen mixture for stage 's0':" in out["run"].stdout
    documented = [c for c in commands if c.startswith("MERGEMIX_HOME=")]
    assert documented == [as_documented(printed[h], root) for h in HINTS]
    text = DOC.read_text()
    for line in out["run"].stdout.splitlines():  # the page's copy of the printed block, paths aside
        if line.startswith(("mixture.json:", "DuckDB:", "Dagster UI:", "Mixtures:", *HINTS)):
            shown = line.replace(str(root), PLACEHOLDER)
            for venv_bin in {BIN, BIN.resolve()}:  # a venv reached through a symlink prints its resolved path
                shown = shown.replace(f"{venv_bin}/", "/path/to/.venv/bin/")
            assert shown in text, line


def test_report_and_export_read_the_project_that_ran(project):
    root, _, _, _, hints = project
    report = Path(hints["Report:"].stdout.strip().splitlines()[-1])
    assert report == root / "home" / "reports" / "s0" / "report.md"
    body = report.read_text()
    mixture = json.loads((root / "home" / "store" / "stages" / "s0" / "mixture.json").read_text())
    for name in mixture["weights"]:
        assert f"| {name} " in body.split("## Trade-offs")[0]
    for model in ("base", "expert arith", "expert words", "expert notes", "search choice (verified)"):
        assert f"| {model} " in body
    written = dict(line.split(None, 1) for line in hints["Export:"].stdout.splitlines() if line[:1].isalpha()
                   and not line.startswith("no token plan"))
    assert sorted(written) == ["hf_python", "hf_yaml", "json", "megatron", "olmo", "yaml"]
    assert "warning" not in hints["Export:"].stderr  # every domain has a location: no placeholder


def _exports(project) -> tuple[Path, dict, dict]:
    root = project[0]
    folder = root / "home" / "exports" / "s0"
    settings = yaml.safe_load((root / "own.yaml").read_text())
    plan = json.loads((folder / "mixture_plan.json").read_text())
    return folder, settings, plan


def _domain_of(text: str) -> str:
    return "arith" if " plus " in text else "words" if " comes " in text else "notes" if text.startswith("note ") else text


def test_every_export_loads_in_its_consumer(project, tmp_path):
    from datasets import Value, interleave_datasets, load_dataset

    from mergemix_dagster.core.data.corpora import read_documents
    from mergemix_dagster.core.data.token_plan import TokenPlan

    folder, settings, plan = _exports(project)
    weights = {n: w for n, w in plan["weights"].items() if round(w, 8) > 0}
    paths = {d["name"]: d["paths"] for d in settings["domains"]}

    # hf_interleave.yaml: every part through load_dataset reads what the project read; interleave as written
    doc = yaml.safe_load((folder / "hf_interleave.yaml").read_text())
    assert [d["name"] for d in doc["datasets"]] == list(weights)
    sources = []
    for entry in doc["datasets"]:
        parts = [load_dataset(p["builder"], data_files=p["data_files"], split="train", cache_dir=str(tmp_path / "cache"),
                              **p.get("load_kwargs", {}))
                 .select_columns([p["text_field"]]) for p in entry["parts"]]
        parts = [(ds if "text" in ds.column_names else ds.rename_column(ds.column_names[0], "text"))
                 .cast_column("text", Value("string")) for ds in parts]  # parquet gives large_string
        assert sorted(r["text"] for ds in parts for r in ds) == sorted(read_documents(paths[entry["name"]]))
        sources.append(parts[0])
    mixed = interleave_datasets(sources, **doc["interleave_datasets"])
    assert {_domain_of(r["text"]) for r in mixed.select(range(min(60, len(mixed))))} <= set(weights)

    # hf_interleave.py: the written snippet, in a fresh interpreter, offline
    snippet = ("import json, runpy, sys\nbuild = runpy.run_path(sys.argv[1])['build_mixture']\n"
               "print(json.dumps([r['text'] for r in build(seed=0).take(200)]))")
    env = user_env() | {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    ran = subprocess.run([sys.executable, "-c", snippet, str(folder / "hf_interleave.py")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert ran.returncode == 0, ran.stderr[-3000:]
    seen = {_domain_of(t) for t in json.loads(ran.stdout.strip().splitlines()[-1])}
    assert seen <= set(weights) and seen >= {n for n, w in weights.items() if w >= 0.05}, (seen, weights)

    # megatron_blend.txt: megatron-core parses it into the configured prefixes
    from megatron.core.datasets.utils import get_blend_from_list

    prefixes, blend = get_blend_from_list((folder / "megatron_blend.txt").read_text().split())
    configured = settings["export"]["megatron_prefixes"]
    assert prefixes == [configured[n][0] for n in weights] and sum(blend) == pytest.approx(1)

    # olmo_source_mixture.yaml: OLMo-core's SourceMixtureConfig/List rules (the library: scripts/check_olmo_export.py)
    sources = yaml.safe_load((folder / "olmo_source_mixture.yaml").read_text())["sources"]
    assert [s["source_name"] for s in sources] == list(weights)
    assert sum(s["target_ratio"] for s in sources) == pytest.approx(1)
    assert all(0 < s["target_ratio"] <= 1 and s["paths"] and s["max_repetition_ratio"] >= 1 for s in sources)

    # mixture_plan.json / .yaml: the token plan of target.tokens from the counts mixture.json records
    for name in ("mixture_plan.json", "mixture_plan.yaml"):
        loaded = yaml.safe_load((folder / name).read_text())  # JSON is YAML
        token_plan = TokenPlan.from_dict(loaded["token_plan"])
        assert token_plan.target_tokens == settings["target"]["tokens"]
        assert sum(a.tokens for a in token_plan.allocations) == token_plan.target_tokens
        assert all(a.available_tokens and a.available_tokens > 0 for a in token_plan.allocations)


# --------------------------------------------------- the same project on the other three architectures


@pytest.mark.parametrize("arch, model_class", [
    ("qwen2", "Qwen2ForCausalLM"), ("gpt_neox", "GPTNeoXForCausalLM"), ("gpt2", "GPT2LMHeadModel"),
])
def test_the_page_project_runs_on_other_architectures(arch, model_class, tmp_path, monkeypatch, capsys):
    """The smallest run of the page's project on a base of ``arch``: two domains, three seed points, no DeMix round."""
    from mergemix_dagster.cli import main

    named, _ = doc_blocks()
    (tmp_path / "make_example.py").write_text(named["make_example.py"])
    example = runpy.run_path(str(tmp_path / "make_example.py"))
    example["make_base"](tmp_path / f"base-{arch}", arch)
    example["make_data"](tmp_path / "data")
    example["make_tasks"](tmp_path / "tasks")
    raw = yaml.safe_load(named["own.yaml"].replace(PLACEHOLDER, str(tmp_path)))
    # the smallest run: two of the three domains (.jsonl.gz, folder of .txt) and their tasks, no DeMix round
    raw["domains"] = [d for d in raw["domains"] if d["name"] != "words"]
    raw["evaluation"]["tasks"] = [t for t in raw["evaluation"]["tasks"] if t["name"] != "my_words"]
    raw["model"]["base"] = str(tmp_path / f"base-{arch}")
    raw["experts"]["tokens"] = 512
    raw["evaluation"]["limit"] = 2
    raw["search"] = {"n_candidates": 3, "n_samples": 100, "cv_folds": 2, "rounds": []}
    raw.pop("export")
    (tmp_path / "own.yaml").write_text(yaml.safe_dump(raw))
    for name in ("MERGEMIX_HOME", "MERGEMIX_CONFIG", "DAGSTER_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--config", "own.yaml"]) == 0
    out = capsys.readouterr().out
    assert "Chosen mixture for stage 's0':" in out
    from mergemix_dagster.core.settings import load_settings
    from mergemix_dagster.resources import EvaluationDatabase

    settings = load_settings(str(tmp_path / "own.yaml"))
    config = json.loads((tmp_path / f"base-{arch}" / "config.json").read_text())
    assert config["architectures"] == [model_class]
    rows = EvaluationDatabase(path=settings.database_path).evaluations("s0")
    assert set(rows["task"]) == {"my_sums", "my_notes"}
    assert rows[rows["kind"] == "seed"]["candidate_id"].nunique() == settings.search.n_candidates

