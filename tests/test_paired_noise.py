"""Paired noise of mixture differences (core.evaluation.paired) on synthetic per-item scores with known truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mergemix_dagster.core.errors import MergeMixError, PairedAnalysisError
from mergemix_dagster.core.evaluation.paired import mixture_effect, paired_difference

#: The rule this replaces: spread of the mixture means >= min_spread_in_noise × the base's unpaired stderr.
UNPAIRED_FACTOR = 2.77


def _unpaired_stderr(items: np.ndarray) -> float:
    """lm-eval's stderr of one benchmark mean: sd over items / √n (what the old rule compared with)."""
    return float(items.std(ddof=1) / math.sqrt(items.size))


def _scores(m: int, n: int, effect: float, item_sd: float, noise_sd: float, seed: int) -> np.ndarray:
    """(m × n) item scores: item difficulty shared by every mixture + a mixture shift + per-item noise."""
    rng = np.random.default_rng(seed)
    items = rng.normal(0.5, item_sd, n)
    shift = np.linspace(-effect / 2, effect / 2, m)[:, None]
    return items[None, :] + shift + rng.normal(0.0, noise_sd, (m, n))


def test_small_real_effect_is_found_where_the_unpaired_rule_misses_it():
    x = _scores(m=41, n=250, effect=0.02, item_sd=0.3, noise_sd=0.03, seed=1)
    result = mixture_effect(x, n_perm=2000, seed=0)
    base_se = _unpaired_stderr(x[0])
    assert result.p_value < 0.01  # detected: p = 1/2001
    assert result.spread < UNPAIRED_FACTOR * base_se  # the old rule calls it noise
    assert result.spread_in_se > 5
    assert result.paired_se < base_se / 5  # item effects cancel in a difference
    assert result.n_mixtures == 41 and result.n_items == 250 and result.n_dropped == 0
    assert result.means == pytest.approx(tuple(x.mean(axis=1)))


def test_pure_noise_gives_uniform_p_values_where_the_range_rule_cries_signal():
    """41 mixtures, no effect: rejections at 0.05 stay near 5 %; max−min vs one mean's SE rejects nearly always."""
    p_values, range_rule = [], []
    for seed in range(200):
        x = _scores(m=41, n=60, effect=0.0, item_sd=0.3, noise_sd=0.05, seed=100 + seed)
        p_values.append(mixture_effect(x, n_perm=400, seed=seed).p_value)
        sigma = 0.05 / math.sqrt(60)  # the true SE of one mixture's mean (its noise alone, items fixed)
        range_rule.append(float(np.ptp(x.mean(axis=1))) >= UNPAIRED_FACTOR * sigma)
    p_values = np.array(p_values)
    assert 0.02 <= (p_values <= 0.05).mean() <= 0.09
    assert 0.3 <= np.median(p_values) <= 0.7  # uniform-ish, not piled at either end
    assert np.mean(range_rule) > 0.9  # the range of 41 means is ~4.4 σ: noise passes as signal


def test_paired_se_is_far_below_the_unpaired_one_when_item_effects_dominate():
    x = _scores(m=2, n=400, effect=0.01, item_sd=0.35, noise_sd=0.02, seed=3)
    diff = paired_difference(x[1], x[0], n_boot=2000, seed=0)
    unpaired_diff_se = math.sqrt(_unpaired_stderr(x[0]) ** 2 + _unpaired_stderr(x[1]) ** 2)
    assert diff.standard_error < unpaired_diff_se / 10
    d = x[1] - x[0]
    assert diff.mean_difference == pytest.approx(d.mean())
    assert diff.standard_error == pytest.approx(d.std(ddof=1) / math.sqrt(400))
    assert diff.ci_low < 0.01 < diff.ci_high and diff.ci_low > 0  # covers the truth, excludes 0
    assert diff.ci_high - diff.ci_low == pytest.approx(2 * 1.96 * diff.standard_error, rel=0.15)
    assert diff.n_items == 400 and diff.n_dropped == 0
    # two mixtures: the residual mean square gives the same SE as the per-item differences
    assert mixture_effect(x, n_perm=10).paired_se == pytest.approx(diff.standard_error, rel=1e-9)


def test_accuracy_items_zero_one():
    """0/1 items (acc): paired analysis works on ties; identical mixtures give p = 1 and no spread."""
    rng = np.random.default_rng(0)
    base = (rng.random(200) < 0.6).astype(float)
    same = mixture_effect(np.vstack([base] * 5), n_perm=200)
    assert same.spread == 0 and same.paired_se == 0 and same.spread_in_se == 0 and same.p_value == 1.0
    flipped = base.copy()
    flipped[np.flatnonzero(base == 0)[:20]] = 1.0  # 20 items fixed, none broken: +0.1
    diff = paired_difference(flipped, base)
    assert diff.mean_difference == pytest.approx(0.1) and diff.ci_low > 0
    assert mixture_effect(np.vstack([base, base, flipped]), n_perm=2000).p_value < 0.01


def test_tasks_of_a_capability_are_averaged_with_equal_weight():
    a = _scores(m=6, n=80, effect=0.05, item_sd=0.2, noise_sd=0.02, seed=5)
    b = _scores(m=6, n=30, effect=0.0, item_sd=0.2, noise_sd=0.04, seed=6)
    result = mixture_effect([a, b], n_perm=500)
    assert result.means == pytest.approx(tuple((a.mean(axis=1) + b.mean(axis=1)) / 2))
    single = [mixture_effect(x, n_perm=10).paired_se for x in (a, b)]
    assert result.paired_se == pytest.approx(math.sqrt(single[0] ** 2 + single[1] ** 2) / 2)
    assert result.n_items == 110 and result.p_value < 0.01
    assert mixture_effect([a, b], n_perm=500, seed=7) == mixture_effect([a, b], n_perm=500, seed=7)


def test_missing_items_are_dropped_and_counted():
    x = _scores(m=4, n=50, effect=0.1, item_sd=0.2, noise_sd=0.02, seed=8)
    x[1, 3] = np.nan
    x[2, [3, 10]] = np.nan
    result = mixture_effect(x.tolist(), n_perm=100)  # nested lists work too
    assert result.n_items == 48 and result.n_dropped == 2
    diff = paired_difference(x[0], x[2])
    assert diff.n_items == 48 and diff.n_dropped == 2


def test_too_little_to_compare_is_a_named_error():
    assert issubclass(PairedAnalysisError, MergeMixError)
    with pytest.raises(PairedAnalysisError, match="2 mixtures"):
        mixture_effect(np.ones((1, 10)))
    with pytest.raises(PairedAnalysisError, match="1 items.*9 dropped"):
        mixture_effect(np.vstack([np.r_[np.nan * np.ones(9), 1.0], np.arange(10.0)]))
    with pytest.raises(PairedAnalysisError, match="same mixtures"):
        mixture_effect([np.ones((3, 5)), np.ones((4, 5))])
    with pytest.raises(PairedAnalysisError, match="matrix"):
        mixture_effect([np.ones((2, 3, 4))])
    with pytest.raises(PairedAnalysisError, match="same items"):
        paired_difference([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(PairedAnalysisError, match="have 1"):
        paired_difference([1.0, np.nan, 2.0], [0.0, 1.0, np.nan])
    with pytest.raises(PairedAnalysisError, match="n_perm"):
        mixture_effect(np.ones((2, 5)), n_perm=0)
