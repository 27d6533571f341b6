"""What the Dagster UI shows: typed tables, rounded numbers, inline plots, described checks (issue 12)."""

from __future__ import annotations

import base64

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from mergemix_dagster.steps.metadata import image, number, rounded, table

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_of(markdown: str) -> bytes:
    """The PNG bytes of the data URI inside a ``![...](data:image/png;base64,...)`` markdown value."""
    assert "](data:image/png;base64," in markdown
    return base64.b64decode(markdown.split("base64,", 1)[1].rstrip(")"))


def test_table_has_a_typed_schema_and_rounded_cells():
    frame = pd.DataFrame(
        {"domain": ["math", "code"], "n": [3, 4], "gain": [0.9999999999999999, -0.0123456789], "ok": [True, False],
         "alpha": [{"math": 1.0, "code": 0.0}, {"math": 0.25, "code": 0.75}]}
    )
    value = table(frame, descriptions={"gain": "expert − base"})
    assert isinstance(value, dg.TableMetadataValue)
    types = {c.name: c.type for c in value.schema.columns}
    assert types == {"domain": "string", "n": "int", "gain": "float", "ok": "bool", "alpha": "string"}
    assert [c.description for c in value.schema.columns if c.name == "gain"] == ["expert − base"]
    rows = [r.data for r in value.records]
    assert rows[0]["gain"] == 1.0 and rows[1]["gain"] == -0.01235
    assert rows[1]["alpha"] == "math=0.25, code=0.75" and rows[0]["ok"] is True and rows[1]["n"] == 4


def test_rounding_keeps_four_significant_digits_and_nan():
    assert rounded(4.704683303833008) == 4.705
    assert rounded(123456.7) == 123500.0 and rounded(0.0) == 0.0
    assert np.isnan(rounded(float("nan")))
    assert number(0.9999999999999999).value == 1.0


def test_image_embeds_a_png_from_a_file_or_a_figure(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    from_figure = image(fig, "line")
    fig.savefig(tmp_path / "line.png")
    plt.close(fig)
    from_file = image(tmp_path / "line.png", "line")
    assert isinstance(from_figure, dg.MarkdownMetadataValue)
    assert _png_of(from_figure.value).startswith(PNG_SIGNATURE)
    assert _png_of(from_file.value) == (tmp_path / "line.png").read_bytes()


# --- the assets of a real smoke run (session fixture shared with the other pipeline tests) ---


def _latest(instance, key: str, partition: str | None = "s0"):
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[partition] if partition else None),
        limit=1,
    ).records
    return records[0].asset_materialization.metadata


@pytest.fixture(scope="module")
def validated(smoke_run):
    from mergemix_dagster.runner.stage import run_report, run_validation

    settings, defs, instance, _ = smoke_run
    run_validation(defs, settings, instance, "s0")  # reuses the runs when test_validation did it already
    run_report(defs, instance)
    return settings, defs, instance


def test_expert_page_carries_the_expert_vs_base_table_and_its_check(smoke_run):
    settings, defs, instance, _ = smoke_run
    meta = _latest(instance, "candidate_evaluations")
    versus = meta["expert_vs_base"]
    assert isinstance(versus, dg.TableMetadataValue)
    assert [c.name for c in versus.schema.columns] == ["domain", "capability", "base", "expert", "gain", "ci_low",
                                                       "ci_high", "beats_base"]
    assert sorted(r.data["domain"] for r in versus.records) == sorted(settings.domain_names)
    gains = {r.data["domain"]: r.data["gain"] for r in versus.records}
    assert all(g == float(f"{g:.4g}") for g in gains.values())  # 4 significant digits, never 0.9999999999999999
    assert isinstance(meta["score_range_by_task"], dg.TableMetadataValue)

    spec = next(iter(defs.resolve_assets_def("candidate_evaluations").check_specs))
    assert spec.name == "experts_beat_base" and "own domain's capability" in spec.description and spec.blocking
    from mergemix_dagster.runner.checks import latest_check_results

    results = {r.check: r for r in latest_check_results(instance, "s0")}
    check = results["experts_beat_base"]
    # the check's verdict is the table's: every expert's paired interval above 0 (without items: gain > 0)
    beats = [r.data["ci_low"] > 0 if r.data["ci_low"] is not None else r.data["gain"] > 0 for r in versus.records]
    assert [r.data["beats_base"] for r in versus.records] == beats and check.passed == all(beats)
    assert check.severity == ("ERROR" if settings.checks.block else "WARN")
    assert f"of {len(settings.domain_names)} experts beat the base" in check.description


