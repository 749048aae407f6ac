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


def table1(results: pd.DataFrame, metric: str = "test_accuracy", paper: bool = True) -> pd.DataFrame:
    """Table 1's layout: rows (regime, method), columns (L1..L5) × (mean, ci95, n, paper, paper_ci95); the
    paper's columns are empty unless ``paper`` (its values are CIFAR-10's). ``metric``: as the paper, the test
    accuracy of the best-validation epoch (validation accuracy for data without a test set)."""
    if results.empty:
        raise ValueError("no results to tabulate")
    if metric not in results or results[metric].isna().all():
        metric = "val_accuracy"
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


def accuracy_name(results: pd.DataFrame) -> str:
    """Which accuracy :func:`table1` shows for ``results``: ``"test"``, or ``"validation"`` without a test set."""
    return "test" if "test_accuracy" in results and results["test_accuracy"].notna().any() else "validation"


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


def verdict(mean: float, ci95: float, n: int) -> str:
    """The project's one noise rule: a paired difference supports a claim only when its 95 % interval excludes 0.

    >>> verdict(2.0, 1.5, 5), verdict(-2.0, 1.5, 5), verdict(2.0, 2.5, 5), verdict(2.0, float("nan"), 1)
    ('supported', 'reversed', 'undecided', 'undecided (one seed)')
    """
    if n < 2 or np.isnan(ci95):
        return "undecided (one seed)"
    return "supported" if mean - ci95 > 0 else "reversed" if mean + ci95 < 0 else "undecided"


def paired_difference(a: pd.Series, b: pd.Series) -> dict:
    """``a − b`` paired by seed (same split, same labelled images; seeds present in both): mean, 95 % Student-t
    half-width over the seeds, n and the :func:`verdict`."""
    both = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").dropna()
    if both.empty:
        raise ValueError("no seed has both results: a paired difference needs the same seeds")
    mean, ci95 = confidence_interval(both["a"] - both["b"])
    return {"difference": mean, "ci95": ci95, "n": len(both), "verdict": verdict(mean, ci95, len(both))}


def best_layers(results: pd.DataFrame, select: str = "val_accuracy") -> pd.Series:
    """Each (regime, method)'s best cut by mean ``select`` over seeds (chosen on validation, never on test)."""
    return results.groupby(["regime", "method", "layer"])[select].mean().groupby(["regime", "method"]).idxmax().map(
        lambda index: index[2])


def claim_verdicts(results: pd.DataFrame, metric: str = "test_accuracy", select: str = "val_accuracy") -> pd.DataFrame:
    """The paper's comparisons, regime by regime, each method on its best cut (picked by mean ``select``):
    Hebbian (the best registered Hebbian method present) against the VAE and against training from scratch, and
    HPCA against soft-WTA. The difference in ``metric`` is paired by seed and judged by :func:`verdict`.
    One row per (claim, regime): the two cells, their means, the difference ± its 95 % half-width, n, verdict."""
    if metric not in results:
        metric = "val_accuracy"  # a dataset without a test set
    layers = best_layers(results, select)
    score = results.groupby(["regime", "method", "layer"])[select].mean()
    values = results.set_index(["regime", "method", "layer", "seed"])[metric].sort_index()
    hebbian = [method for method in hebbian_methods() if method in set(results["method"])]
    claims = (("Hebbian beats VAE", "hebbian", "vae"), ("Hebbian beats training from scratch", "hebbian",
              "supervised"), ("HPCA beats soft-WTA", "hpca", "softwta"))
    rows = []
    for regime in sorted(results["regime"].unique()):
        present = {method for r, method in layers.index if r == regime}
        best = {method: layers[(regime, method)] for method in present}
        if hebbian and present & set(hebbian):
            best["hebbian"] = max((m for m in hebbian if m in present), key=lambda m: score[(regime, m, best[m])])
        for claim, a, b in claims:
            if a not in best or b not in best:
                continue
            cells = [(best[a], best[best[a]]) if a == "hebbian" else (a, best[a]), (b, best[b])]
            series = [values.loc[(regime, method, layer)] for method, layer in cells]
            rows.append({"claim": claim, "regime": f"{regime:g}%",
                         "ours_cell": f"{DISPLAY_NAMES[cells[0][0]]} L{cells[0][1]}",
                         "against_cell": f"{DISPLAY_NAMES[cells[1][0]]} L{cells[1][1]}",
                         "ours": round(float(series[0].mean()), 2), "against": round(float(series[1].mean()), 2),
                         **paired_difference(*series)})
    return pd.DataFrame(rows).round({"difference": 2, "ci95": 2})


