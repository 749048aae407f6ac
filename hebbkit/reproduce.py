"""Reproduce Lagani's Table 1: pre-train, fine-tune on s % of the labels, evaluate, tabulate, plot.

``run_experiment`` loops over seeds × methods × layers × regimes. Pre-trained weights are cached per
(method, seed, settings hash); every finished (method, regime, layer, seed) is appended atomically to
``results.jsonl`` in the output folder, and a re-run skips what is there, so an interrupted run resumes.
``table1`` turns the records into Table 1's layout (mean ± 95 % CI over seeds, Student t) beside the
paper's values; ``heatmap`` and ``convergence_plot`` draw the figures. ``hebbkit reproduce`` does it all.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import Tensor

from . import lagani
from .data import CIFAR10, NUM_TRAIN, NUM_VAL, ImageSet, check_percent, check_split, load_cifar10
from .lagani import FinetuneConfig, PretrainConfig, check_layer, check_method
from .paper import TABLE1, best_cell, paper_table1
from .utils import append_record, atomic_path, check_positive, lookup, read_records, resolve_device, write_text_atomic

RESULTS_FILE = "results.jsonl"
CONVERGENCE_FILE = "convergence.csv"
DEFAULT_CACHE = Path.home() / ".cache" / "hebbkit" / "weights"
# the Hebbian-convergence probe: a dropout + linear classifier on the fixed features of a partly trained net
PROBE_HEAD = FinetuneConfig(epochs=10, decay_from=5, lr=3e-4, frozen=True)


@dataclass(frozen=True)
class Preset:
    """One experiment's settings: what to run (methods × regimes × layers × seeds) and how.

    ``select_val``: validation images scored after every fine-tuning epoch to keep the best epoch (and to
    draw the SGD convergence curve); ``None`` = all, as the reference does. ``test_images``: the first test
    images scored (``None`` = all). ``probe_regime`` / ``probe_val``:
    labelled percentage and validation images of the Hebbian-convergence probe (a linear head on frozen
    features, ``PROBE_HEAD``; ``probe_val=0`` turns it off).
    """

    name: str
    methods: tuple[str, ...]
    regimes: tuple[float, ...]
    layers: tuple[int, ...]
    seeds: int
    pretrain: PretrainConfig
    finetune: FinetuneConfig
    width: float = 1.0
    select_val: int | None = None
    test_images: int | None = None
    probe_regime: float = 10.0
    probe_val: int = 2000

    def __post_init__(self) -> None:
        for method in self.methods:
            check_method(method)
        for regime in self.regimes:
            check_percent(regime)
        for layer in self.layers:
            check_layer(layer)
        check_positive("seeds", self.seeds, integer=True)
        for name in ("select_val", "test_images"):
            if getattr(self, name) is not None:
                check_positive(name, getattr(self, name), integer=True)
        if not (self.methods and self.regimes and self.layers):
            raise ValueError("methods, regimes and layers must each name at least one entry")


ALL_METHODS = ("hpca", "softwta", "vae", "supervised")
PRESETS: dict[str, Preset] = {
    # seconds, for tests and demos (synthetic data, narrow network)
    "smoke": Preset(
        "smoke", ALL_METHODS, (10.0, 50.0), (1, 3), 1,
        PretrainConfig(epochs=1, batch_size=32, lr=0.05, vae_epochs=1, vae_batch_size=32, statistics_images=256),
        FinetuneConfig(epochs=2, batch_size=32, decay_from=1),
        width=0.125, probe_regime=50.0, probe_val=40,
    ),
    # CPU-sized (about 1 h on 2 cores). Departs from the reference in the same way for every method: the network
    # at half width (48, 64, 96, 128 channels, 2048 units: a quarter of the arithmetic); pre-training 1 epoch
    # instead of 20 (Hebbian and VAE alike) at 10x the reference's rate (Hebbian 0.1, VAE 1e-2); plain BN
    # instead of the Hebbian nets' modified BN (with it, soft-WTA's few winning units carry nearly all the
    # variance of blocks 3-5 and a short fine-tuning cannot fit even the labelled images); fine-tuning 8 epochs
    # instead of 20 (halved from epoch 4, at least 200 steps for the small subsets) at lr 4e-3 instead of 1e-3,
    # with flips and crops of the labelled images; the best epoch is picked on 1,000 validation images instead
    # of all 10,000, and the first 2,000 test images are scored.
    "quick": Preset(
        "quick", ALL_METHODS, (1.0, 5.0, 10.0), (1, 2, 3, 4, 5), 1,
        PretrainConfig(epochs=1, lr=0.1, vae_epochs=1, vae_lr=1e-3, checkpoints_per_epoch=4, modified_bn=False),
        FinetuneConfig(epochs=8, decay_from=4, lr=4e-3, augment=True, min_steps=200),
        width=0.5, select_val=1000, test_images=2000, probe_regime=2.0, probe_val=1000,
    ),
    # the reference protocol (GPU-sized): 20 epochs of joint Hebbian training (lr 1e-2, batch 64, best epoch by
    # the Hebbian classifier), 20 VAE epochs, 20 fine-tuning epochs at lr 1e-3 (Nesterov, halved from epoch 10,
    # best validation epoch), 5 data seeds, regimes 1 / 5 / 10 / 100 %
    "paper": Preset(
        "paper", ALL_METHODS, (1.0, 5.0, 10.0, 100.0), (1, 2, 3, 4, 5), 5,
        PretrainConfig(checkpoints_per_epoch=4),
        FinetuneConfig(),
    ),
}


def get_preset(preset: str | Preset) -> Preset:
    """A preset by name (``smoke``, ``quick``, ``paper``), or the given one."""
    return lookup("preset", preset, PRESETS)


def settings_hash(*parts) -> str:
    """A short stable hash of dataclasses / JSON-able values."""
    plain = [asdict(p) if hasattr(p, "__dataclass_fields__") else p for p in parts]
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:12]


def split(data: CIFAR10, seed: int) -> tuple[ImageSet, ImageSet]:
    """The reference's per-seed split: the training images shuffled by ``seed``, then the first ones are the
    pool (pre-training, and the labelled subsets are its first images) and the last ``NUM_VAL`` validate
    (CIFAR-10: 40,000 / 10,000); other sizes (synthetic data) validate on their last 20 %."""
    total = len(data.train)
    num_val = NUM_VAL if total == NUM_TRAIN + NUM_VAL else max(1, total // 5)
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    pool, val = data.train.subset(order[:-num_val]), data.train.subset(order[-num_val:])
    check_split(pool, val)
    return pool, val


def labelled_count(regime: float, pool: int) -> int:
    """How many of the pool's first images are labelled in ``regime`` % (at least one)."""
    return max(1, round(check_percent(regime) / 100 * pool))


