"""Lagani et al. (SEBD 2022), Table 1 as data: CIFAR-10 accuracy (%) of a classifier on layer L1..L5 of the
six-layer network after unsupervised pre-training and end-to-end fine-tuning on s % of the labels, mean and
95 % confidence half-width over 5 runs."""

from __future__ import annotations

import pandas as pd

LAYERS = (1, 2, 3, 4, 5)

# (regime %, method) -> ((mean, ci95) for L1..L5)
TABLE1: dict[tuple[int, str], tuple[tuple[float, float], ...]] = {
    (1, "vae"): ((33.54, 0.27), (34.41, 0.84), (29.92, 1.25), (24.91, 0.66), (22.54, 0.60)),
    (1, "softwta"): ((35.47, 0.19), (35.75, 0.65), (36.09, 0.27), (30.57, 0.36), (30.23, 0.37)),
    (1, "hpca"): ((37.01, 0.42), (37.65, 0.19), (41.88, 0.53), (40.06, 0.65), (39.75, 0.50)),
    (5, "vae"): ((46.31, 0.39), (48.21, 0.21), (48.98, 0.34), (36.32, 0.35), (32.75, 0.32)),
    (5, "softwta"): ((48.34, 0.27), (52.90, 0.28), (54.01, 0.24), (49.80, 0.16), (48.35, 0.26)),
    (5, "hpca"): ((48.49, 0.44), (50.14, 0.46), (53.33, 0.52), (52.49, 0.16), (52.20, 0.37)),
    (10, "vae"): ((53.83, 0.26), (56.33, 0.22), (57.85, 0.22), (52.26, 1.08), (45.67, 1.15)),
    (10, "softwta"): ((54.23, 0.18), (59.40, 0.20), (61.27, 0.24), (58.33, 0.35), (58.00, 0.26)),
    (10, "hpca"): ((54.36, 0.32), (56.08, 0.28), (58.46, 0.15), (56.54, 0.23), (57.35, 0.18)),
    (100, "vae"): ((67.53, 0.22), (75.83, 0.31), (80.78, 0.28), (84.27, 0.35), (85.23, 0.26)),
    (100, "softwta"): ((67.37, 0.16), (77.39, 0.04), (81.83, 0.47), (84.42, 0.15), (85.37, 0.03)),
    (100, "hpca"): ((66.76, 0.13), (75.16, 0.20), (79.90, 0.18), (83.55, 0.33), (84.38, 0.22)),
}


def paper_table1() -> pd.DataFrame:
    """Table 1 in long form: one row per (regime, method, layer) with ``paper_mean`` and ``paper_ci95``."""
    rows = [
        {"regime": float(regime), "method": method, "layer": layer, "paper_mean": mean, "paper_ci95": ci}
        for (regime, method), cells in TABLE1.items()
        for layer, (mean, ci) in zip(LAYERS, cells)
    ]
    return pd.DataFrame(rows)


def best_cell(regime: float) -> float:
    """The paper's best accuracy over methods and layers in one regime (the reproduction's target)."""
    cells = [mean for (r, _), row in TABLE1.items() if r == regime for mean, _ in row]
    if not cells:
        raise ValueError(f"the paper reports regimes {sorted({r for r, _ in TABLE1})}, got {regime!r}")
    return max(cells)
