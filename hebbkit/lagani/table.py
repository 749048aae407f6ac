"""Table 1 and the figures of an experiment: intervals, the paper beside ours, verdicts, heatmap, convergence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from ..utils import atomic_path, to_markdown, write_text_atomic
from .paper import TABLE1, best_cell, paper_table1
from .methods import DISPLAY_NAMES, METHODS, hebbian_methods


def confidence_interval(values) -> tuple[float, float]:
    """Mean and 95 % confidence half-width (Student t over the values; NaN for one value)."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan")
    return mean, float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))


def table1(results: pd.DataFrame, metric: str = "val_accuracy", paper: bool = True) -> pd.DataFrame:
    """Table 1's layout: rows (regime, method), columns (L1..L5) × (mean, ci95, n, paper, paper_ci95); the
    paper's columns are empty unless ``paper`` (its values are CIFAR-10's)."""
    if results.empty:
        raise ValueError("no results to tabulate")
    groups = results.groupby(["regime", "method", "layer"])[metric]
    cells = groups.apply(lambda v: pd.Series(confidence_interval(v), index=["mean", "ci95"])).unstack()
    cells["n"] = groups.size()
    published = paper_table1().rename(columns={"paper_mean": "paper"})
    if not paper:
        published = published.iloc[:0]
    cells = cells.reset_index().merge(published, on=["regime", "method", "layer"], how="left")
    cells["layer"] = "L" + cells["layer"].astype(str)
    wide = cells.pivot(index=["regime", "method"], columns="layer", values=["mean", "ci95", "n", "paper", "paper_ci95"])
    wide = wide.swaplevel(0, 1, axis=1).sort_index(axis=1, level=0, sort_remaining=False)
    order = ["mean", "ci95", "n", "paper", "paper_ci95"]
    wide = wide.reindex(columns=pd.MultiIndex.from_product([sorted(cells["layer"].unique()), order]))
    methods = [m for m in METHODS if m in wide.index.get_level_values("method")]
    return wide.reindex(sorted(wide.index, key=lambda i: (i[0], methods.index(i[1]))))


def format_table(table: pd.DataFrame) -> pd.DataFrame:
    """Cells as text: ``ours ± ci (paper p ± c)``."""
    def cell(row, layer):
        mean, ci, paper, paper_ci = (row[(layer, k)] for k in ("mean", "ci95", "paper", "paper_ci95"))
        if pd.isna(mean):
            return ""
        text = f"{mean:.2f}" + ("" if pd.isna(ci) else f" ± {ci:.2f}")
        return text + ("" if pd.isna(paper) else f" (paper {paper:.2f} ± {paper_ci:.2f})")

    layers = list(dict.fromkeys(table.columns.get_level_values(0)))
    text = pd.DataFrame({layer: [cell(row, layer) for _, row in table.iterrows()] for layer in layers},
                        index=table.index)
    text.index = [f"{r:g}% {DISPLAY_NAMES[m]}" for r, m in table.index]
    return text


def best_per_regime(table: pd.DataFrame) -> pd.DataFrame:
    """For each regime, the best (method, layer) cell beside the paper's best cell (the target)."""
    cells = table.xs("mean", axis=1, level=1).stack()  # index: regime, method, layer
    has_paper = table.xs("paper", axis=1, level=1).notna().any().any()
    rows = []
    for regime, group in cells.groupby(level="regime"):
        _, method, layer = group.idxmax()
        published = has_paper and any(r == regime for r, _ in TABLE1)
        paper = best_cell(regime) if published else float("nan")
        rows.append({"regime": regime, "method": method, "layer": layer, "accuracy": group.max(), "paper_best": paper})
    return pd.DataFrame(rows).set_index("regime")


def scratch_differences(table: pd.DataFrame) -> pd.DataFrame:
    """Each pre-trained method's mean accuracy minus the ``supervised`` (from scratch) one, cell by cell, as
    text with a sign; empty without a ``supervised`` row."""
    means = table.xs("mean", axis=1, level=1)
    if "supervised" not in means.index.get_level_values("method"):
        return pd.DataFrame()
    rows = {}
    for (regime, method), row in means.iterrows():
        if method != "supervised" and (regime, "supervised") in means.index:
            diff = row - means.loc[(regime, "supervised")]
            rows[f"{regime:g}% {DISPLAY_NAMES[method]}"] = [
                "" if pd.isna(v) else f"{v:+.2f}" for v in diff]
    return pd.DataFrame.from_dict(rows, orient="index", columns=means.columns)


def claim_verdicts(results: pd.DataFrame) -> pd.DataFrame:
    """The paper's comparisons, regime by regime, on each method's best layer (mean over seeds): Hebbian
    (the best of the registered Hebbian methods present) against the VAE and against training from scratch,
    and HPCA against soft-WTA. One row per (claim, regime) with both accuracies and whether the claim holds here."""
    best = results.groupby(["regime", "method", "layer"])["val_accuracy"].mean().groupby(["regime", "method"]).max()
    best = best.unstack()
    hebbian = [method for method in hebbian_methods() if method in best.columns]
    if hebbian:
        best["hebbian"] = best[hebbian].max(axis=1)
    claims = (("Hebbian beats VAE", "hebbian", "vae"), ("Hebbian beats training from scratch", "hebbian",
              "supervised"), ("HPCA beats soft-WTA", "hpca", "softwta"))
    rows = [{"claim": claim, "regime": f"{regime:g}%", "ours": round(row[a], 2), "against": round(row[b], 2),
             "holds": "yes" if row[a] > row[b] else "no"}
            for claim, a, b in claims if {a, b} <= set(best.columns) for regime, row in best.iterrows()]
    return pd.DataFrame(rows)


