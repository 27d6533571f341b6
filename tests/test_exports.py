"""Trainer exports: every format is read back with its consumer's own conventions (the library itself where
installed): `datasets.interleave_datasets`, Megatron's blend parser, OLMo-core's source-mixture rules."""

from __future__ import annotations

import json
import runpy
from collections import Counter
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
import yaml

from mergemix_dagster.core.errors import ExportError
from mergemix_dagster.core.training.exports import (
    FILE_NAMES,
    FORMATS,
    megatron_blend,
    rounded_weights,
    token_plan_for,
    write_exports,
)
from mergemix_dagster.core.data.token_plan import TokenPlan, plan_tokens
from mergemix_dagster.core.settings import Settings

# three sources with very different document lengths (words), so per-document probabilities matter
WORDS_PER_DOC = {"math": 10, "code/repos": 60, "code/competitions": 20}
DOCS = 40
WEIGHTS = {"math": 0.5, "code/repos": 0.3, "code/competitions": 0.2, "web": 0.0}


def _write_jsonl(path: Path, name: str, field: str, extra: dict) -> None:
    words = WORDS_PER_DOC[name]
    with path.open("w") as f:
        for i in range(DOCS):
            f.write(json.dumps({field: " ".join([name] + ["w"] * (words - 1)), **extra, "i": i}) + "\n")


@pytest.fixture(scope="session")
def data_settings(tmp_path_factory) -> Settings:
    """Domains on tiny local jsonl files: `math` (text field `problem`), `code` split in two, `web` embedded."""
    root = tmp_path_factory.mktemp("export-data")
    _write_jsonl(root / "math.jsonl", "math", "problem", {"answer": "4"})
    _write_jsonl(root / "repos.jsonl", "code/repos", "text", {"repo": "x"})
    _write_jsonl(root / "comp.jsonl", "code/competitions", "text", {})
    return Settings(
        home=str(root / "home"),
        domains=[
            {"name": "math", "paths": [str(root / "math.jsonl")], "text_field": "problem"},
            {
                "name": "code",
                "subdomains": [
                    {"name": "repos", "paths": [str(root / "repos.jsonl")]},
                    {"name": "competitions", "paths": [str(root / "comp.jsonl")]},
                ],
            },
            {"name": "web"},
        ],
        target={"tokens": 1_000_000, "max_epochs": 4},
        export={"megatron_prefixes": {"math": ["/mg/math_a", "/mg/math_b"], "code/repos": {"/mg/repos": 10}}},
    )


@pytest.fixture(scope="session")
def plan() -> TokenPlan:
    available = {n: WORDS_PER_DOC.get(n, 1) * DOCS * 1000 for n in WEIGHTS}
    documents = {n: DOCS * 1000 for n in WEIGHTS}
    return plan_tokens(WEIGHTS, 1_000_000, available, 4, documents)


@pytest.fixture(scope="session")
def exported(data_settings, plan, tmp_path_factory) -> dict[str, Path]:
    return write_exports({"stage": "s0", "weights": WEIGHTS}, plan, data_settings, tmp_path_factory.mktemp("out"))


def test_every_format_is_written_by_default(exported):
    assert set(exported) == set(FORMATS)
    assert {p.name for p in exported.values()} == set(FILE_NAMES.values())


@pytest.mark.parametrize("fmt, load", [("json", json.loads), ("yaml", yaml.safe_load)])
def test_plan_round_trips_with_both_levels(exported, plan, fmt, load):
    doc = load(exported[fmt].read_text())
    assert doc["stage"] == "s0" and doc["weights"] == WEIGHTS
    assert doc["coarse_weights"] == pytest.approx({"math": 0.5, "code": 0.5, "web": 0.0})
    assert TokenPlan.from_dict(doc["token_plan"]) == plan


def test_hf_yaml_probabilities_drive_interleave_datasets(exported):
    """The YAML's probabilities, in its datasets' order, sample in-memory datasets in those proportions."""
    from datasets import Dataset, interleave_datasets

    doc = yaml.safe_load(exported["hf_yaml"].read_text())
    names = [d["name"] for d in doc["datasets"]]
    assert doc["probability_unit"].startswith("per document")  # the plan has document counts
    probabilities = doc["interleave_datasets"]["probabilities"]
    assert names == ["math", "code/repos", "code/competitions"]  # zero-weight web is left out
    assert sum(Decimal(str(p)) for p in probabilities) == 1
    parts = [Dataset.from_dict({"src": [n] * 2000}) for n in names]
    mixed = interleave_datasets(
        parts, probabilities=probabilities, seed=0, stopping_strategy=doc["interleave_datasets"]["stopping_strategy"]
    )
    counts = Counter(mixed["src"])
    total = sum(counts.values())
    for name, p in zip(names, probabilities):
        assert counts[name] / total == pytest.approx(p, abs=0.01)


