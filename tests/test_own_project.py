"""A team's own project (issue 19): its config runs as written, later commands use the project the run used,
and a failure inside a step ends the command instead of hanging it."""

from __future__ import annotations

import errno
import signal
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest
import yaml

from mergemix_dagster.core.errors import ConfigError
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

    own = {"name": "my_heldout_sums", "capability": "math", "metric": "acc"}
    for heldout in ([], [own]):
        config = own_tasks_config(tmp_path, validation={"heldout_tasks": heldout})
        tasks = tmp_path / "tasks"
        (tasks / "my_heldout_sums.yaml").write_text(
            (tasks / "my_sums.yaml").read_text().replace("task: my_sums", "task: my_heldout_sums"))
        assert check_validation_settings(load_settings(str(config))) == []
    # the search's own task is not held out: refused when the settings load, before anything runs
    searched = {"name": "my_sums", "capability": "math", "metric": "acc"}
    with pytest.raises(ConfigError, match=r"\['my_sums'\] are also search tasks"):
        load_settings(str(own_tasks_config(tmp_path, validation={"heldout_tasks": [searched]})))


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


# ------------------------------------------------- the project a run used is the project later commands use


def test_a_command_without_config_reads_the_project_the_home_records(tmp_path, monkeypatch, capsys):
    from mergemix_dagster.cli import main
    from mergemix_dagster.core.settings import load_settings, record_project, recorded_project

    home = tmp_path / "home"
    config = own_tasks_config(tmp_path, home=str(home))
    monkeypatch.setenv("MERGEMIX_HOME", str(home))
    monkeypatch.delenv("MERGEMIX_CONFIG")
    assert load_settings().evaluation.tasks[0].name == "mm_math"  # no record yet: the embedded default
    record_project(load_settings(str(config)), config, "mergemix run")
    assert recorded_project(home)["config"] == str(config.resolve())
    assert load_settings().evaluation.tasks[0].name == "my_sums"  # what `report`, `show`, `export`, the UI load
    assert main(["show"]) == 0 and "no chosen mixtures yet" in capsys.readouterr().out
    # the same config named explicitly is the same project
    assert main(["show", "--config", str(config)]) == 0
    # another project on this home is refused by name, with both names and the fixes
    assert main(["show", "--config", "smoke"]) == 2
    err = capsys.readouterr().err
    assert f"holds the results of project {config.resolve()}" in err and "not of config smoke" in err
    assert f"pass --config {config.resolve()}" in err and "its own home" in err
    # a recorded config that is gone is named, not replaced by the default
    config.rename(tmp_path / "moved.yaml")
    assert main(["show"]) == 2
    assert "which no longer exists" in capsys.readouterr().err


def test_a_refused_run_does_not_claim_the_home(tmp_path, monkeypatch):
    from mergemix_dagster.cli import main
    from mergemix_dagster.core.settings import recorded_project

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"home": str(tmp_path / "home"),
                                   "domains": [{"name": "math", "capability": "math"}, {"name": "code", "capability": "math"}],
                                   "evaluation": {"tasks": [{"name": "no_such_task", "capability": "math"}]}}))
    assert main(["run", "--config", str(bad)]) == 2
    assert recorded_project(tmp_path / "home") is None


# ------------------------------------------------------------------------------- noise is said out loud

NOISE = "the mixture moves it by 0.01, 0.5× its noise 0.02 (p = 0.4); kept, since no target is resolved"


def noise_details(reasons: dict[str, str], weights: dict[str, float]) -> dict:
    from mergemix_dagster.core.search.choose import degenerate

    return {"chosen_from": "search", "degenerate": degenerate(weights), "not_optimized": {}, "protections": {},
            "resolution": {c: {"optimized": True, "reason": r} for c, r in reasons.items()}}


def test_a_choice_decided_by_noise_and_a_one_hot_choice_are_warnings():
    from mergemix_dagster.core.search.choose import choice_warnings

    noise = choice_warnings(noise_details({"math": NOISE, "code": NOISE}, {"math": 0.5, "code": 0.5}))
    assert len(noise) == 1 and noise[0].startswith("no capability is resolved (math, code)")
    one_resolved = {"math": "p = 0.001 < 0.01: resolved", "code": "p = 0.4: differences are noise"}
    assert choice_warnings(noise_details(one_resolved, {"math": 0.5, "code": 0.5})) == []
    one_hot = choice_warnings(noise_details(one_resolved, {"math": 1.0, "code": 0.0}))
    assert one_hot == ["degenerate mixture: math holds 100% of the mixture: effectively a single-domain run"]