def test_candidates_page_carries_the_task_vectors_and_the_report_prints_them(smoke_run):
    """Every optimize run shows ‖Δ‖/‖base‖ and the task-vector cosines (not only the validation study)."""
    from mergemix_dagster.core.report import render_markdown
    from mergemix_dagster.runner.report import stage_report

    settings, _, instance, _ = smoke_run
    meta = _latest(instance, "merge_candidates")
    table = meta["task_vectors"].value
    assert table.splitlines()[0] == "| | " + " | ".join(settings.domain_names) + " | ‖Δ‖/‖base‖ |"
    assert all(meta[f"relative_update_{d}"].value > 0 for d in settings.domain_names)
    assert table in render_markdown(stage_report(settings, instance, "s0"))


def test_validation_page_shows_plots_and_tables(validated):
    settings, defs, instance = validated
    meta = _latest(instance, "proxy_fidelity")
    for key in ("rank_fidelity_plot", "dual_capability_plot"):
        assert _png_of(meta[key].value).startswith(PNG_SIGNATURE)
    mixtures = meta["mixtures"]
    assert isinstance(mixtures, dg.TableMetadataValue) and len(mixtures.records) == settings.validation.n_mixtures
    assert {c.name for c in meta["by_capability"].schema.columns} >= {"capability", "spearman", "recovery"}
    assert isinstance(_latest(instance, "validation_design")["mixtures"], dg.TableMetadataValue)
    assert isinstance(_latest(instance, "mixture_quality")["scores"], dg.TableMetadataValue)
    spec = next(iter(defs.resolve_assets_def("proxy_fidelity").check_specs))
    assert "not to be trusted" in spec.description

    comparison = _latest(instance, "stage_comparison", None)
    assert isinstance(comparison["comparison"], dg.TableMetadataValue)
    assert _png_of(comparison["mixtures_by_stage"].value).startswith(PNG_SIGNATURE)


def test_checks_block_stops_the_stage_before_the_mixture(smoke_run, pipeline_config, tmp_path):
    """With `checks.block: true` a failed experts_beat_base is ERROR and Dagster skips the surrogates and the
    mixture of that run; without it the same failure is a WARN and the run goes on (the session's run)."""
    import yaml

    from mergemix_dagster.definitions import build_definitions
    from mergemix_dagster.runner.stage import register_stage
    from mergemix_dagster.core.settings import load_settings

    raw = yaml.safe_load(pipeline_config.read_text())
    raw["checks"] = {"block": True}
    blocking = tmp_path / "blocking.yaml"
    blocking.write_text(yaml.safe_dump(raw))
    settings = load_settings(str(blocking))
    defs = build_definitions(settings, config=str(blocking))
    with dg.instance_for_test() as instance:  # its own event log: the session's latest checks stay as they are
        register_stage(instance, "s0")
        result = defs.resolve_job_def("optimize_job").execute_in_process(
            instance=instance, partition_key="s0", raise_on_error=False
        )
        (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "experts_beat_base"]
        built = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()
                 if e.asset_key is not None}
    assert {"merge_candidates", "candidate_evaluations"} <= built
    if evaluation.passed:
        assert {"capability_surrogates", "chosen_mixture"} <= built
    else:  # the smoke experts (16 steps) do not beat the base: the stage stops here
        assert evaluation.severity == dg.AssetCheckSeverity.ERROR
        assert not built & {"capability_surrogates", "chosen_mixture"}