def test_hf_python_snippet_streams_the_mixture_in_token_shares(exported):
    """Run the written snippet on the real jsonl files: *tokens* (here words) follow the chosen weights even
    though documents differ 6x in length, because probabilities are per document."""
    build = runpy.run_path(str(exported["hf_python"]))["build_mixture"]
    tokens = Counter()
    for example in build(seed=0).take(3000):
        words = example["text"].split()
        tokens[words[0]] += len(words)
    total = sum(tokens.values())
    for name in ("math", "code/repos", "code/competitions"):
        assert tokens[name] / total == pytest.approx(WEIGHTS[name], abs=0.03)


def test_megatron_blend_parses_with_megatron_and_sums_to_one(exported):
    text = exported["megatron"].read_text().split()
    try:
        from megatron.core.datasets.utils import get_blend_from_list
    except ImportError:  # pragma: no cover - megatron-core is a dev dependency
        pytest.skip("megatron-core not installed")
    prefixes, weights = get_blend_from_list(text)
    assert prefixes == ["/mg/math_a", "/mg/math_b", "/mg/repos", "UNSET/code/competitions"]
    assert weights == pytest.approx([0.25, 0.25, 0.3, 0.2])  # math split evenly over its two prefixes
    assert sum(Decimal(w) for w in text[0::2]) == 1  # exactly, as written


def test_megatron_splits_a_name_by_prefix_token_counts(data_settings):
    by_tokens = {"math": {"/a": 300, "/b": 100}}
    settings = data_settings.model_copy(
        update={"export": data_settings.export.model_copy(update={"megatron_prefixes": by_tokens})}
    )
    blend = {p: Decimal(w) for w, p in megatron_blend({"math": 0.4, "code/repos": 0.6}, settings)}
    assert blend["/a"] == Decimal("0.3") and blend["/b"] == Decimal("0.1")
    assert sum(blend.values()) == 1


def test_olmo_yaml_follows_source_mixture_rules(exported, data_settings):
    """OLMo-core's SourceMixtureConfig/List.validate(): fields, 0 < ratio <= 1, ratios allclose to 1,
    max_repetition_ratio >= 1, 0 < max_source_fraction <= 1, non-empty paths."""
    sources = yaml.safe_load(exported["olmo"].read_text())["sources"]
    fields = {"source_name", "target_ratio", "paths", "max_repetition_ratio", "max_source_fraction"}
    assert all(set(s) == fields for s in sources)
    assert [s["source_name"] for s in sources] == ["math", "code/repos", "code/competitions"]
    assert np.allclose(sum(s["target_ratio"] for s in sources), 1.0)
    for s in sources:
        assert 0 < s["target_ratio"] <= 1 and s["paths"]
        assert s["max_repetition_ratio"] == 4 and s["max_source_fraction"] == 1
    assert sources[0]["paths"] == data_settings.domain("math").paths
    assert "requested_tokens for SourceMixtureDatasetConfig: 1000000" in exported["olmo"].read_text()


def test_olmo_epoch_cap_below_one_becomes_source_fraction(data_settings, tmp_path):
    settings = data_settings.model_copy(update={"target": data_settings.target.model_copy(update={"max_epochs": 0.5})})
    path = write_exports({"weights": WEIGHTS}, None, settings, tmp_path, ["olmo"])["olmo"]
    s = yaml.safe_load(path.read_text())["sources"][0]
    assert (s["max_repetition_ratio"], s["max_source_fraction"]) == (1.0, 0.5)


def test_rounded_weights_sum_to_exactly_one():
    thirds = rounded_weights({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, 8)
    assert sum(Decimal(v) for v in thirds.values()) == 1
    assert sorted(thirds.values()) == ["0.33333333", "0.33333333", "0.33333334"]
    assert rounded_weights({"a": 1 - 1e-12, "b": 1e-12}, 8) == {"a": "1.00000000"}  # rounds to 0: left out


def test_strict_mode_refuses_placeholders_and_nothing_is_written(data_settings, tmp_path):
    settings = data_settings.model_copy(update={"export": data_settings.export.model_copy(update={"strict": True})})
    with pytest.raises(ExportError, match="code/competitions.*no Megatron prefix"):
        write_exports({"weights": WEIGHTS}, None, settings, tmp_path / "out", ["json", "megatron"])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "prefixes, message",
    [
        ({"math": ["/a b"]}, "whitespace"),
        ({"math": ["0.5"]}, "reads as a number"),
        ({"math": ["/a"], "code/repos": ["/a"]}, "two names"),
        ({"maths": ["/a"]}, "not domains or sub-domains"),
    ],
)
def test_bad_megatron_prefixes_fail_with_export_error(data_settings, prefixes, message):
    settings = data_settings.model_copy(
        update={"export": data_settings.export.model_copy(update={"megatron_prefixes": prefixes})}
    )
    with pytest.raises(ExportError, match=message):
        megatron_blend({"math": 0.5, "code/repos": 0.5}, settings)