def test_the_run_output_and_the_report_open_with_the_noise_warning(tmp_path, monkeypatch, capsys):
    import pandas as pd

    from mergemix_dagster.cli.run import print_mixture
    from mergemix_dagster.core.report import StageReport, render_markdown
    from mergemix_dagster.core.search.choose import choice_warnings
    from mergemix_dagster.core.settings import load_settings
    from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase, layout

    monkeypatch.setenv("MERGEMIX_HOME", str(tmp_path / "home"))
    settings = load_settings("smoke")
    weights = dict.fromkeys(settings.domain_names, 1 / len(settings.domain_names))
    details = noise_details(dict.fromkeys(settings.capabilities, NOISE), weights)
    EvaluationDatabase(path=settings.database_path).upsert_chosen_mixture("s0", weights, 0.5, 0.5, details)
    CheckpointStore(root=settings.store_uri).put_json(layout.mixture_key("s0"), {"weights": weights, **details})
    print_mixture(settings, "s0", str(tmp_path / "dagster"), "smoke")
    out = capsys.readouterr().out
    assert "  WARNING no capability is resolved" in out
    text = render_markdown(StageReport("s0", pd.DataFrame(), {}, pd.DataFrame(), warnings=choice_warnings(details)))
    assert text.splitlines()[2].startswith("> **WARNING** no capability is resolved")
    # the next commands, complete: absolute executables, the home and the config; the UI with DAGSTER_HOME
    report = next(x for x in out.splitlines() if x.startswith("Report:")).split(":", 1)[1].strip()
    assert report.startswith(f"MERGEMIX_HOME={settings.home_path} /") and report.endswith("--config smoke")
    ui = next(x for x in out.splitlines() if x.startswith("Dagster UI:"))
    assert f"DAGSTER_HOME={tmp_path / 'dagster'}" in ui and "MERGEMIX_CONFIG=smoke" in ui


# --------------------------------------------------------------------- what `mergemix check` checked