def best_layer_verdicts(results: pd.DataFrame, metric: str = "test_accuracy",
                        select: str = "val_accuracy") -> pd.DataFrame:
    """For each (regime, method): our best cut (by ``select``), the paper's best cut, and whether our best cut
    beats the runner-up in ``metric`` (paired by seed, :func:`verdict`)."""
    if metric not in results:
        metric = "val_accuracy"
    score = results.groupby(["regime", "method", "layer"])[select].mean()
    values = results.set_index(["regime", "method", "layer", "seed"])[metric].sort_index()
    published = paper_table1().set_index(["regime", "method", "layer"])["paper_mean"]
    rows = []
    for (regime, method), group in score.groupby(["regime", "method"]):
        if len(group) < 2:
            continue
        (_, _, first), (_, _, second) = group.sort_values(ascending=False).index[:2]
        paper = published.xs((regime, method), level=["regime", "method"]) if (regime, method) in TABLE1 else None
        rows.append({"regime": f"{regime:g}%", "method": DISPLAY_NAMES[method], "best": f"L{first}",
                     "runner_up": f"L{second}", "paper_best": "" if paper is None else f"L{paper.idxmax()}",
                     **paired_difference(values.loc[(regime, method, first)], values.loc[(regime, method, second)])})
    return pd.DataFrame(rows).round({"difference": 2, "ci95": 2})


def shortfalls(table: pd.DataFrame) -> pd.DataFrame:
    """The cells of :func:`table1` below the paper beyond the noise: ours − paper < −√(ci² + paper_ci²) (a missing
    interval of ours, one seed, counts as 0). One row per cell, largest gap first."""
    rows = []
    for (regime, method), row in table.iterrows():
        for layer in dict.fromkeys(table.columns.get_level_values(0)):
            mean, ci, paper, paper_ci = (row[(layer, k)] for k in ("mean", "ci95", "paper", "paper_ci95"))
            if pd.isna(mean) or pd.isna(paper):
                continue
            margin = float(np.hypot(0.0 if pd.isna(ci) else ci, paper_ci))
            if mean - paper < -margin:
                rows.append({"regime": f"{regime:g}%", "method": DISPLAY_NAMES[method], "layer": layer,
                             "ours": round(mean, 2), "paper": paper, "gap": round(mean - paper, 2),
                             "noise": round(margin, 2)})
    columns = ["regime", "method", "layer", "ours", "paper", "gap", "noise"]
    return pd.DataFrame(rows, columns=columns).sort_values("gap", kind="stable").reset_index(drop=True)


def heatmap(table: pd.DataFrame, ax=None, title: str = "test accuracy"):
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
    best = best_per_regime(table).round(2).fillna("").astype(str)
    best.index = [f"{regime:g}%" for regime in best.index]
    best["method"] = best["method"].map(DISPLAY_NAMES)
    accuracy = accuracy_name(results.records)
    summary = f"\nBest cell per regime ({dataset} {accuracy} accuracy, %):\n\n" + to_markdown(best)
    scratch = scratch_differences(table)
    if not scratch.empty:
        summary += ("\nEach method minus training from scratch (`supervised`) at the same cut and regime "
                    "(points):\n\n" + to_markdown(scratch))
    verdicts = claim_verdicts(results.records)
    if not verdicts.empty:
        text = [f"{d:+.2f}" + ("" if np.isnan(c) else f" ± {c:.2f}") for d, c in zip(verdicts["difference"],
                                                                                      verdicts.pop("ci95"))]
        verdicts["difference"] = text
        summary += ("\nThe paper's claims, each method on its best cut (picked on validation), the difference paired "
                    "by seed with its 95 % interval; supported only when the interval excludes 0:\n\n"
                    + to_markdown(verdicts.set_index("claim")))
    short = shortfalls(table)
    if not short.empty:
        summary += ("\nCells below the paper beyond the noise (ours − paper < −√(ci² + paper ci²); one seed has no "
                    "ci):\n\n" + to_markdown(short.set_index("regime")))
    write_text_atomic(out / "table1.md", to_markdown(format_table(table)) + summary)
    data = convergence_data(results.records, results.curves)
    with atomic_path(out / "convergence_all.csv") as temp:
        data.to_csv(temp, index=False)
    for name, draw in (("table1_heatmap.png", lambda: heatmap(table, title=f"{dataset} {accuracy} accuracy").figure),
                       ("convergence.png", lambda: convergence_plot(data)[0].figure)):
        figure = draw()
        figure.tight_layout()
        with atomic_path(figures / name) as temp:
            figure.savefig(temp, dpi=80, format="png")
        plt.close(figure)
    return table