def test_a_token_plan_for_another_mixture_is_refused(data_settings, plan, tmp_path):
    other = {"math": 0.4, "code/repos": 0.4, "code/competitions": 0.2, "web": 0.0}
    with pytest.raises(ExportError, match="token plan is for"):
        write_exports({"weights": other}, plan, data_settings, tmp_path, ["json"])


def test_unknown_format_and_unknown_names_fail_with_export_error(data_settings, tmp_path):
    with pytest.raises(ExportError, match="unknown export formats"):
        write_exports({"weights": WEIGHTS}, None, data_settings, tmp_path, ["csv"])
    with pytest.raises(ExportError, match="not domains or sub-domains"):
        write_exports({"weights": {"math": 0.5, "poetry": 0.5}}, None, data_settings, tmp_path, ["olmo"])


def test_cli_exports_a_finished_stage_from_the_store(tmp_path, capsys):
    """`mergemix export` reads stages/<stage>/mixture.json from the checkpoint store and writes the files."""
    from mergemix_dagster.cli import main
    from mergemix_dagster.resources import CheckpointStore

    config = tmp_path / "settings.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "home": str(tmp_path / "home"),
                "domains": [{"name": "math"}, {"name": "code"}],
                "target": {"tokens": 1000, "max_epochs": 2},
                "export": {"megatron_prefixes": {"math": ["/mg/math"], "code": ["/mg/code"]}},
            }
        )
    )
    store = CheckpointStore(root=str(tmp_path / "home" / "store"))
    store.put_json("stages/s0/mixture.json", {"stage": "s0", "weights": {"code": 0.25, "math": 0.75}})
    out = tmp_path / "out"
    argv = ["--config", str(config), "export", "--stage", "s0", "--format", "megatron", "--format", "json",
            "--out", str(out), "--available-tokens", "math=100", "--available-tokens", "code=1000"]
    assert main(argv) == 0
    # settings order (math, code), not the payload's order
    assert (out / "megatron_blend.txt").read_text() == "0.75000000 /mg/math 0.25000000 /mg/code\n"
    assert sorted(p.name for p in out.iterdir()) == ["megatron_blend.txt", "mixture_plan.json"]
    doc = json.loads((out / "mixture_plan.json").read_text())
    assert list(doc["weights"]) == ["math", "code"]
    plan = TokenPlan.from_dict(doc["token_plan"])
    assert [a.name for a in plan.allocations] == ["math", "code"]
    assert plan.over_repeated == ("math",)  # 750 tokens from 100 available: 7.5 epochs > 2
    assert "over 2 epochs: math (7.50)" in capsys.readouterr().err

    assert main(argv[:4] + ["s9"]) == 2
    assert "no mixture.json" in capsys.readouterr().err


def test_token_plan_for_follows_settings_target(data_settings):
    available = {"math": 10**6, "code/repos": 10**6, "code/competitions": 10**6, "web": 10**6}
    shuffled = {"web": 0.0, "code/repos": 0.5, "math": 0.5, "code/competitions": 0.0}
    plan = token_plan_for(shuffled, data_settings, available)
    assert [a.name for a in plan.allocations] == ["math", "code/repos", "code/competitions", "web"]
    assert plan.target_tokens == 1_000_000 and plan.allocation("math").epochs == 0.5
    assert token_plan_for(WEIGHTS, data_settings, None) is None
    untargeted = data_settings.model_copy(update={"target": data_settings.target.model_copy(update={"tokens": None})})
    assert token_plan_for(WEIGHTS, untargeted, available) is None


def test_default_formats_come_from_the_settings(data_settings, tmp_path):
    settings = data_settings.model_copy(
        update={"export": data_settings.export.model_copy(update={"formats": ["megatron", "yaml"]})}
    )
    written = write_exports({"weights": WEIGHTS}, None, settings, tmp_path)
    assert list(written) == ["megatron", "yaml"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["megatron_blend.txt", "mixture_plan.yaml"]
    assert yaml.safe_load(written["yaml"].read_text())["token_plan"] is None
