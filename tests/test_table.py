"""Table 1's statistics: one noise rule (a paired difference across seeds, supported only when its 95 % interval
excludes zero), checked against scipy's paired t interval and on tables built so that pairing matters."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hebbkit.lagani.table import (best_layer_verdicts, claim_verdicts, paired_difference, shortfalls, table1,
                                  verdict)


def _runs(cells: dict[tuple[str, int], list[float]], regime: float = 1.0, val_shift: float = 0.0) -> pd.DataFrame:
    """One row per (method, layer, seed): test accuracies as given, validation = test + ``val_shift``."""
    return pd.DataFrame([{"regime": regime, "method": method, "layer": layer, "seed": seed, "test_accuracy": value,
                          "val_accuracy": value + val_shift}
                         for (method, layer), values in cells.items() for seed, value in enumerate(values)])


def test_paired_difference_is_scipys_paired_t_interval():
    a = pd.Series([50.1, 52.3, 49.8, 51.0, 50.6], index=[3, 0, 1, 4, 2])  # seeds in any order
    b = pd.Series([48.0, 49.9, 50.2, 47.7, 48.8], index=[0, 1, 2, 3, 4])
    result = paired_difference(a, b)
    d = a.sort_index().to_numpy() - b.to_numpy()
    low, high = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert result["n"] == 5 and result["difference"] == pytest.approx(d.mean())
    assert result["ci95"] == pytest.approx((high - low) / 2)
    assert result["verdict"] == ("supported" if low > 0 else "reversed" if high < 0 else "undecided")


def test_only_seeds_present_in_both_are_paired_and_none_is_an_error():
    assert paired_difference(pd.Series([1.0, 2.0, 3.0]), pd.Series([0.0, 0.5], index=[1, 2]))["n"] == 2
    with pytest.raises(ValueError, match="same seeds"):
        paired_difference(pd.Series([1.0], index=[0]), pd.Series([1.0], index=[1]))


def test_the_noise_rule():
    assert verdict(0.5, 0.4, 5) == "supported" and verdict(-0.5, 0.4, 5) == "reversed"
    assert verdict(0.5, 0.6, 5) == "undecided" and verdict(9.0, float("nan"), 1) == "undecided (one seed)"


def test_pairing_by_seed_decides_what_the_means_alone_cannot():
    """Seeds move both methods together (a shared split): the paired difference is tight although each method's
    own interval is wide, so the claim is supported; shuffle the pairing and it is not."""
    seed_effect = np.array([-6.0, 3.0, -1.0, 5.0, -2.0])
    jitter = np.array([0.1, -0.1, 0.05, 0.0, -0.05])
    runs = _runs({("hpca", 2): list(50 + seed_effect + 1.0), ("softwta", 1): list(50 + seed_effect + jitter),
                  ("vae", 1): list(50 + seed_effect - 4.0), ("supervised", 3): list(50 + seed_effect)})
    verdicts = claim_verdicts(runs).set_index("claim")
    row = verdicts.loc["HPCA beats soft-WTA"]
    assert row["verdict"] == "supported" and row["difference"] == pytest.approx(1.0, abs=0.01) and row["n"] == 5
    assert row["ours_cell"] == "HPCA L2" and row["against_cell"] == "softWTA L1"
    assert verdicts.loc["Hebbian beats VAE", "ours_cell"] == "HPCA L2"  # the best Hebbian method by validation
    assert verdicts.loc["Hebbian beats training from scratch", "verdict"] == "supported"
    shuffled = runs.copy()
    mask = shuffled["method"] == "softwta"
    shuffled.loc[mask, "seed"] = shuffled.loc[mask, "seed"].to_numpy()[::-1]
    assert claim_verdicts(shuffled).set_index("claim").loc["HPCA beats soft-WTA", "verdict"] == "undecided"


def test_best_cuts_are_chosen_on_validation_and_scored_on_test():
    runs = _runs({("hpca", 1): [40.0, 41.0], ("hpca", 3): [44.0, 45.0], ("vae", 1): [30.0, 31.0]})
    runs.loc[(runs["method"] == "hpca") & (runs["layer"] == 1), "val_accuracy"] = 99.0  # best on validation
    verdicts = claim_verdicts(runs).set_index("claim")
    assert verdicts.loc["Hebbian beats VAE", ["ours_cell", "ours", "difference"]].tolist() == ["HPCA L1", 40.5, 10.0]
    layers = best_layer_verdicts(runs).set_index("method")
    assert layers.loc["HPCA", ["best", "runner_up", "paper_best"]].tolist() == ["L1", "L3", "L3"]
    assert layers.loc["HPCA", ["difference", "verdict"]].tolist() == [-4.0, "reversed"]  # on test, L3 is better


def test_one_seed_gives_no_verdict_and_the_table_shows_test_accuracy():
    runs = _runs({("hpca", 1): [40.0], ("vae", 1): [30.0]}, val_shift=5.0)
    assert set(claim_verdicts(runs)["verdict"]) == {"undecided (one seed)"}
    assert table1(runs).loc[(1.0, "hpca"), ("L1", "mean")] == 40.0  # test, not validation (45)
    assert table1(runs.drop(columns="test_accuracy")).loc[(1.0, "hpca"), ("L1", "mean")] == 45.0


def test_shortfalls_are_computed_from_the_table_beyond_the_noise():
    runs = _runs({("hpca", 1): [30.0, 30.5, 29.5], ("hpca", 3): [41.8, 41.9, 42.0],
                  ("softwta", 1): [35.6, 35.4, 35.5]})
    short = shortfalls(table1(runs))
    assert short[["method", "layer"]].values.tolist() == [["HPCA", "L1"]]  # 30 against the paper's 37.01 ± 0.42
    assert short.loc[0, "gap"] == pytest.approx(30.0 - 37.01)