def heatmap(table: pd.DataFrame, ax=None, title: str = "validation accuracy"):
    """Seaborn heatmap of the mean accuracies (rows regime × method, columns layers); returns the axes."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    means = table.xs("mean", axis=1, level=1)
    means.index = [f"{r:g}% {DISPLAY_NAMES[m]}" for r, m in means.index]
    if ax is None:
        _, ax = plt.subplots(figsize=(1.2 * len(means.columns) + 2.5, 0.42 * len(means) + 1.2))
    sns.heatmap(means, annot=True, fmt=".1f", cmap="viridis", cbar_kws={"label": "accuracy (%)"}, ax=ax)
    ax.set_xlabel("classifier on layer")
    ax.set_ylabel("")
    ax.set_title(title)
    return ax


def convergence_data(results: pd.DataFrame, hebbian: pd.DataFrame | None = None) -> pd.DataFrame:
    """Long table of accuracy against epochs: ``curve`` is ``sgd`` (per fine-tuning epoch, from the
    records' histories) or ``hebbian`` (``hebbian``: probe accuracy per Hebbian epoch of each block)."""
    rows = [
        {"curve": "sgd", "method": r["method"], "seed": r["seed"], "layer": r["layer"], "regime": r["regime"],
         "epoch": h["epoch"], "val_accuracy": h["val_accuracy"]}
        for r in results.to_dict("records") for h in r["history"] if "val_accuracy" in h
    ]
    frames = [pd.DataFrame(rows)] + ([] if hebbian is None or hebbian.empty else [hebbian])
    return pd.concat(frames, ignore_index=True)


def convergence_plot(data: pd.DataFrame, axes=None):
    """Two panels: accuracy against Hebbian epochs (per block) and against SGD epochs; returns the axes."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    data = data.assign(method=data["method"].map(DISPLAY_NAMES), layer="L" + data["layer"].astype(str))
    hebbian, sgd = data[data["curve"] == "hebbian"], data[data["curve"] == "sgd"]
    order = {"hue_order": sorted(data["layer"].unique()),
             "style_order": [n for n in DISPLAY_NAMES.values() if n in set(data["method"])]}
    if not hebbian.empty:
        sns.lineplot(hebbian, x="epoch", y="val_accuracy", hue="layer", style="method", marker="o", ax=axes[0],
                     legend=False, **order)
        axes[0].set(title=f"Hebbian pre-training (linear probe, {hebbian['regime'].iloc[0]:g}% labels)")
    axes[0].set(xlabel="Hebbian epochs (all blocks learn together)", ylabel="validation accuracy (%)")
    if not sgd.empty:
        regime = sgd["regime"].max()
        sns.lineplot(sgd[sgd["regime"] == regime], x="epoch", y="val_accuracy", hue="layer", style="method",
                     ax=axes[1], **order)
        sns.move_legend(axes[1], "upper left", bbox_to_anchor=(1.02, 1), frameon=False)
        axes[1].set(title=f"Supervised fine-tuning ({regime:g}% labels)")
    axes[1].set(xlabel="SGD epochs", ylabel="validation accuracy (%)")
    return axes


def write_outputs(results, out: Path, figures: Path | None = None) -> pd.DataFrame:
    """Write an experiment's :class:`~.experiment.Results` as table1.csv/.md (the paper's values beside ours for
    CIFAR-10 only), the convergence data and the two figures into ``out`` (figures into ``figures`` if given);
    return Table 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = out if figures is None else figures
    dataset = results.dataset
    table = table1(results.records, paper=results.cifar10)
    with atomic_path(out / "table1.csv") as temp:
        table.to_csv(temp)
    best = best_per_regime(table).round(2).astype(str)
    best.index = [f"{regime:g}%" for regime in best.index]
    best["method"] = best["method"].map(DISPLAY_NAMES)
    summary = f"\nBest cell per regime ({dataset} validation accuracy, %):\n\n" + to_markdown(best)
    scratch = scratch_differences(table)
    if not scratch.empty:
        summary += ("\nEach method minus training from scratch (`supervised`) at the same cut and regime "
                    "(points):\n\n" + to_markdown(scratch))
    write_text_atomic(out / "table1.md", to_markdown(format_table(table)) + summary)
    data = convergence_data(results.records, results.curves)
    with atomic_path(out / "convergence_all.csv") as temp:
        data.to_csv(temp, index=False)
    for name, draw in (("table1_heatmap.png", lambda: heatmap(table, title=f"{dataset} validation accuracy").figure),
                       ("convergence.png", lambda: convergence_plot(data)[0].figure)):
        figure = draw()
        figure.tight_layout()
        with atomic_path(figures / name) as temp:
            figure.savefig(temp, dpi=80, format="png")
        plt.close(figure)
    return table
