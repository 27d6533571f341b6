"""The fidelity study's metrics on small inputs whose answers are known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mergemix_dagster.core.errors import CheckpointMismatchError, ConfigError, MergeMixError
from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.evaluation.fidelity import (
    SearchCost,
    cost_markdown,
    dual_capability_mixtures,
    rank_fidelity,
    rankdata,
    spearman,
    task_vector_diagnostics,
    validation_mixtures,
    with_general,
)

DOMAINS = ("math", "code", "web", "sft")


def test_rankdata_averages_ties():
    assert rankdata(np.array([10.0, 30.0, 20.0, 20.0])).tolist() == [1.0, 4.0, 2.5, 2.5]


def test_spearman_known_values():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # one swapped adjacent pair out of 4: 1 - 6*2/(4*15) = 0.8
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))  # constant side: undefined, not 0
    with pytest.raises(MergeMixError):
        spearman([1, 2], [1, 2, 3])


def test_rank_fidelity_overall_recovery_and_gain_recovery():
    proxy = {"math": np.array([0.3, 0.4, 0.5]), "code": np.array([0.2, 0.2, 0.5])}
    trained = {"math": np.array([0.6, 0.8, 1.0]), "code": np.array([0.4, 0.5, 0.5])}
    base = {"math": 0.2, "code": 0.2}
    r = rank_fidelity(proxy, trained, base)
    assert r.n == 3
    assert r.spearman["math"] == pytest.approx(1.0)
    # code: proxy ranks (1.5, 1.5, 3), trained ranks (1, 2.5, 2.5) -> Pearson of the ranks = 0.5
    assert r.spearman["code"] == pytest.approx(0.5)
    # overall = macro-average: proxy (0.25, 0.30, 0.50), trained (0.50, 0.65, 0.75) -> same order
    assert r.overall_spearman == pytest.approx(1.0)
    assert r.recovery["math"] == pytest.approx(np.mean([0.5, 0.5, 0.5]))
    assert r.recovery["code"] == pytest.approx(np.mean([0.5, 0.4, 1.0]))
    # gain recovery of math: sum(proxy - 0.2) / sum(trained - 0.2) = 0.6 / 1.8
    assert r.gain_recovery["math"] == pytest.approx(0.6 / 1.8)
    assert r.overall_recovery == pytest.approx((0.5 + 0.6333333) / 2, rel=1e-5)


def test_rank_fidelity_rejects_mismatched_or_nan_scores():
    with pytest.raises(MergeMixError, match="capabilities"):
        rank_fidelity({"math": np.ones(3)}, {"code": np.ones(3)})
    with pytest.raises(MergeMixError, match="NaN"):
        rank_fidelity({"math": np.array([0.1, np.nan])}, {"math": np.array([0.1, 0.2])})
    with pytest.raises(MergeMixError, match="expected 2"):
        rank_fidelity({"math": np.ones(2)}, {"math": np.ones(3)})


def test_validation_mixtures_include_given_points_and_spread_the_rest():
    chosen = Mixture.from_dict({"math": 0.7, "code": 0.1, "web": 0.1, "sft": 0.1})
    mixes = validation_mixtures(DOMAINS, 12, seed=0, include=[chosen, Mixture.uniform(DOMAINS)])
    assert len(mixes) == 12
    assert mixes[0] == chosen and mixes[1] == Mixture.uniform(DOMAINS)
    arr = np.array([m.as_array() for m in mixes])
    dists = np.linalg.norm(arr[:, None] - arr[None], axis=-1) + np.eye(12)
    # a max-min design never puts two points close together (random Dirichlet draws often do)
    assert dists.min() > 0.15
    assert validation_mixtures(DOMAINS, 12, seed=0, include=[chosen]) == validation_mixtures(
        DOMAINS, 12, seed=0, include=[chosen]
    )
    with pytest.raises(ConfigError):
        validation_mixtures(DOMAINS, 1, seed=0)


def test_dual_capability_line_and_general_share():
    line = dual_capability_mixtures(DOMAINS, ("math", "sft"), [0.1, 0.9])
    assert line[0].as_dict() == pytest.approx({"math": 0.1, "code": 0.0, "web": 0.0, "sft": 0.9})
    with pytest.raises(ConfigError):
        dual_capability_mixtures(DOMAINS, ("math", "math"))
    mixed = with_general(Mixture.from_dict({"math": 0.5, "code": 0.5}), 0.5)
    assert mixed.as_dict() == pytest.approx({"math": 0.25, "code": 0.25, "general": 0.5})


def test_task_vector_diagnostics_cosine_and_relative_update():
    base = {"w": torch.tensor([[1.0, 0.0], [0.0, 0.0]]), "b": torch.zeros(2)}
    experts = {
        "a": {"w": torch.tensor([[2.0, 0.0], [0.0, 0.0]]), "b": torch.zeros(2)},  # Δ = e1
        "b": {"w": torch.tensor([[1.0, 3.0], [0.0, 0.0]]), "b": torch.zeros(2)},  # Δ = 3 e2
        "c": {"w": torch.tensor([[0.0, 0.0], [0.0, 0.0]]), "b": torch.zeros(2)},  # Δ = -e1
    }
    d = task_vector_diagnostics(base, experts)
    assert d.cosine[0, 1] == pytest.approx(0.0)
    assert d.cosine[0, 2] == pytest.approx(-1.0)
    assert d.cosine[1, 1] == pytest.approx(1.0)
    assert d.relative_update == pytest.approx({"a": 1.0, "b": 3.0, "c": 1.0})
    bad = {"a": {"w": torch.zeros(3, 2), "b": torch.zeros(2)}}
    with pytest.raises(CheckpointMismatchError, match="shape"):
        task_vector_diagnostics(base, bad)


def test_cost_table_ratio_is_against_the_first_search():
    text = cost_markdown([SearchCost("mergemix", 4, 100, 10.0, 40, 80.0), SearchCost("trained", 12, 300, 30.0, 12, 24.0)])
    assert "3.00×" in text and "1.00×" in text
