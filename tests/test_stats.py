"""The report's statistics: Wilson intervals, spreads, histogram distances."""
import numpy as np
import pytest

from benchmarks import stats
from benchmarks.quality_part import pool_seeds


@pytest.mark.parametrize("k, n, lo, hi", [(0, 10, 0.0, 0.2775), (5, 10, 0.2366, 0.7634), (10, 10, 0.7225, 1.0),
                                          (83, 100, 0.7445, 0.8911)])
def test_wilson_matches_published_values(k, n, lo, hi):
    got = stats.wilson(k, n)
    assert got == pytest.approx((lo, hi), abs=5e-4)


def test_wilson_covers_the_truth_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    for p, n in ((0.03, 200), (0.5, 40), (0.9, 1000)):
        hits = [stats.wilson(k, n)[0] <= p <= stats.wilson(k, n)[1] for k in rng.binomial(n, p, size=2000)]
        assert 0.92 <= np.mean(hits) <= 0.98, (p, n)


def test_proportion_spread_and_distances():
    assert stats.proportion(0, 0)["value"] is None
    s = stats.spread([4.0, 1.0, 3.0, 2.0, 100.0])
    assert (s["median"], s["min"], s["max"], s["n"]) == (3.0, 1.0, 100.0, 5) and s["q1"] == 2.0 and s["q3"] == 4.0
    h = stats.histogram([0, 1, 1, 7, 99], bins=4)
    assert h == [0.2, 0.4, 0.0, 0.4]
    assert stats.total_variation(h, h) == 0 and stats.total_variation([1, 0], [0, 1]) == 1


def test_seeds_pool_into_one_row_with_pooled_strata():
    def row(seed, valid, n, strata):
        return {"model": "m", "config": "c", "seed": seed, "seconds": 1.0, "mean_passes": 2.0, "mean_words": 3.0 + seed,
                "words": 30, "valid_words": 20, "validity": stats.proportion(valid, n),
                "validity_by_length": {s: stats.proportion(*vn) for s, vn in strata.items()},
                "length_histogram": [1.0, 0.0], "reference_length_histogram": [0.5, 0.5], "length_tv": 0.5}

    pooled, = pool_seeds([row(0, 8, 10, {"0-2": (8, 10), "3-5": (0, 0)}), row(1, 5, 10, {"0-2": (3, 6), "3-5": (2, 4)})])
    assert pooled["seeds"] == 2 and pooled["validity"]["n"] == 20 and pooled["validity"]["value"] == 13 / 20
    assert pooled["validity_by_length"]["0-2"]["n"] == 16 and pooled["validity_by_length"]["3-5"]["value"] == 0.5
    assert sum(s["n"] for s in pooled["validity_by_length"].values()) == pooled["validity"]["n"]
    assert pooled["mean_words"] == 3.5 and pooled["validity_per_seed"] == [0.8, 0.5]