def _fingerprint(images: ImageSet) -> str:
    digest = hashlib.sha256(images.images[:: max(1, len(images) // 64)].numpy().tobytes())
    digest.update(images.labels.numpy().tobytes())
    return f"{len(images)}-{digest.hexdigest()[:12]}"


# ------------------------------------------------------------------------------------ experiment


def pretrained(
    method: str,
    train: ImageSet,
    val: ImageSet,
    preset: Preset,
    seed: int,
    *,
    cache: Path | None,
    device: torch.device,
    progress: bool | None,
) -> tuple[lagani.LaganiNet, list[dict]]:
    """The pre-trained network of (method, seed) and its Hebbian convergence rows, from ``cache`` if there."""
    probe = None
    if preset.probe_val and lagani.make_method(method).net.hebbian:  # the Hebbian methods' networks
        probe = (train.subset(slice(0, labelled_count(preset.probe_regime, len(train)))),
                 val.subset(slice(0, preset.probe_val)))
    key = settings_hash(method, seed, preset.pretrain, preset.width, _fingerprint(train), _fingerprint(val),
                        None if probe is None else [preset.probe_regime, preset.probe_val], PRETRAIN_VERSION)
    path = None if cache is None else Path(cache) / f"{method}-seed{seed}-{key}.pt"
    if path is not None and path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        net = lagani.LaganiNet(lagani.net_spec(method, preset.pretrain), width=preset.width)
        net.load_state_dict(saved["state"])
        return net.to(device, memory_format=lagani.FAST_LAYOUT).eval(), saved["convergence"]
    rows: list[dict] = []
    checkpoint = None if probe is None else _probe_checkpoint(method, seed, probe, preset, device, rows)
    start = time.perf_counter()
    net = lagani.pretrain(method, train, preset.pretrain, seed=seed, width=preset.width, val=val, device=device,
                          progress=progress, checkpoint=checkpoint)
    seconds = time.perf_counter() - start
    for row in rows:
        row["pretrain_seconds"] = seconds
    if path is not None:
        with atomic_path(path) as temp:
            torch.save({"state": net.state_dict(), "convergence": rows}, temp)
    return net, rows


PRETRAIN_VERSION = 2  # bump when pre-training changes, so that cached weights are not reused
PROBE_STATISTICS = 2048  # images whose batch statistics a convergence probe sets in BN before it reads features


def _probe_checkpoint(method, seed, probe, preset, device, rows):
    labelled, val = probe
    layers = tuple(sorted(preset.layers))

    def checkpoint(net: lagani.LaganiNet, epochs: float) -> None:
        lagani.settle_statistics(net, labelled.subset(slice(0, PROBE_STATISTICS)), device=device)
        train_stream = lagani.layer_features(net, labelled, layers, device=device)
        val_stream = lagani.layer_features(net, val, layers, device=device)
        for (layer, train_x), (_, val_x) in zip(train_stream, val_stream):
            head, _ = lagani.train_head(train_x, labelled.labels, PROBE_HEAD, seed=seed, device=device,
                                        progress=False)
            rows.append({"curve": "hebbian", "method": method, "seed": seed, "layer": layer, "epoch": epochs,
                         "regime": preset.probe_regime,
                         "val_accuracy": lagani.accuracy(head, val_x, val.labels, device=device)})

    return checkpoint


def run_experiment(
    preset: str | Preset = "quick",
    *,
    data: CIFAR10 | str | Path | None = None,
    methods: tuple[str, ...] | None = None,
    regimes: tuple[float, ...] | None = None,
    layers: tuple[int, ...] | None = None,
    seeds: int | None = None,
    out: str | Path | None = None,
    cache: str | Path | None = DEFAULT_CACHE,
    device: str | torch.device = "auto",
    progress: bool | None = None,
) -> pd.DataFrame:
    """Run (or resume) an experiment and return one row per (method, regime, layer, seed); the Hebbian
    convergence rows are in ``results.attrs["hebbian_convergence"]``.

    ``data``: a :class:`CIFAR10`, or a path for :func:`load_cifar10` (``None``: ``$HEBBKIT_DATA`` or
    torchvision). ``methods``/``regimes``/``layers``/``seeds`` override the preset's. With ``out``, records
    are appended to ``out/results.jsonl`` (finished ones are skipped on a re-run) and Hebbian-convergence
    rows to ``out/convergence.csv``; ``cache=None`` disables the weight cache.
    """
    base = get_preset(preset)
    chosen = replace(
        base,
        methods=tuple(dict.fromkeys(methods)) if methods else base.methods,
        regimes=tuple(dict.fromkeys(float(check_percent(r)) for r in regimes)) if regimes else base.regimes,
        layers=tuple(dict.fromkeys(layers)) if layers else base.layers,
        seeds=base.seeds if seeds is None else seeds,
    )
    device = resolve_device(device)
    data = data if isinstance(data, CIFAR10) else load_cifar10(data)
    records_path = None if out is None else Path(out) / RESULTS_FILE
    finetune_key = settings_hash(chosen.finetune, chosen.pretrain, chosen.width, chosen.select_val,
                                 chosen.test_images, _fingerprint(data.train), PRETRAIN_VERSION)
    done = {_key(r) for r in read_records(records_path) if r.get("settings") == finetune_key} if records_path else set()
    records: list[dict] = []
    hebbian: list[dict] = []
    for seed in range(chosen.seeds):
        train, val = split(data, seed)
        for method in chosen.methods:
            todo = [(regime, layer) for layer in chosen.layers for regime in chosen.regimes
                    if (method, regime, layer, seed) not in done]
            if not todo:
                continue
            net, rows = pretrained(method, train, val, chosen, seed, cache=None if cache is None else Path(cache),
                                   device=device, progress=progress)
            hebbian += rows
            if out is not None and rows:  # saved at once, so that an interruption keeps them
                _merge_convergence(Path(out) / CONVERGENCE_FILE, pd.DataFrame(rows))
            for regime, layer in todo:
                record = _finetune_one(net, method, seed, regime, layer, train, val, data.test, chosen, device,
                                       progress)
                record["settings"], record["preset"] = finetune_key, chosen.name
                records.append(record)
                if records_path is not None:
                    append_record(records_path, record)
    if records_path is not None:
        wanted = {(m, r, l, s) for m in chosen.methods for r in chosen.regimes for l in chosen.layers
                  for s in range(chosen.seeds)}
        records = [r for r in read_records(records_path) if r.get("settings") == finetune_key and _key(r) in wanted]
        if (Path(out) / CONVERGENCE_FILE).exists():
            hebbian = pd.read_csv(Path(out) / CONVERGENCE_FILE).to_dict("records")
    results = pd.DataFrame(records)
    results.attrs["hebbian_convergence"] = pd.DataFrame(hebbian)
    return results


def _key(record: dict) -> tuple:
    return (record["method"], float(record["regime"]), int(record["layer"]), int(record["seed"]))


def _finetune_one(net, method, seed, regime, layer, train, val, test, preset, device, progress) -> dict:
    """Fine-tune layer ``layer`` on the first ``regime`` % of the pool, keep the best epoch on ``select_val``
    validation images, score it on all. Only the classifier learns for a method that does not train its trunk,
    and for a pre-trained one under a frozen preset (``supervised`` always trains end to end)."""
    spec = lagani.make_method(method)
    frozen = not spec.trains_trunk or (preset.finetune.frozen and spec.pretrain is not None)
    config = replace(preset.finetune, frozen=frozen)
    labelled = train.subset(slice(0, labelled_count(regime, len(train))))
    start = time.perf_counter()
    classifier, history = lagani.finetune(net, layer, labelled, config, seed=seed,
                                          val=val.subset(slice(0, preset.select_val)), device=device,
                                          progress=progress)
    predictions = {"val": lagani.predict(classifier, val, device=device)}
    if test is not None:
        test = test.subset(slice(0, preset.test_images))
        predictions["test"] = lagani.predict(classifier, test, device=device)
    return _record(method, regime, layer, seed, len(labelled), history, start, predictions, val, test)


def _record(method, regime, layer, seed, num_labelled, history, start, predictions, val, test) -> dict:
    """One result: validation accuracy (primary), test accuracy on all / pixel-exact test images."""
    def percent(hits: Tensor) -> float:
        return 100 * hits.float().mean().item() if len(hits) else float("nan")

    record = {"method": method, "regime": float(regime), "layer": int(layer), "seed": int(seed),
              "num_labelled": int(num_labelled), "history": history,
              "best_epoch": max(history, key=lambda row: row.get("val_accuracy", -1))["epoch"] if history else 0,
              "val_accuracy": percent(predictions["val"] == val.labels)}
    if test is not None:
        hits = predictions["test"] == test.labels
        record["test_accuracy"] = percent(hits)
        if test.exact is not None and bool(test.exact.any()):
            record["test_exact_accuracy"] = percent(hits[test.exact])
    record["seconds"] = time.perf_counter() - start
    return record


def _merge_convergence(path: Path, new: pd.DataFrame) -> None:
    old = pd.read_csv(path) if path.exists() else pd.DataFrame()
    merged = pd.concat([old, new]).drop_duplicates(["curve", "method", "seed", "layer", "epoch"], keep="last")
    with atomic_path(path) as temp:
        merged.to_csv(temp, index=False)


# ----------------------------------------------------------------------------------------- tables


def confidence_interval(values) -> tuple[float, float]:
    """Mean and 95 % confidence half-width (Student t over the values; NaN for one value)."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan")
    return mean, float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))


def table1(results: pd.DataFrame, metric: str = "val_accuracy") -> pd.DataFrame:
    """Table 1's layout: rows (regime, method), columns (L1..L5) × (mean, ci95, n, paper, paper_ci95)."""
    if results.empty:
        raise ValueError("no results to tabulate")
    groups = results.groupby(["regime", "method", "layer"])[metric]
    cells = groups.apply(lambda v: pd.Series(confidence_interval(v), index=["mean", "ci95"])).unstack()
    cells["n"] = groups.size()
    paper = paper_table1().rename(columns={"paper_mean": "paper"})
    cells = cells.reset_index().merge(paper, on=["regime", "method", "layer"], how="left")
    cells["layer"] = "L" + cells["layer"].astype(str)
    wide = cells.pivot(index=["regime", "method"], columns="layer", values=["mean", "ci95", "n", "paper", "paper_ci95"])
    wide = wide.swaplevel(0, 1, axis=1).sort_index(axis=1, level=0, sort_remaining=False)
    order = ["mean", "ci95", "n", "paper", "paper_ci95"]
    wide = wide.reindex(columns=pd.MultiIndex.from_product([sorted(cells["layer"].unique()), order]))
    methods = [m for m in lagani.METHODS if m in wide.index.get_level_values("method")]
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
    text.index = [f"{r:g}% {lagani.DISPLAY_NAMES[m]}" for r, m in table.index]
    return text


def best_per_regime(table: pd.DataFrame) -> pd.DataFrame:
    """For each regime, the best (method, layer) cell beside the paper's best cell (the target)."""
    cells = table.xs("mean", axis=1, level=1).stack()  # index: regime, method, layer
    rows = []
    for regime, group in cells.groupby(level="regime"):
        _, method, layer = group.idxmax()
        paper = best_cell(regime) if any(r == regime for r, _ in TABLE1) else float("nan")
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
            rows[f"{regime:g}% {lagani.DISPLAY_NAMES[method]}"] = [
                "" if pd.isna(v) else f"{v:+.2f}" for v in diff]
    return pd.DataFrame.from_dict(rows, orient="index", columns=means.columns)


def claim_verdicts(results: pd.DataFrame) -> pd.DataFrame:
    """The paper's comparisons, regime by regime, on each method's best layer (mean over seeds): Hebbian
    (the better of HPCA and soft-WTA) against the VAE and against training from scratch, and HPCA against
    soft-WTA. One row per (claim, regime) with both accuracies and whether the claim holds here."""
    best = results.groupby(["regime", "method", "layer"])["val_accuracy"].mean().groupby(["regime", "method"]).max()
    best = best.unstack()
    if {"hpca", "softwta"} <= set(best.columns):
        best["hebbian"] = best[["hpca", "softwta"]].max(axis=1)
    claims = (("Hebbian beats VAE", "hebbian", "vae"), ("Hebbian beats training from scratch", "hebbian",
              "supervised"), ("HPCA beats soft-WTA", "hpca", "softwta"))
    rows = [{"claim": claim, "regime": f"{regime:g}%", "ours": round(row[a], 2), "against": round(row[b], 2),
             "holds": "yes" if row[a] > row[b] else "no"}
            for claim, a, b in claims if {a, b} <= set(best.columns) for regime, row in best.iterrows()]
    return pd.DataFrame(rows)


def to_markdown(text: pd.DataFrame) -> str:
    """A GitHub Markdown table of a text DataFrame (index as the first column)."""
    header = ["", *map(str, text.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([str(i), *map(str, row)]) + " |" for i, row in zip(text.index, text.values)]
    return "\n".join(lines) + "\n"


def heatmap(table: pd.DataFrame, ax=None):
    """Seaborn heatmap of the mean accuracies (rows regime × method, columns layers); returns the axes."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    means = table.xs("mean", axis=1, level=1)
    means.index = [f"{r:g}% {lagani.DISPLAY_NAMES[m]}" for r, m in means.index]
    if ax is None:
        _, ax = plt.subplots(figsize=(1.2 * len(means.columns) + 2.5, 0.42 * len(means) + 1.2))
    sns.heatmap(means, annot=True, fmt=".1f", cmap="viridis", cbar_kws={"label": "accuracy (%)"}, ax=ax)
    ax.set_xlabel("classifier on layer")
    ax.set_ylabel("")
    ax.set_title("CIFAR-10 validation accuracy")
    return ax


def convergence_data(results: pd.DataFrame, hebbian: pd.DataFrame | None = None) -> pd.DataFrame:
    """Long table of accuracy against epochs: ``curve`` is ``sgd`` (per fine-tuning epoch, from the
    records' histories) or ``hebbian`` (probe accuracy per Hebbian epoch of each block; default: the rows
    :func:`run_experiment` attached to ``results``)."""
    if hebbian is None:
        hebbian = results.attrs.get("hebbian_convergence")
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
    data = data.assign(method=data["method"].map(lagani.DISPLAY_NAMES), layer="L" + data["layer"].astype(str))
    hebbian, sgd = data[data["curve"] == "hebbian"], data[data["curve"] == "sgd"]
    order = {"hue_order": sorted(data["layer"].unique()),
             "style_order": [n for n in lagani.DISPLAY_NAMES.values() if n in set(data["method"])]}
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


def write_outputs(results: pd.DataFrame, out: str | Path, figures: str | Path | None = None) -> pd.DataFrame:
    """Write table1.csv/.md, convergence data and the two figures; return Table 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    figures = out if figures is None else Path(figures)
    figures.mkdir(parents=True, exist_ok=True)
    table = table1(results)
    with atomic_path(out / "table1.csv") as temp:
        table.to_csv(temp)
    best = best_per_regime(table).round(2).astype(str)
    best.index = [f"{regime:g}%" for regime in best.index]
    best["method"] = best["method"].map(lagani.DISPLAY_NAMES)
    summary = "\nBest cell per regime (validation accuracy, %):\n\n" + to_markdown(best)
    scratch = scratch_differences(table)
    if not scratch.empty:
        summary += ("\nEach method minus training from scratch (`supervised`) at the same cut and regime "
                    "(points):\n\n" + to_markdown(scratch))
    write_text_atomic(out / "table1.md", to_markdown(format_table(table)) + summary)
    hebbian_path = out / CONVERGENCE_FILE
    hebbian = pd.read_csv(hebbian_path) if hebbian_path.exists() else results.attrs.get("hebbian_convergence")
    curves = convergence_data(results, hebbian)
    with atomic_path(out / "convergence_all.csv") as temp:
        curves.to_csv(temp, index=False)
    for name, draw in (("table1_heatmap.png", lambda: heatmap(table).figure),
                       ("convergence.png", lambda: convergence_plot(curves)[0].figure)):
        figure = draw()
        figure.tight_layout()
        with atomic_path(figures / name) as temp:
            figure.savefig(temp, dpi=80, format="png")
        plt.close(figure)
    return table


# --------------------------------------------------------------------------------------------- CLI


def _run(args: argparse.Namespace) -> int:
    preset = get_preset(args.preset)
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    out = Path(args.out or Path("results") / preset.name)
    start = time.perf_counter()
    results = run_experiment(
        preset, data=args.data, methods=args.methods, regimes=args.regimes, layers=args.layers, seeds=args.seeds,
        out=out, cache=None if args.cache == "none" else args.cache, device=args.device,
        progress=False if args.no_progress else None,
    )
    write_outputs(results, out, args.figures)
    print((out / "table1.md").read_text())
    print(f"{len(results)} results in {out} ({time.perf_counter() - start:.0f} s)")
    return 0
