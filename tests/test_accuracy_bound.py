"""The certified accuracy bound: coverage, zero flips, the smallest set, degenerate data, exact options."""

from __future__ import annotations

import math

import numpy as np
import pytest

from splitc.calibration import confidence as conf
from splitc.calibration.calibrate import Table, degenerate, drop_entry
from splitc.partition.select import Option, within_bound


def _certifies(bound: float, max_drop: float) -> bool:
    return bound <= max_drop + 1e-12


@pytest.mark.parametrize("n,p,max_drop", [(300, 0.02, 0.01), (1000, 0.013, 0.01), (60, 0.08, 0.05),
                                          (2000, 0.0125, 0.01)])
def test_agreement_bound_coverage(n: int, p: float, max_drop: float) -> None:
    """Flips at a true rate p above max_drop: the bound passes in at most ~5% of simulated sets."""
    rng = np.random.default_rng(n)
    trials = 4000
    flips = rng.binomial(n, p, size=trials)
    passed = sum(_certifies(conf.agreement_bound(int(k), n, 0.95), max_drop) for k in flips)
    assert passed / trials <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / trials)


@pytest.mark.parametrize("n,p_b,p_c,max_drop", [(400, 0.03, 0.015, 0.01), (1000, 0.02, 0.005, 0.01),
                                                (200, 0.06, 0.0, 0.05)])
def test_labelled_paired_bound_coverage(n: int, p_b: float, p_c: float, max_drop: float) -> None:
    """Labelled top-1: true drop p_b - p_c > max_drop is certified in at most ~5% of simulated sets."""
    assert p_b - p_c > max_drop
    rng = np.random.default_rng(n + 7)
    trials = 4000
    cells = rng.multinomial(n, [p_b, p_c, 1 - p_b - p_c], size=trials)
    passed = sum(_certifies(conf.paired_bound(int(b), int(c), n, 0.95), max_drop) for b, c, _ in cells)
    assert passed / trials <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / trials)


def test_the_bound_goes_through_drop_entry_and_the_selection() -> None:
    """Simulated per-sample qualities as calibration scores them, checked by ``within_bound`` as joint does."""
    rng = np.random.default_rng(3)
    n, p, max_drop, trials = 500, 0.02, 0.01, 2000
    passed = 0
    for _ in range(trials):
        quality = (rng.random(n) >= p).astype(np.float64)  # 1 = agrees with the float model
        entry = drop_entry("top1", np.ones(n), quality, labelled=False)
        passed += within_bound(entry["drop"], entry["drop_se"], max_drop)
    assert passed / trials <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / trials)


@pytest.mark.parametrize("labelled", [False, True])
def test_zero_flips_never_certify_zero(labelled: bool) -> None:
    for n in (1, 10, 32, 359, 10_000):
        entry = drop_entry("top1", np.ones(n), np.ones(n), labelled)
        assert entry["drop"] == 0.0
        assert entry["bound"] > 0.0
        assert entry["bound"] == pytest.approx(conf.smallest_bound("top1", n, labelled, 0.95))
    # about 3/n at 95%
    assert conf.agreement_bound(0, 1000, 0.95) == pytest.approx(1 - 0.05 ** (1 / 1000))
    assert 2.9 / 1000 < conf.agreement_bound(0, 1000, 0.95) < 3.1 / 1000


def test_clopper_pearson_matches_the_beta_quantile() -> None:
    from scipy.stats import beta, binom

    for k, n in [(1, 20), (5, 100), (17, 359)]:
        upper = conf.cp_upper(k, n, 0.05)
        assert upper == pytest.approx(beta.ppf(0.95, k + 1, n - k))
        assert binom.cdf(k, n, upper) == pytest.approx(0.05, rel=1e-6)  # the exact tail at the limit
        lower = conf.cp_lower(k, n, 0.05)
        assert binom.sf(k - 1, n, lower) == pytest.approx(0.05, rel=1e-6)


def test_discordant_pairs_in_the_splits_favour_count() -> None:
    n = 400
    assert conf.paired_bound(4, 12, n, 0.95) < conf.paired_bound(4, 0, n, 0.95)
    assert conf.paired_bound(0, 0, n, 0.95) > 0


def test_smallest_set_that_can_certify() -> None:
    for labelled in (False, True):
        for max_drop in (0.001, 0.005, 0.01, 0.05):
            n = conf.samples_needed("top1", max_drop, labelled, 0.95)
            assert conf.smallest_bound("top1", n, labelled, 0.95) <= max_drop
            assert conf.smallest_bound("top1", n - 1, labelled, 0.95) > max_drop
    assert conf.samples_needed("top1", 0.01, False, 0.95) == 299
    assert conf.samples_needed("top1", 0.0, False, 0.95) is None


def test_too_small_set_names_the_size_that_could() -> None:
    table = Table("top1", "k", 1.0, samples=64, labelled=False, confidence=0.95)
    line = table.too_small(0.01)
    assert line is not None and "64 calibration samples" in line and "299 samples could" in line
    assert "\n" not in line
    assert Table("top1", "k", 1.0, samples=400, labelled=False).too_small(0.01) is None
    assert Table("rel-l2", "k", 0.0, samples=5).too_small(0.01) is None


def test_degenerate_calibration_is_named() -> None:
    same_class = [np.eye(10)[3] * (1 + i) for i in range(8)]
    (note,) = degenerate("top1", same_class)
    assert "predicts class 3 for all 8 samples" in note
    constant = [np.ones(5)] * 6
    (note,) = degenerate("rel-l2", constant)
    assert "same output for all 6 samples" in note
    assert degenerate("top1", [np.eye(10)[i % 10] for i in range(20)]) == []


def test_rel_l2_bound_is_above_the_mean() -> None:
    rng = np.random.default_rng(0)
    errors = rng.gamma(2.0, 0.005, size=100)
    entry = drop_entry("rel-l2", np.zeros(100), -errors, labelled=False)
    assert entry["drop"] == pytest.approx(errors.mean())
    assert entry["bound"] > entry["drop"]


def test_rel_l2_bound_coverage_on_a_skewed_error() -> None:
    """The one-sided t bound (approximate): near its nominal level on gamma-distributed errors."""
    rng = np.random.default_rng(1)
    n, trials, mean = 200, 3000, 0.01
    covered = sum(conf.mean_bound(rng.gamma(2.0, mean / 2.0, size=n), 0.95) >= mean for _ in range(trials))
    assert covered / trials >= 0.93


def test_option_bound_is_drop_plus_margin() -> None:
    option = Option(("t",), 4, 1.0, 1.0, 100.0, 0.0, 0.002, "split", 0.006)
    assert option.bound == pytest.approx(0.008)
    assert within_bound(option.drop, option.drop_se, 0.008)
    assert not within_bound(option.drop, option.drop_se, 0.0079)


def test_confidence_level_is_scoped() -> None:
    assert conf.current() == 0.95
    with conf.using(0.99):
        assert conf.current() == 0.99
        assert drop_entry("top1", np.ones(100), np.ones(100), False)["bound"] == pytest.approx(1 - 0.01 ** 0.01)
    assert conf.current() == 0.95
    from splitc.errors import SplitcError

    with pytest.raises(SplitcError, match="confidence"):
        with conf.using(1.0):
            pass