def test_check_prints_what_it_checked_for_a_users_base_corpora_and_tasks(tmp_path, capsys):
    import transformers

    from mergemix_dagster.cli import main
    from mergemix_dagster.core.check_summary import check_summary
    from mergemix_dagster.core.settings import load_settings
    from tests.test_faults import make_user_config

    config = make_user_config(tmp_path, "gpt2")
    summary = check_summary(load_settings(str(config)))
    rows = {r["domain"]: r for r in summary.domains}
    assert rows["math"]["files"] == "2" and rows["math"]["documents"] == "120"  # a.jsonl (60) + b.parquet (60)
    assert rows["math"]["source"] == ".jsonl, .parquet" and rows["words"]["files"] == "2"
    chars = int(rows["math"]["characters"].replace(",", ""))
    assert rows["math"]["tokens"] == f"≈{round(chars / 4):,}"
    assert "(general)" in rows
    model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "base-gpt2"))
    assert summary.base["architecture"] == "GPT2LMHeadModel"
    assert summary.base["parameters"] == f"{sum(p.numel() for p in model.parameters()):,}"
    assert summary.capabilities == [{"capability": "math", "tasks": "my_sums (4)", "items": "4",
                                     "domains": "math, words"}]  # evaluation.limit 4 of 6 items
    assert main(["check", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "domains (tokens ≈ characters / 4" in out and "GPT2LMHeadModel" in out and "my_sums (4)" in out
    assert out.rstrip().endswith("mergemix check: OK")


# ---------------------------------------------------------------------------------------------- exports


def test_export_aliases_placeholders_strict_and_the_recorded_token_counts(tmp_path, monkeypatch, capsys):
    import json

    from mergemix_dagster.cli import main
    from mergemix_dagster.core.settings import load_settings, resolve_config_path
    from mergemix_dagster.resources import CheckpointStore, layout

    raw = yaml.safe_load(resolve_config_path("smoke").read_text())
    raw |= {"home": str(tmp_path / "home"), "target": {"tokens": 1000, "max_epochs": 4}}
    config = tmp_path / "planned.yaml"
    config.write_text(yaml.safe_dump(raw))
    settings = load_settings(str(config))
    weights = dict.fromkeys(settings.domain_names, 1 / len(settings.domain_names))
    tokens = dict.fromkeys(settings.domain_names, 10_000)
    CheckpointStore(root=settings.store_uri).put_json(
        layout.mixture_key("s0"), {"stage": "s0", "weights": weights, "available_tokens": tokens})
    out = tmp_path / "exports"
    assert main(["export", "--config", str(config), "--format", "hf", "--format", "megatron", "--format", "json",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["hf_interleave.py", "hf_interleave.yaml", "megatron_blend.txt",
                                                     "mixture_plan.json"]
    megatron = next(x for x in printed.err.splitlines() if "megatron_blend.txt: no data location for" in x)
    assert "math" in megatron and "set export.megatron_prefixes" in megatron and "--strict" in megatron
    # the token plan from the counts mixture.json records, no --available-tokens needed
    assert json.loads((out / "mixture_plan.json").read_text())["token_plan"] is not None
    assert "no token plan" not in printed.out
    assert main(["export", "--config", str(config), "--format", "megatron", "--strict", "--out", str(tmp_path / "x")]) == 2
    assert "ExportError" in capsys.readouterr().err and not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------- report and compare


def test_the_report_names_its_objective_and_scale_and_rounds_tiny_weights(tmp_path, monkeypatch):
    from mergemix_dagster.core.report import render_markdown
    from mergemix_dagster.core.settings import load_settings
    from mergemix_dagster.resources import EvaluationDatabase
    from mergemix_dagster.runner.report import stage_report

    monkeypatch.setenv("MERGEMIX_HOME", str(tmp_path / "home"))
    settings = load_settings("smoke")
    weights = dict.fromkeys(settings.domain_names, 0.0) | {settings.domain_names[0]: 1 - 5.551115123125802e-17,
                                                          settings.domain_names[1]: 5.551115123125802e-17}
    details = {"objective": "maximin over capabilities", "chosen_from": "search", "resolution": {}}
    EvaluationDatabase(path=settings.database_path).upsert_chosen_mixture("s0", weights, 1.2, 1.117, details)
    import pandas as pd

    scored = pd.DataFrame([  # the base and the verified search choice, one row per capability
        {"candidate_id": cid, "kind": kind, "alpha": alpha, "capability": c, "task": c, "value": 0.3}
        for cid, kind, alpha in (("base", "base", dict.fromkeys(settings.domain_names, 0.0)), ("v", "verify", weights))
        for c in settings.capabilities])
    import mergemix_dagster.definitions  # noqa: F401  every module that binds configured_rows, bound before the patch
    monkeypatch.setattr("mergemix_dagster.resources.artifacts.configured_rows", lambda *_a, **_k: scored)
    with dg.instance_for_test() as instance:
        text = render_markdown(stage_report(settings, instance, "s0"))
    assert "e-17" not in text and "- objective: maximin over capabilities" in text
    assert "- verified objective: 1.117" in text and "so an objective above 1 beats every measured mixture" in text
    assert "| search choice (verified) |" in text and "search optimum" not in text


def _md_table(text: str, heading: str) -> list[dict[str, str]]:
    """The first markdown table after ``heading`` as rows of cells (header -> cell text)."""
    lines = text.split(heading, 1)[1].splitlines()
    rows = [line for line in lines[next(i for i, x in enumerate(lines) if x.startswith("|")):]]
    rows = rows[:next((i for i, x in enumerate(rows) if not x.startswith("|")), len(rows))]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    return [dict(zip(cells[0], r)) for r in cells[2:]]


def test_the_report_of_a_finished_stage_matches_mixture_json_and_duckdb(smoke_run):
    """Every figure of `mergemix report` for the session's smoke stage, recomputed from mixture.json, DuckDB
    and the instance's check records; no warning (matplotlib's included) while it renders."""
    import base64
    import json
    import warnings

    from mergemix_dagster.core.evaluation.scores import capability_means
    from mergemix_dagster.core.report import render_markdown
    from mergemix_dagster.core.search.choose import choice_warnings
    from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase, layout
    from mergemix_dagster.resources.artifacts import configured_rows
    from mergemix_dagster.runner.checks import latest_check_results
    from mergemix_dagster.runner.report import stage_report

    settings, _, instance, _ = smoke_run
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        text = render_markdown(stage_report(settings, instance, "s0"))
    assert [str(w.message) for w in caught if "matplotlib" in w.filename or w.filename.endswith("plots.py")] == []
    mixture = CheckpointStore(root=settings.store_uri).get_json(layout.mixture_key("s0"))
    db = EvaluationDatabase(path=settings.database_path, store_root=settings.store_uri)
    chosen = db.query("SELECT * FROM chosen_mixture WHERE stage = 's0'")
    details = json.loads(chosen["details"].iloc[0])

    # the report opens with the warnings mixture.json carries; the mixture is mixture.json's (and DuckDB's), rounded
    opening = [x[len("> **WARNING** "):] for x in text.splitlines() if x.startswith("> **WARNING** ")]
    assert opening == choice_warnings(mixture)
    shown = {r["domain"]: float(r["weight"]) for r in _md_table(text, "## Chosen mixture")}
    assert shown == pytest.approx({d: round(w, 4) for d, w in mixture["weights"].items()}, abs=1e-9)
    assert shown == pytest.approx(dict(zip(chosen["domain"], chosen["weight"])), abs=5e-5)
    row = chosen.iloc[0]
    for line in (f"- objective: {details['objective']}", f"- predicted objective: {row['predicted_utility']:.4g}",
                 f"- verified objective: {row['verified_utility']:.4g}", f"- chosen from: {details['chosen_from']}"):
        assert line in text.splitlines(), line

    # trade-offs: each model's mean score per capability, from the evaluation rows of DuckDB
    rows = configured_rows(db.evaluations("s0"), settings)
    def means(frame):
        return capability_means(zip(frame["capability"], frame["value"]))
    expected = {"base": means(rows[rows["kind"] == "base"]),
                "search choice (verified)": means(rows[rows["kind"] == "verify"])}
    for cid, group in rows[rows["kind"] == "seed"].groupby("candidate_id"):
        vertex = [d for d, w in dict(group["alpha"].iloc[0]).items() if abs(w - 1) < 1e-9]
        if vertex:
            expected[f"expert {vertex[0]}"] = means(group)
    table = {r["model"]: r for r in _md_table(text, "## Trade-offs")}
    assert set(table) == set(expected)
    for model, caps in expected.items():
        for cap in settings.capabilities:
            assert float(table[model][cap]) == pytest.approx(caps[cap], rel=1e-3, abs=1e-4), (model, cap)
        assert float(table[model]["mean"]) == pytest.approx(sum(caps.values()) / len(caps), rel=1e-3, abs=1e-4)

    # models scored: distinct candidates per kind in DuckDB, DeMix rounds included
    kinds = rows.groupby(rows["kind"].astype(str))["candidate_id"].nunique().to_dict()
    scored = {r["scored"]: int(r["models"]) for r in _md_table(text, "### Models scored")}
    rounds = {k: n for k, n in kinds.items() if k.startswith("round")}
    assert rounds and all(scored[f"DeMix round {k[5:]}"] == n for k, n in rounds.items())
    assert scored["base"] == kinds["base"] and scored["seed design"] == kinds["seed"] == settings.search.n_candidates
    assert scored["verification of the search's choice"] == kinds["verify"] and scored["total"] == sum(kinds.values())

    # the plot is the one written beside the report, of the dual pair's capabilities
    png = (layout.reports_dir(settings.home_path, "s0") / "tradeoff.png").read_bytes()
    pair = [settings.domain(d).capability for d in settings.dual_pair]
    assert f"### Trade-off: {pair[0]} vs {pair[1]}" in text
    assert f"base64,{base64.b64encode(png).decode('ascii')})" in text

    # asset checks and cost, from the instance and the training_runs table
    results = latest_check_results(instance, "s0")
    failed = sum(not r.passed for r in results)
    assert f"{len(results) - failed} passed, {failed} failed." in text
    assert len(_md_table(text, "## Asset checks")) == len(results)
    runs = db.training_runs("s0")
    cost = {r["study"]: r for r in _md_table(text, "## Cost")}
    for study, group in runs.groupby("study"):
        assert int(cost[study]["runs"]) == len(group) and float(cost[study]["tokens"]) == pytest.approx(
            group["tokens"].sum(), rel=1e-3)


def test_a_trade_off_plot_with_nothing_to_draw_warns_nobody(tmp_path):
    """The terminal's matplotlib warning of `mergemix report` ("No artists with labels found to put in
    legend"): a plot whose capabilities no model was scored on. Now no legend, no warning."""
    import warnings

    from mergemix_dagster.core.plots import tradeoff_plot

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tradeoff_plot({"base": {"math": 0.5}}, {"base": "base"}, "math", "code", tmp_path / "t.png")
    assert (tmp_path / "t.png").is_file()


def test_a_one_capability_project_gets_its_report_without_a_plot(tmp_path, monkeypatch):
    """Two domains, one capability (a common own project): the report used to stop on unpacking the plot's
    capability pair; now it says there is no trade-off to plot."""
    import pandas as pd

    import mergemix_dagster.definitions  # noqa: F401  bound before the patch (see above)
    from mergemix_dagster.core.report import render_markdown
    from mergemix_dagster.core.settings import load_settings
    from mergemix_dagster.resources import EvaluationDatabase
    from mergemix_dagster.runner.report import stage_report

    settings = load_settings(str(own_tasks_config(tmp_path)))
    weights = {"math": 0.5, "code": 0.5}
    EvaluationDatabase(path=settings.database_path).upsert_chosen_mixture("s0", weights, 1.0, 1.0, {})
    scored = pd.DataFrame([{"candidate_id": cid, "kind": kind, "alpha": alpha, "capability": "math",
                            "task": "my_sums", "value": 0.5}
                           for cid, kind, alpha in (("base", "base", {"math": 0.0, "code": 0.0}),
                                                    ("e", "seed", {"math": 1.0, "code": 0.0}), ("v", "verify", weights))])
    monkeypatch.setattr("mergemix_dagster.resources.artifacts.configured_rows", lambda *_a, **_k: scored)
    with dg.instance_for_test() as instance:
        text = render_markdown(stage_report(settings, instance, "s0"))
    assert "No trade-off plot: one capability (math)" in text and "data:image/png" not in text
    assert "| expert math " in text and "| seed design " in text
